"""The length confound: how much of the humans' and a judge's agreement is description length.

On EmoPrefer v1 the MER-Caption+ description is nearly always the longer one and annotators
preferred it in about four of five decided pairs, so "pick the longer text" already agrees with
humans as often as the best MLLM. This module measures that, from the pairs alone (the data
audit: sizes, labels, lengths, who wins, with bootstrap CIs over pairs) and for every judge:

- per length stratum: decided pairs where humans preferred the longer text (concordant) or the
  shorter one (discordant); pairs of equal length belong to neither. The mean of the two
  two-class accuracies is the *length-balanced accuracy*: 50 for a pure length judge, 100 for an
  oracle, whatever the share of concordant pairs;
- by a length-sensitivity GLM (statsmodels Logit): the judge's choice (a1 = 1) on the human label
  and the standardised log character-length ratio ``z = log(len a1 / len a2) / rms`` (scaled,
  not centred, so z = 0 means equal lengths). Its length coefficient says how much length moves the
  judge beyond what the human label explains; the same model without the human label, fitted to
  the human labels, says how much length moves the humans;
- by a length-controlled WAF (in the spirit of AlpacaEval-LC): the two-class weighted F1 of the
  GLM's expected verdicts with the length term set to zero.

Conventions, shared with the paper's two-class metric: decided pairs only (gt in a1/a2), and a
predicted ``same`` counts as ``a1``. Only normal-order predictions are used (the reversed order is
the same pairs in a mirrored frame; order effects are the consistency analysis's business); each
round is scored separately and the numbers are averaged over rounds. A fit where length or the
human label separates the choices perfectly (the length judge, ``always_a1``, an oracle) has no
finite coefficient: it is reported as NaN with ``len_separated = True``.

The confound chapter's tables (``notebooks/06_confound.ipynb``) are arranged here too; its
figures are in ``helpers.report.plots`` and its sentences in ``reports/sections/25_confound.qmd``.
The paper's judges enter only as rows labelled "reported by the paper" (it gives their two-class
WAF, not their length-balanced accuracy), as the caller passes them in
(``helpers.reported.paper_results().table()``).

On v1's human labels, length and writer are collinear (MER-Caption+ wrote the longer text in
nearly every pair): what this module calls the length effect on the *labels* is the effect of
length or of the MER-Caption+ style that comes with it.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd
import statsmodels.api as sm
from sklearn.metrics import f1_score
from statsmodels.tools.sm_exceptions import ConvergenceWarning, PerfectSeparationWarning

from helpers.data import LABELS, DataError
from helpers.reported import REPORTED
from helpers.stats import metrics
from helpers.stats.metrics import CELL

LENGTH_COLUMNS = ["len_concordant_acc", "len_discordant_acc", "len_balanced_acc", "len_coef", "len_coef_lo", "len_coef_hi"]
_SEPARATION_BSE = 1e3  # standard errors this large only arise from (quasi-)separation
MODEL_NAMES = {"mercaptionplus": "MER-Caption+", "merrfine": "MERR-Fine"}  # display names of v1's writers
BASELINES = ("length", "source", "minilm_rm", "minilm_rm_nolen", "random", "always_a1")
OURS = "this study"


# --------------------------------------------------------------------------- lengths


def log_length_ratio(pairs: pd.DataFrame) -> pd.Series:
    """``log(len(a1) / len(a2))`` in characters; positive when a1 is longer, antisymmetric in a1/a2."""
    return pd.Series(np.log(pairs["a1"].str.len().to_numpy(float) / pairs["a2"].str.len().to_numpy(float)), index=pairs.index)


def ratio_coverage(pairs: pd.DataFrame, threshold: float = 0.35) -> dict:
    """How many decided pairs have nearly equal lengths (``|log length ratio| < threshold``): where
    the human preference curve is observed rather than extrapolated by its logistic fit."""
    decided = pairs["preference"].isin(["a1", "a2"])
    near = (log_length_ratio(pairs)[decided].abs() < threshold)
    return {"threshold": threshold, "pairs": int(decided.sum()), "near_equal": int(near.sum()),
            "percent": 100 * float(near.mean()) if len(near) else float("nan")}


def longer_label(pairs: pd.DataFrame) -> pd.Series:
    """Which description is longer in characters: a1, a2, or same."""
    ratio = log_length_ratio(pairs)
    return pd.Series(np.where(ratio > 0, "a1", np.where(ratio < 0, "a2", "same")), index=pairs.index)


def length_strata(pairs: pd.DataFrame) -> pd.Series:
    """``concordant`` where humans preferred the longer text, ``discordant`` the shorter; NaN for
    undecided pairs and pairs of equal length."""
    longer = longer_label(pairs)
    decided = pairs["preference"].isin(["a1", "a2"]) & (longer != "same")
    stratum = np.where(pairs["preference"] == longer, "concordant", "discordant")
    return pd.Series(stratum, index=pairs.index).where(decided)


def same_as_a1(pred: pd.Series) -> pd.Series:
    """The paper's two-class reading of a verdict: ``same`` counts as ``a1``."""
    return pred.replace({"same": "a1"})


def description_lengths(pairs: pd.DataFrame, model_names: Mapping[str, str] = MODEL_NAMES) -> pd.DataFrame:
    """One row per description: pair name, slot (a1/a2), writing model (shown by ``model_names``
    where it has one; ``unknown`` without the with-modelnames columns), characters and words."""
    frames = []
    for slot, model_col in (("a1", "model1"), ("a2", "model2")):
        text = pairs[slot].astype(str)
        frames.append(
            pd.DataFrame(
                {
                    "name": pairs["name"],
                    "slot": slot,
                    "model": pairs[model_col].map(lambda m: model_names.get(m, m)) if model_col in pairs else "unknown",
                    "characters": text.str.len(),
                    "words": text.str.split().str.len(),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


# --------------------------------------------------------------------------- data audit (no judge)


def label_counts(pairs: pd.DataFrame) -> pd.DataFrame:
    """Counts and shares of a1 / a2 / same."""
    counts = pairs["preference"].value_counts().reindex(LABELS, fill_value=0)
    return pd.DataFrame({"label": counts.index, "pairs": counts.to_numpy(), "percent": 100 * counts.to_numpy() / len(pairs)})


def length_summary(pairs: pd.DataFrame) -> pd.DataFrame:
    """Median and mean characters and words per writing model."""
    lengths = description_lengths(pairs)
    return (
        lengths.groupby("model")[["characters", "words"]]
        .agg(["count", "median", "mean"])
        .round(1)
    )


def preference_rates(pairs: pd.DataFrame) -> pd.DataFrame:
    """How often, among decided pairs, humans preferred the longer text and each writing model,
    with Wilson 95% intervals (``metrics.wilson_interval``: the report's one interval for a
    proportion of pairs).

    Pairs whose two texts have equal length are left out of the "longer" row, since no
    description is longer there; the pairs behind each row (``pairs``) and how many of them
    count (``count``) are reported, so every share says its denominator.
    """
    strata = length_strata(pairs).dropna()  # decided pairs of unequal length
    rows = [("longer description preferred", (strata == "concordant").to_numpy())]
    if {"model1", "model2"} <= set(pairs.columns):
        models = sorted(set(pairs["model1"]) | set(pairs["model2"]))
        decided = pairs[pairs["preference"] != "same"]
        mixed = (decided["model1"] != decided["model2"]).to_numpy()
        winner = np.where(decided["preference"] == "a1", decided["model1"], decided["model2"])
        for model in models:
            rows.append((f"{MODEL_NAMES.get(model, model)} preferred", (winner == model)[mixed]))
        # over all pairs (decided or not): who writes the longer text
        longer = longer_label(pairs)
        keep = ((longer != "same") & (pairs["model1"] != pairs["model2"])).to_numpy()
        writer_of_longer = np.where(longer == "a1", pairs["model1"], pairs["model2"])[keep]
        for model in models:
            rows.append((f"{MODEL_NAMES.get(model, model)} wrote the longer text (all pairs)", writer_of_longer == model))
    table = []
    for what, flags in rows:
        flags = np.asarray(flags, dtype=bool)
        share = flags.mean() if flags.size else np.nan
        lo, hi = metrics.wilson_interval(int(flags.sum()), int(flags.size))
        table.append({"quantity": what, "percent": 100 * share, "ci_low": 100 * lo, "ci_high": 100 * hi,
                      "pairs": int(len(flags)), "count": int(flags.sum())})
    return pd.DataFrame(table)


# --------------------------------------------------------------------------- strata


def stratified_accuracy(gt: pd.Series, pred: pd.Series, strata: pd.Series) -> pd.DataFrame:
    """Two-class accuracy per length stratum with Wilson 95% CIs (proportions, 0..1)."""
    rows = []
    for stratum in ("concordant", "discordant"):
        mask = (strata == stratum).to_numpy()
        correct = float((same_as_a1(pred[mask]).to_numpy() == gt[mask].to_numpy()).sum())
        n = int(mask.sum())
        lo, hi = metrics.wilson_interval(correct, n)
        rows.append({"stratum": stratum, "n": n, "correct": correct, "acc": correct / n if n else np.nan, "lo": lo, "hi": hi})
    return pd.DataFrame(rows).set_index("stratum")


# --------------------------------------------------------------------------- GLMs


def _fit_logit(y: np.ndarray, X: pd.DataFrame):
    """Logit fit, or None when the data separate perfectly (no finite maximum likelihood)."""
    if len(np.unique(y)) < 2:
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fit = sm.Logit(y, X).fit(disp=0, maxiter=200)
        except np.linalg.LinAlgError:
            return None
    flagged = any(issubclass(w.category, PerfectSeparationWarning | ConvergenceWarning) for w in caught)
    if flagged or not fit.mle_retvals.get("converged", True) or np.nanmax(fit.bse.to_numpy()) > _SEPARATION_BSE:
        return None
    return fit


def length_scale(pairs: pd.DataFrame) -> float:
    """Root mean square of the log-length ratio over decided pairs: the unit of the standardised
    ratio (the ratio's natural zero, equal lengths, is kept rather than centred away)."""
    ratio = log_length_ratio(pairs)[pairs["preference"].isin(["a1", "a2"])]
    return float(np.sqrt(np.mean(ratio**2))) or 1.0


def human_length_glm(pairs: pd.DataFrame) -> dict:
    """Logit of the human choice (a1 = 1, decided pairs) on the standardised log-length ratio:
    how strongly length alone predicts what annotators preferred."""
    decided = pairs[pairs["preference"].isin(["a1", "a2"])]
    X = sm.add_constant(pd.DataFrame({"z": log_length_ratio(decided) / length_scale(pairs)}), has_constant="add")
    fit = _fit_logit((decided["preference"] == "a1").to_numpy(int), X)
    if fit is None:
        return {"n": len(decided), "coef": np.nan, "lo": np.nan, "hi": np.nan, "pseudo_r2": np.nan, "separated": True}
    lo, hi = fit.conf_int().loc["z"]
    return {"n": len(decided), "coef": fit.params["z"], "lo": lo, "hi": hi, "pseudo_r2": fit.prsquared, "separated": False,
            "intercept": fit.params["const"]}


def judge_length_glm(gt: pd.Series, pred: pd.Series, z: pd.Series) -> dict:
    """Logit of the judge's choice on the human label and standardised length ratio ``z``
    (decided pairs), plus the length-controlled WAF: the two-class weighted F1 of the fitted
    model's expected verdicts at z = 0."""
    choice = (same_as_a1(pred) == "a1").to_numpy(int)
    human = (gt == "a1").to_numpy(int)
    X = sm.add_constant(pd.DataFrame({"human": human, "z": z.to_numpy(float)}), has_constant="add")
    fit = _fit_logit(choice, X)
    if fit is None:
        return {"coef": np.nan, "lo": np.nan, "hi": np.nan, "lc_waf": np.nan, "separated": True}
    lo, hi = fit.conf_int().loc["z"]
    at_zero = X.assign(z=0.0)
    p_a1 = np.asarray(fit.predict(at_zero))
    return {"coef": fit.params["z"], "lo": lo, "hi": hi, "lc_waf": expected_waf(gt, p_a1), "separated": False}


def expected_waf(gt: pd.Series, p_a1: np.ndarray) -> float:
    """Two-class weighted F1 of soft verdicts: each pair counts as a1 with weight p and as a2 with
    weight 1 - p (the expected confusion matrix), via sklearn's sample weights."""
    labels = np.concatenate([gt.to_numpy(), gt.to_numpy()])
    preds = np.array(["a1"] * len(gt) + ["a2"] * len(gt))
    weights = np.concatenate([p_a1, 1.0 - p_a1])
    return float(f1_score(labels, preds, average="weighted", sample_weight=weights, labels=["a1", "a2"]))


# --------------------------------------------------------------------------- per judge


def _round_metrics(frame: pd.DataFrame, pairs: pd.DataFrame, scale: float) -> dict:
    """All length metrics of one judge cell in one round (frame: its normal-order rows)."""
    merged = pairs.merge(frame[["name", "pred"]], on="name", how="inner", validate="one_to_one")
    decided = merged[merged["preference"].isin(["a1", "a2"])].reset_index(drop=True)
    strata = stratified_accuracy(decided["preference"], decided["pred"], length_strata(decided))
    glm = judge_length_glm(decided["preference"], decided["pred"], log_length_ratio(decided) / scale)
    out = {"pairs": len(decided), "two_class_waf": metrics.two_class(decided["preference"], decided["pred"])["waf"]}
    for stratum in ("concordant", "discordant"):
        row = strata.loc[stratum]
        out |= {f"n_{stratum}": row["n"], f"correct_{stratum}": row["correct"], f"acc_{stratum}": row["acc"]}
    return out | {f"glm_{k}": v for k, v in glm.items()}


def length_report(predictions: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """Every length metric per judge x strategy x input_type (percentages for rates).

    Rounds are scored separately and averaged; the stratum CIs are Wilson intervals for the
    round-averaged number correct out of the stratum's pairs (pairs are the sampling unit, rounds
    only average out the judge's own sampling noise). A GLM separated in any round is NaN.
    The human label is taken from ``pairs`` (the normal order's ``gt`` is the same label).
    """
    metrics.check_predictions(predictions)
    normal = predictions[predictions["order"] == "normal"]
    unknown = sorted(set(normal["name"]) - set(pairs["name"]))
    if unknown:
        raise DataError(f"predictions table: {len(unknown)} predicted pair(s) not in the pairs table, e.g. {unknown[0]!r} "
                        "(predictions of another dataset?)")
    scale = length_scale(pairs)
    rows = []
    for key, cell in normal.groupby(CELL, sort=True):
        per_round = pd.DataFrame([_round_metrics(r, pairs, scale) for _, r in cell.groupby("round")])
        rows.append(_summarise(dict(zip(CELL, key, strict=True)), per_round))
    return pd.DataFrame(rows, columns=[*CELL, "rounds", "pairs", "two_class_waf", "n_concordant", "n_discordant",
                                       "len_concordant_acc", "len_concordant_lo", "len_concordant_hi",
                                       "len_discordant_acc", "len_discordant_lo", "len_discordant_hi",
                                       "len_balanced_acc", "len_balanced_lo", "len_balanced_hi", "len_coef", "len_coef_lo", "len_coef_hi",
                                       "len_separated", "lc_waf"])


def _summarise(key: dict, per_round: pd.DataFrame) -> dict:
    mean = per_round.mean(numeric_only=True)
    out = key | {"rounds": len(per_round), "pairs": int(mean["pairs"]), "two_class_waf": 100 * mean["two_class_waf"]}
    for stratum in ("concordant", "discordant"):
        n = int(mean[f"n_{stratum}"])
        lo, hi = metrics.wilson_interval(mean[f"correct_{stratum}"], n)
        out |= {f"n_{stratum}": n, f"len_{stratum}_acc": 100 * mean[f"acc_{stratum}"],
                f"len_{stratum}_lo": 100 * lo, f"len_{stratum}_hi": 100 * hi}
    out["len_balanced_acc"] = (out["len_concordant_acc"] + out["len_discordant_acc"]) / 2
    out["len_balanced_lo"], out["len_balanced_hi"] = _balanced_ci(mean, out["n_concordant"], out["n_discordant"])
    separated = bool(per_round["glm_separated"].any())
    for name, col in (("len_coef", "glm_coef"), ("len_coef_lo", "glm_lo"), ("len_coef_hi", "glm_hi")):
        out[name] = np.nan if separated else mean[col]
    out["len_separated"] = separated
    out["lc_waf"] = np.nan if separated else 100 * mean["glm_lc_waf"]
    return out


def _balanced_ci(mean: pd.Series, n_con: int, n_dis: int) -> tuple[float, float]:
    """95% Wald interval (percent) of the mean of two independent stratum accuracies; each
    stratum's variance uses the Agresti-Caffo-adjusted proportion so 0% or 100% strata still
    contribute uncertainty."""
    if not n_con or not n_dis:
        return np.nan, np.nan
    var = 0.0
    for stratum, n in (("concordant", n_con), ("discordant", n_dis)):
        p = (mean[f"correct_{stratum}"] + 1) / (n + 2)
        var += p * (1 - p) / (n + 2)
    half = 1.959963984540054 * np.sqrt(var) / 2
    centre = (mean["acc_concordant"] + mean["acc_discordant"]) / 2
    return 100 * max(0.0, centre - half), 100 * min(1.0, centre + half)


def length_columns(predictions: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """The columns ``metrics.csv`` gains, keyed by judge, strategy, input_type: accuracies in
    percent (2 decimals, like the paper's metrics), the length coefficient in log-odds per
    standardised unit (3 decimals)."""
    table = length_report(predictions, pairs)[[*CELL, *LENGTH_COLUMNS]]
    return table.round({c: 2 for c in LENGTH_COLUMNS[:3]} | {c: 3 for c in LENGTH_COLUMNS[3:]})


# --------------------------------------------------------------------------- descriptive


def preference_curve(pairs: pd.DataFrame, bins: int = 8) -> pd.DataFrame:
    """Share of decided pairs where humans preferred a1, in quantile bins of the log-length
    ratio, with Wilson CIs: the empirical curve beside the fitted human GLM."""
    decided = pairs[pairs["preference"].isin(["a1", "a2"])]
    ratio = log_length_ratio(decided)
    binned = pd.qcut(ratio, q=bins, duplicates="drop")
    rows = []
    for interval, group in decided.groupby(binned, observed=True):
        n, k = len(group), float((group["preference"] == "a1").sum())
        lo, hi = metrics.wilson_interval(k, n)
        rows.append({"bin": str(interval), "log_ratio": float(ratio[group.index].mean()), "n": n,
                     "p_a1": k / n, "lo": lo, "hi": hi})
    return pd.DataFrame(rows)


def writer_summary(pairs: pd.DataFrame) -> pd.DataFrame:
    """Per writing model: its descriptions' lengths, how often its description is the longer one
    of its pair, and how often humans preferred it (both in % of decided/contested pairs)."""
    lengths = description_lengths(pairs, model_names={})
    summary = lengths.groupby("model")["characters"].agg(descriptions="size", mean_length="mean", median_length="median")
    if not {"model1", "model2"} <= set(pairs.columns):
        return summary.reset_index()
    contested = pairs[pairs["model1"] != pairs["model2"]]
    longer = longer_label(contested)
    longer_model = np.where(longer == "a1", contested["model1"], np.where(longer == "a2", contested["model2"], None))
    decided = contested["preference"].isin(["a1", "a2"])
    preferred = np.where(contested["preference"] == "a1", contested["model1"], contested["model2"])[decided.to_numpy()]
    appear = pd.concat([contested["model1"], contested["model2"]]).value_counts()
    appear_decided = pd.concat([contested.loc[decided, "model1"], contested.loc[decided, "model2"]]).value_counts()
    summary["longer_pct"] = 100 * pd.Series(longer_model).value_counts().reindex(summary.index, fill_value=0) / appear
    summary["preferred_pct"] = 100 * pd.Series(preferred).value_counts().reindex(summary.index, fill_value=0) / appear_decided
    return summary.reset_index().round(2)


# --------------------------------------------------------------------------- the chapter's tables


def baselines_table(paper_metrics: pd.DataFrame, report: pd.DataFrame, reported: pd.DataFrame) -> pd.DataFrame:
    """Our text-only baselines (paper metrics + length-balanced accuracy) above the paper's
    reported judges, with a ``source`` column saying which is which."""
    ours = paper_metrics[paper_metrics["judge"].isin(BASELINES)].merge(
        report[[*CELL, "len_balanced_acc", "len_balanced_lo", "len_balanced_hi"]], on=CELL, how="left")
    ours = ours.assign(source=OURS).sort_values("two_class_waf", ascending=False)
    theirs = reported.assign(source=REPORTED, input_type="", len_balanced_acc=np.nan)
    columns = ["source", "judge", "strategy", "input_type", "two_class_waf", "two_class_waf_lo",
               "two_class_waf_hi", "swap_consistency", "len_balanced_acc", "len_balanced_lo", "len_balanced_hi"]
    table = pd.concat([ours, theirs.sort_values("two_class_waf", ascending=False)], ignore_index=True)
    return table.reindex(columns=columns).round(2)
