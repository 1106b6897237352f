"""The paper's metrics on the predictions table, plus the uncertainty the paper leaves out
(the one bootstrap of the package: pairs resampled, :func:`bootstrap_weights`).

Definitions follow EmoPrefer (ICLR 2026) to the letter, because the point of the study is to
compare our numbers with theirs:

- three-class: weighted F1 (WAF) and accuracy over all pairs, labels a1/a2/same;
- two-class: pairs whose ground truth is ``same`` are dropped and a predicted ``same`` counts
  as ``a1`` (the paper's rule), then WAF and accuracy;
- per (judge, strategy, input_type) in the normal order: one score per round, reported as the
  mean and the population std over rounds, x100;
- swap consistency: normal round r against reverse round r mapped back (a1<->a2);
- multi-round consistency: mean pairwise agreement between rounds of the same order;
- normal-reverse voting: majority over normal rounds 0..R-1 then mapped reverse rounds 0..R-1,
  a tie going to the tied label that appeared first in that sequence.

Bootstrap CIs resample pairs (the unit the annotators labelled). All replicates are evaluated
at once from confusion counts (weights x one-hot matrix products), so a few dozen judge cells
with 1,000 replicates take seconds instead of a Python loop over sklearn calls. The table comes
in checked (:func:`check_predictions`); reading it from the store is ``helpers.run.results``.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score
from statsmodels.stats.proportion import proportion_confint

from helpers.data import LABELS, DataError, fallback_share, swap_label

CELL = ["judge", "strategy", "input_type"]
REQUIRED = [*CELL, "order", "round", "name", "gt", "pred"]
METRICS_COLUMNS = [
    "judge", "strategy", "input_type", "rounds",
    "two_class_waf", "two_class_waf_std", "two_class_waf_lo", "two_class_waf_hi",
    "two_class_acc", "two_class_acc_std",
    "three_class_waf", "three_class_waf_std", "three_class_acc", "three_class_acc_std",
    "swap_consistency", "swap_consistency_std", "round_consistency", "unparsed_pct",
    "two_class_waf_unrounded",
]
# The one tie key of every "best" pick (strategy per judge, judge overall): the highest unrounded
# value, then the code names in this order. The authors' statistic.py takes np.argmax over the
# unrounded means in the order S1..S4 (first maximum wins), which this key reproduces.
TIE_KEY = ("judge", "strategy", "input_type")
UNPARSED_FLAG_PCT = 5.0  # the report flags a cell whose answers fell back to `same` more often than this
CODE = {label: i for i, label in enumerate(LABELS)}  # a1 -> 0, a2 -> 1, same -> 2


# --------------------------------------------------------------------------- checking


def check_predictions(predictions: pd.DataFrame, source: str = "predictions table") -> pd.DataFrame:
    """Refuse a table the metrics would silently misread: missing columns, labels outside
    a1/a2/same, an unknown order, or the same sample twice in one judge cell/order/round."""
    missing = [c for c in REQUIRED if c not in predictions.columns]
    if missing:
        raise DataError(f"{source}: missing column(s) {', '.join(missing)}; need {', '.join(REQUIRED)}")
    for column in ("gt", "pred"):
        bad = ~predictions[column].isin(LABELS)
        if bad.any():
            row = predictions.index[bad][0]
            raise DataError(
                f"{source}: row {row}, column '{column}': value {predictions.at[row, column]!r} "
                f"is not one of {', '.join(LABELS)} ({int(bad.sum())} such rows)"
            )
    bad = ~predictions["order"].isin(["normal", "reverse"])
    if bad.any():
        row = predictions.index[bad][0]
        raise DataError(f"{source}: row {row}, column 'order': {predictions.at[row, 'order']!r} is not normal/reverse")
    dup = predictions.duplicated(CELL + ["order", "round", "name"])
    if dup.any():
        row = predictions.index[dup][0]
        raise DataError(
            f"{source}: row {row}: sample {predictions.at[row, 'name']!r} appears twice for the same "
            f"judge/strategy/input_type/order/round ({int(dup.sum())} duplicate rows)"
        )
    return predictions


# --------------------------------------------------------------------------- scalar metrics


def to_two_class(gt: Sequence[str], pred: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The paper's two-class view: drop gt == same, read a predicted same as a1. A pair without
    a human label (None, an unlabelled pair file) is dropped too, never scored."""
    gt, pred = np.asarray(gt, dtype=object), np.asarray(pred, dtype=object)
    keep = (gt == "a1") | (gt == "a2")
    pred = np.where(pred == "same", "a1", pred)
    return gt[keep], pred[keep]


def three_class(gt: Sequence[str], pred: Sequence[str]) -> dict[str, float]:
    """Weighted F1 and accuracy over a1/a2/same (fractions, sklearn)."""
    waf = f1_score(gt, pred, labels=list(LABELS), average="weighted", zero_division=0)
    return {"waf": float(waf), "acc": float(accuracy_score(gt, pred))}


def two_class(gt: Sequence[str], pred: Sequence[str]) -> dict[str, float]:
    """Weighted F1 and accuracy after the paper's two-class mapping (fractions, sklearn)."""
    g, p = to_two_class(gt, pred)
    if len(g) == 0:
        return {"waf": float("nan"), "acc": float("nan")}
    waf = f1_score(g, p, labels=["a1", "a2"], average="weighted", zero_division=0)
    return {"waf": float(waf), "acc": float(accuracy_score(g, p))}


def agreement(left: Sequence[str], right: Sequence[str]) -> float:
    """Fraction of samples with the same label."""
    left, right = np.asarray(left, dtype=object), np.asarray(right, dtype=object)
    return float(np.mean(left == right)) if len(left) else float("nan")


# --------------------------------------------------------------------------- vectorised core


def codes(labels: Sequence[str] | pd.Series) -> np.ndarray:
    """Labels as integer codes (a1 0, a2 1, same 2; anything missing -1)."""
    return pd.Series(labels, dtype=object).map(CODE).fillna(-1).astype(int).to_numpy()


def confusion_onehot(gt: np.ndarray, pred: np.ndarray, n_labels: int = 3) -> np.ndarray:
    """One row per sample with a 1 in column gt*L+pred, so weights @ onehot = confusion counts."""
    out = np.zeros((len(gt), n_labels * n_labels))
    ok = (gt >= 0) & (pred >= 0)
    out[np.flatnonzero(ok), gt[ok] * n_labels + pred[ok]] = 1.0
    return out


def scores_from_confusion(conf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted F1 and accuracy from confusion counts ``(..., L, L)`` [gt, pred]; same result
    as sklearn's ``average='weighted'`` with ``zero_division=0`` (F1 = 2TP / (support + predicted))."""
    tp = np.diagonal(conf, axis1=-2, axis2=-1)
    support = conf.sum(axis=-1)
    predicted = conf.sum(axis=-2)
    denom = support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp, dtype=float), where=denom > 0)
    total = support.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        waf = (f1 * support).sum(axis=-1) / total
        acc = tp.sum(axis=-1) / total
    return waf, acc


DRAW_BUDGET = 4_000_000  # items drawn at once by bootstrap_counts (memory: 4 bytes each as int32)


def bootstrap_counts(counts: np.ndarray, n_boot: int, seed: int, batch: int, *, index_dtype: type | None = None,
                     draw_budget: int = DRAW_BUDGET) -> Iterator[np.ndarray]:
    """The one bootstrap of the package: replicates as counts over cells, ``batch`` replicates
    at a time (``(batch, cells)`` float arrays). ``counts[k]`` items share cell ``k`` (all ones:
    every item its own cell, as :func:`bootstrap_weights` uses it; identical comparisons
    collapsed into cells, as ``helpers.stats.bt`` does). Each replicate draws ``n = counts.sum()``
    items uniformly with replacement (the classical bootstrap) and tallies them per cell: a
    multinomial over cells with probabilities ``counts / n``, drawn as indices and tallied by one
    ``bincount`` for many replicates at once, not as ``rng.multinomial`` (whose one binomial draw
    per cell and replicate costs seconds on tens of thousands of cells). ``index_dtype``: the
    integers drawn (32-bit where they fit, 2-3x faster, unless given); the same seed, counts,
    dtype and budget give the same replicates."""
    rng = np.random.default_rng(seed)
    counts = np.asarray(counts)
    n, n_cells = int(counts.sum()), len(counts)
    index = index_dtype or (np.int32 if n < 2**31 else np.int64)
    owner = None if n == n_cells else np.repeat(np.arange(n_cells, dtype=index), counts.astype(np.int64))
    chunk = max(1, draw_budget // max(n, 1))  # replicates drawn per bincount; chunk * n_cells <= max(budget, n)
    for start in range(0, n_boot, batch):
        size = min(batch, n_boot - start)
        out = np.empty((size, n_cells))
        for lo in range(0, size, chunk):
            k = min(chunk, size - lo)
            cell = rng.integers(0, n, size=(k, n), dtype=index)  # items drawn with replacement
            if owner is not None:  # items -> their cells (every cell one item: the same)
                cell = owner[cell]
            cell += (np.arange(k, dtype=index) * n_cells)[:, None]
            out[lo:lo + k] = np.bincount(cell.ravel(), minlength=k * n_cells).reshape(k, n_cells)
        yield out


@functools.lru_cache(maxsize=8)
def bootstrap_weights(n: int, n_boot: int, seed: int) -> np.ndarray:
    """How often each of ``n`` pairs is drawn in each replicate: ``(n_boot, n)``, from
    :func:`bootstrap_counts` (one cell per pair, 64-bit draws in one piece: the report's
    intervals keep their historical draws). The same seed and n give the same draws, so judges
    scored on the same pairs share resamples (a paired bootstrap); cached and read-only for that
    reason."""
    weights = np.concatenate([np.empty((0, n))] + list(bootstrap_counts(
        np.ones(n, dtype=np.int64), n_boot, seed, max(n_boot, 1), index_dtype=np.int64,
        draw_budget=max(n_boot, 1) * max(n, 1))))
    weights.flags.writeable = False
    return weights


def percentile_ci(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap values (NaN replicates ignored)."""
    alpha = (1 - level) / 2
    if np.all(np.isnan(values)):
        return float("nan"), float("nan")
    lo, hi = np.nanquantile(values, [alpha, 1 - alpha])
    return float(lo), float(hi)


def wilson_interval(successes: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval (fractions) of ``successes`` out of ``n``; NaNs for ``n = 0``.

    The one home of the interval the report gives every proportion of pairs (a share of decided
    pairs, a stratum accuracy, the approximate interval of a reported row): one method per
    quantity, so one number never carries two intervals."""
    if not n:
        return float("nan"), float("nan")
    lo, hi = proportion_confint(successes, n, alpha=1 - level, method="wilson")
    return float(lo), float(hi)


def bootstrap_share(flags: Sequence[bool], n_boot: int, seed: int, level: float = 0.95) -> tuple[float, float, float]:
    """Share of True (fraction) with its percentile bootstrap CI, resampling the items
    (:func:`bootstrap_weights`); NaNs for no items."""
    flags = np.asarray(flags, dtype=float)
    if flags.size == 0:
        return (np.nan, np.nan, np.nan)
    shares = bootstrap_weights(flags.size, n_boot, seed) @ flags / flags.size
    return (float(flags.mean()), *percentile_ci(shares, level))


def task_codes(gt: np.ndarray, pred: np.ndarray, task: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Codes for one task; two_class marks gt == same as missing and maps pred same -> a1."""
    if task == "three_class":
        return gt, pred, 3
    if task == "two_class":
        return np.where(gt == 2, -1, gt), np.where(pred == 2, 0, pred), 2
    raise ValueError(f"task must be 'two_class' or 'three_class', got {task!r}")


def round_scores_boot(gt: np.ndarray, preds: np.ndarray, weights: np.ndarray, task: str) -> tuple[np.ndarray, np.ndarray]:
    """WAF and accuracy per (replicate, round): ``gt (n,)`` codes, ``preds (n, R)`` codes,
    ``weights (B, n)``. Rows of ``weights`` that are all ones give the plain estimate."""
    waf, acc = [], []
    for r in range(preds.shape[1]):
        g, p, n_labels = task_codes(gt, preds[:, r], task)
        conf = (weights @ confusion_onehot(g, p, n_labels)).reshape(-1, n_labels, n_labels)
        w, a = scores_from_confusion(conf)
        waf.append(w)
        acc.append(a)
    return np.stack(waf, axis=-1), np.stack(acc, axis=-1)


# --------------------------------------------------------------------------- table shapes


def wide(cell: pd.DataFrame, order: str) -> pd.DataFrame:
    """One judge cell in one order as names x rounds of predicted labels (+ gt column)."""
    part = cell[cell["order"] == order]
    table = part.pivot(index="name", columns="round", values="pred")
    table["gt"] = part.drop_duplicates("name").set_index("name")["gt"]
    return table


def mapped_reverse(cell: pd.DataFrame) -> pd.DataFrame:
    """Reverse-order predictions mapped back into the normal frame (a1<->a2, same stays)."""
    table = wide(cell, "reverse")
    return table.apply(lambda col: col.map(swap_label))


# --------------------------------------------------------------------------- per-cell metrics


def per_round_scores(predictions: pd.DataFrame, order: str = "normal") -> pd.DataFrame:
    """Two- and three-class WAF/accuracy per judge cell and round (fractions)."""
    rows = []
    part = predictions[predictions["order"] == order]
    for (judge, strategy, input_type, rnd), group in part.groupby(CELL + ["round"], sort=True):
        two, three = two_class(group["gt"], group["pred"]), three_class(group["gt"], group["pred"])
        rows.append({
            "judge": judge, "strategy": strategy, "input_type": input_type, "round": rnd,
            "two_class_waf": two["waf"], "two_class_acc": two["acc"],
            "three_class_waf": three["waf"], "three_class_acc": three["acc"],
        })
    return pd.DataFrame(rows)


def swap_consistency_rounds(cell: pd.DataFrame) -> pd.Series:
    """Swap consistency per round present in both orders: normal r vs mapped reverse r, on
    the samples judged in both."""
    normal, reverse = wide(cell, "normal"), mapped_reverse(cell)
    rounds = [r for r in normal.columns if r != "gt" and r in reverse.columns]
    common = normal.index.intersection(reverse.index)
    return pd.Series(
        {r: agreement(normal.loc[common, r], reverse.loc[common, r]) for r in rounds}, dtype=float
    )


def round_consistency(cell: pd.DataFrame) -> float:
    """Mean agreement over every pair of rounds within the same order (NaN with one round)."""
    values = []
    for order in ("normal", "reverse"):
        if not (cell["order"] == order).any():
            continue
        table = wide(cell, order).drop(columns="gt")
        for a, b in itertools.combinations(table.columns, 2):
            both = table[[a, b]].dropna()
            values.append(agreement(both[a], both[b]))
    return float(np.mean(values)) if values else float("nan")


def majority_vote(votes: np.ndarray) -> np.ndarray:
    """Majority label per row of ``votes (n, V)`` codes (-1 = no vote). A tie goes to the tied
    label whose first vote comes earliest in the row, i.e. the order the columns are given in."""
    votes = np.asarray(votes)
    n, n_votes = votes.shape
    counts = np.stack([(votes == c).sum(axis=1) for c in range(3)], axis=1)
    position = np.arange(n_votes)
    first = np.stack([np.where(votes == c, position, n_votes).min(axis=1) for c in range(3)], axis=1)
    tied = counts == counts.max(axis=1, keepdims=True)
    winner = np.where(tied, first, n_votes + 1).argmin(axis=1)
    return np.where(counts.max(axis=1) > 0, winner, -1)


def normal_reverse_vote(cell: pd.DataFrame) -> pd.Series:
    """Per sample: majority over normal rounds 0..R-1 then mapped reverse rounds 0..R-1, a tie
    going to the label that appeared first in that sequence (the paper's rule)."""
    normal = wide(cell, "normal")
    reverse = mapped_reverse(cell).reindex(normal.index) if (cell["order"] == "reverse").any() else None
    columns = [normal[r] for r in sorted(c for c in normal.columns if c != "gt")]
    if reverse is not None:
        columns += [reverse[r] for r in sorted(c for c in reverse.columns if c != "gt")]
    votes = np.stack([codes(col) for col in columns], axis=1)
    voted = majority_vote(votes)
    return pd.Series(np.array(LABELS, dtype=object)[voted], index=normal.index, name="vote")


def cell_bootstrap(cell: pd.DataFrame, n_boot: int, seed: int, level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Percentile CIs (fractions) for the round-averaged headline metrics of one judge cell:
    pairs are resampled once per replicate and every round is scored on that resample."""
    normal = wide(cell, "normal").sort_index()
    rounds = sorted(c for c in normal.columns if c != "gt")
    gt, preds = codes(normal["gt"]), np.stack([codes(normal[r]) for r in rounds], axis=1)
    weights = bootstrap_weights(len(normal), n_boot, seed)
    out: dict[str, tuple[float, float]] = {}
    for task in ("two_class", "three_class"):
        waf, acc = round_scores_boot(gt, preds, weights, task)
        out[f"{task}_waf"] = percentile_ci(waf.mean(axis=1), level)
        out[f"{task}_acc"] = percentile_ci(acc.mean(axis=1), level)
    if (cell["order"] == "reverse").any():
        reverse = mapped_reverse(cell).reindex(normal.index)
        shared = [r for r in rounds if r in reverse.columns]
        if shared:
            agree = np.stack([(normal[r] == reverse[r]).to_numpy(float) for r in shared], axis=1)
            judged = reverse[shared].notna().to_numpy(float)
            per_round = (weights @ (agree * judged)) / (weights @ judged)
            out["swap_consistency"] = percentile_ci(per_round.mean(axis=1), level)
    return out


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population std (ddof=0, as the paper) x100, rounded to 2 decimals."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return float("nan"), float("nan")
    return round(float(np.mean(values)) * 100, 2), round(float(np.std(values)) * 100, 2)


def metrics_table(predictions: pd.DataFrame, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                  cis: pd.DataFrame | None = None) -> pd.DataFrame:
    """``reports/tables/metrics.csv``: one row per judge x strategy x input_type, percentages.
    ``cis``: a :func:`ci_table` already computed, to reuse its bootstrap instead of redoing it."""
    check_predictions(predictions)
    known = {} if cis is None else {(*k[:3], k[3]): (k[4], k[5]) for k in cis.itertuples(index=False)}
    scores = per_round_scores(predictions, "normal")
    by_cell = dict(iter(scores.groupby(CELL, sort=True))) if len(scores) else {}
    rows = []
    for key, cell in predictions.groupby(CELL, sort=True):
        if key not in by_cell:  # reverse order only: nothing the paper reports
            continue
        cell_scores = by_cell[key]
        row = dict(zip(CELL, key, strict=True))
        row["rounds"] = int(len(cell_scores))
        for metric in ("two_class_waf", "two_class_acc", "three_class_waf", "three_class_acc"):
            row[metric], row[f"{metric}_std"] = mean_std(cell_scores[metric])
        row["two_class_waf_unrounded"] = 100 * float(np.mean(cell_scores["two_class_waf"]))  # what "best" is picked on
        if (*key, "two_class_waf") in known:
            row["two_class_waf_lo"], row["two_class_waf_hi"] = known[(*key, "two_class_waf")]
        else:
            ci = cell_bootstrap(cell, n_boot, seed, level)
            row["two_class_waf_lo"], row["two_class_waf_hi"] = (round(v * 100, 2) for v in ci["two_class_waf"])
        row["swap_consistency"], row["swap_consistency_std"] = mean_std(swap_consistency_rounds(cell))
        rc = round_consistency(cell)
        row["round_consistency"] = round(rc * 100, 2) if np.isfinite(rc) else float("nan")
        row["unparsed_pct"] = unparsed_pct(cell)
        rows.append(row)
    return pd.DataFrame(rows, columns=METRICS_COLUMNS)


def unparsed_pct(cell: pd.DataFrame) -> float:
    """Percent of a cell's predictions (every order and round) whose answer matched no parser
    rule and became ``same`` by the paper's default; NaN where the table has no ``parse_rule``."""
    if "parse_rule" not in cell.columns or not len(cell):
        return float("nan")
    return round(100 * fallback_share(cell["parse_rule"]), 2)


def unparsed_flags(table: pd.DataFrame, threshold: float = UNPARSED_FLAG_PCT) -> pd.Series:
    """The marker the report prints beside a cell's numbers: ``""``, or
    ``"⚠ 12.3% unparsed"`` when more than ``threshold`` percent of its answers fell back to ``same``."""
    pct = table["unparsed_pct"] if "unparsed_pct" in table.columns else pd.Series(np.nan, index=table.index)
    return pct.map(lambda v: f"⚠ {v:.1f}% unparsed" if pd.notna(v) and v > threshold else "")


def unparsed_note(table: pd.DataFrame, threshold: float = UNPARSED_FLAG_PCT) -> str:
    """A sentence naming every flagged cell (empty when none is flagged)."""
    flags = unparsed_flags(table, threshold)
    flagged = table[flags != ""]
    if flagged.empty:
        return ""
    cells = "; ".join(f"{r.judge} {r.strategy} {r.input_type}: {r.unparsed_pct:.1f}%" for r in flagged.itertuples())
    return (f"⚠ In {len(flagged)} cell(s) more than {threshold:g}% of the answers matched no parser rule and were "
            f"scored as `same` (the paper's rule), so their numbers say little about the judge: {cells}.")


def ci_table(predictions: pd.DataFrame, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """Long table of bootstrap CIs (percentages) for every headline metric of every cell."""
    rows = []
    for key, cell in predictions.groupby(CELL, sort=True):
        if not (cell["order"] == "normal").any():
            continue
        for metric, (lo, hi) in cell_bootstrap(cell, n_boot, seed, level).items():
            rows.append({**dict(zip(CELL, key, strict=True)), "metric": metric,
                         "lo": round(lo * 100, 2), "hi": round(hi * 100, 2)})
    return pd.DataFrame(rows, columns=CELL + ["metric", "lo", "hi"])


def best_order(table: pd.DataFrame, column: str = "two_class_waf") -> pd.DataFrame:
    """``table`` best first: by the *unrounded* ``column`` (its ``<column>_unrounded`` companion,
    which :func:`metrics_table` writes, where the table has one; rows without it, such as the
    paper's reported rows, are ranked on the values they hold), then by :data:`TIE_KEY`."""
    exact = f"{column}_unrounded"
    values = (table[exact].fillna(table[column]) if exact in table.columns else table[column]).astype(float)
    keys = [k for k in TIE_KEY if k in table.columns]
    ordered = table.assign(_value=-values).sort_values(["_value", *keys], kind="mergesort", na_position="last")
    return ordered.drop(columns="_value")


def best_row(table: pd.DataFrame, column: str = "two_class_waf") -> pd.Series:
    """The best row of ``table`` on ``column`` (:func:`best_order`)."""
    return best_order(table, column).iloc[0]


def best_strategy(table: pd.DataFrame) -> pd.DataFrame:
    """Per judge, the cell with the highest unrounded mean two-class WAF (the paper's main
    table), best judge first; ties follow :data:`TIE_KEY` (a rounded table would pick S2 over S4
    when both show 78.69 although S4's mean is higher)."""
    return best_order(table).groupby("judge", sort=False).head(1).reset_index(drop=True)


def vote_scores(predictions: pd.DataFrame) -> pd.DataFrame:
    """Two- and three-class scores (percent) of each cell's normal-reverse vote."""
    rows = []
    for key, cell in predictions.groupby(CELL, sort=True):
        if not (cell["order"] == "normal").any():
            continue
        voted = normal_reverse_vote(cell)
        gt = wide(cell, "normal")["gt"]
        two, three = two_class(gt, voted), three_class(gt, voted)
        rows.append({**dict(zip(CELL, key, strict=True)),
                     "vote_two_class_waf": round(two["waf"] * 100, 2), "vote_two_class_acc": round(two["acc"] * 100, 2),
                     "vote_three_class_waf": round(three["waf"] * 100, 2),
                     "vote_three_class_acc": round(three["acc"] * 100, 2)})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- significance


def correct_two_class(predictions: pd.DataFrame, cell: Sequence[str], order: str = "normal", rnd: int = 0) -> pd.Series:
    """Per sample (gt != same), whether the cell's prediction is right in the two-class view."""
    part = predictions.set_index(CELL).loc[[tuple(cell)]]
    part = part[(part["order"] == order) & (part["round"] == rnd) & (part["gt"] != "same")]
    pred = part["pred"].where(part["pred"] != "same", "a1")
    return pd.Series((pred == part["gt"]).to_numpy(), index=part["name"].to_numpy())


def mcnemar_test(correct_a: pd.Series, correct_b: pd.Series) -> dict[str, float]:
    """McNemar's exact test (statsmodels) of two judges' correctness on the same samples."""
    from statsmodels.stats.contingency_tables import mcnemar

    a, b = correct_a.align(correct_b, join="inner")
    table = pd.crosstab(a.astype(bool), b.astype(bool)).reindex(index=[True, False], columns=[True, False], fill_value=0)
    result = mcnemar(table.to_numpy(), exact=True)
    return {"n": int(len(a)), "only_a": int(table.loc[True, False]), "only_b": int(table.loc[False, True]),
            "statistic": float(result.statistic), "pvalue": float(result.pvalue)}


def mcnemar_table(predictions: pd.DataFrame, cells: pd.DataFrame, order: str = "normal", rnd: int = 0) -> pd.DataFrame:
    """McNemar's exact test for every pair of the given cells (two-class correctness, one
    round), with Holm-adjusted p-values because many pairs are tested at once."""
    from statsmodels.stats.multitest import multipletests

    keys = [tuple(row) for row in cells[CELL].itertuples(index=False)]
    correct = {k: correct_two_class(predictions, k, order, rnd) for k in keys}
    rows = []
    for a, b in itertools.combinations(keys, 2):
        rows.append({"judge_a": a[0], "strategy_a": a[1], "judge_b": b[0], "strategy_b": b[1],
                     **mcnemar_test(correct[a], correct[b])})
    table = pd.DataFrame(rows)
    if not table.empty:
        table["pvalue_holm"] = multipletests(table["pvalue"], method="holm")[1]
    return table


# --------------------------------------------------------------------------- correlation


def pearson(x: Sequence[float], y: Sequence[float], level: float = 0.95) -> dict[str, float | int | str]:
    """Pearson r with its Fisher-z CI and p-value (scipy). Fewer than 3 finite points (or a
    constant variable) give NaNs and a ``note`` saying why, instead of an exception, because
    a study with two judges is still a valid study."""
    from scipy import stats

    frame = pd.DataFrame({"x": x, "y": y}).astype(float).dropna()
    out: dict[str, float | int | str] = {"n": len(frame), "r": np.nan, "lo": np.nan, "hi": np.nan,
                                         "pvalue": np.nan, "note": ""}
    if len(frame) < 3:
        out["note"] = f"only {len(frame)} cell(s): Pearson's r needs at least 3"
        return out
    if frame["x"].nunique() < 2 or frame["y"].nunique() < 2:
        out["note"] = "one variable is constant across cells: r is undefined"
        return out
    result = stats.pearsonr(frame["x"], frame["y"])
    ci = result.confidence_interval(confidence_level=level)
    out.update(r=float(result.statistic), lo=float(ci.low), hi=float(ci.high), pvalue=float(result.pvalue))
    if len(frame) == 3:
        out["note"] = "3 cells: the CI is uninformative"
    return out
