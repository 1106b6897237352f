"""Does the judge watch the video? The same judge cell run with its own clips (``media: real``), with none
and with another pair's clip (``helpers.run.engine.MEDIA_SETTINGS``), compared row by row.

Per judge cell (judge, strategy, input type) and setting other than ``real``, on the rows both runs hold
(same order, round and pair): the two-class WAF of the normal order under each setting (the paper's metric,
pooled over rounds), its change, and the share of verdicts that flip (every order and round). Intervals are
percentile bootstraps over PAIRS (rows of one pair move together; the same resamples for both settings: a
paired bootstrap, ``metrics.bootstrap_weights``). A change near 0 with few flips says the verdicts do not
depend on the clip: the judge reads the texts (modality neglect)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score

from helpers.stats.metrics import bootstrap_weights, percentile_ci, to_two_class

CELL = ["judge", "strategy", "input_type"]
COLUMNS = [*CELL, "media", "pairs", "rows", "two_class_waf_real", "two_class_waf_media", "waf_change",
           "waf_change_lo", "waf_change_hi", "flipped_pct", "flipped_lo", "flipped_hi"]


def _waf(gt: np.ndarray, pred: np.ndarray, weights: np.ndarray | None = None) -> float:
    keep = gt != "same"
    g, p = to_two_class(gt, pred)
    if not len(g):
        return float("nan")
    w = None if weights is None else weights[keep]
    return float(f1_score(g, p, labels=["a1", "a2"], average="weighted", zero_division=0, sample_weight=w))


def compare(real: pd.DataFrame, other: pd.DataFrame, n_boot: int = 1000, seed: int = 0,
            level: float = 0.95) -> dict:
    """One setting against ``real`` on their common rows (percent; see the module docstring)."""
    merged = real.merge(other, on=["order", "round", "name"], suffixes=("_real", "_media"))
    names = np.array(sorted(merged["name"].unique()))
    index = {n: i for i, n in enumerate(names)}
    weights = bootstrap_weights(len(names), n_boot, seed)
    pair = merged["name"].map(index).to_numpy()
    flips = (merged["pred_real"] != merged["pred_media"]).to_numpy(dtype=float)
    rows_w = weights[:, pair]  # each replicate's weight of each row: its pair's draw count
    flip_boot = (rows_w @ flips) / rows_w.sum(axis=1)
    normal = (merged["order"] == "normal").to_numpy()
    gt = merged["gt_real"].to_numpy(dtype=object)[normal]
    a, b = merged["pred_real"].to_numpy(dtype=object)[normal], merged["pred_media"].to_numpy(dtype=object)[normal]
    waf_a, waf_b = _waf(gt, a), _waf(gt, b)
    change = np.array([_waf(gt, b, w[normal]) - _waf(gt, a, w[normal]) for w in rows_w])
    lo, hi = percentile_ci(change, level)
    flo, fhi = percentile_ci(flip_boot, level)
    return {"pairs": len(names), "rows": len(merged), "two_class_waf_real": 100 * waf_a,
            "two_class_waf_media": 100 * waf_b, "waf_change": 100 * (waf_b - waf_a), "waf_change_lo": 100 * lo,
            "waf_change_hi": 100 * hi, "flipped_pct": 100 * float(flips.mean()) if len(flips) else float("nan"),
            "flipped_lo": 100 * flo, "flipped_hi": 100 * fhi}


def media_effect(rows: pd.DataFrame, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """Every judge cell run under ``real`` and at least one other media setting, one row per other
    setting (empty, with the columns, when there is none). ``rows``: judged rows with ``gt``, ``pred``
    and ``media`` (``results.load_predictions(..., media=None)``)."""
    out = []
    if rows.empty or "media" not in rows.columns:
        return pd.DataFrame(columns=COLUMNS)
    rows = rows.assign(media=rows["media"].fillna("real"))
    for key, cell in rows.groupby(CELL, sort=True):
        settings = set(cell["media"])
        if "real" not in settings or len(settings) < 2:
            continue
        real = cell[cell["media"] == "real"]
        for setting in sorted(settings - {"real"}):
            found = compare(real, cell[cell["media"] == setting], n_boot, seed, level)
            out.append({**dict(zip(CELL, key, strict=True)), "media": setting, **found})
    return pd.DataFrame(out, columns=COLUMNS)


def media_sentence(table: pd.DataFrame) -> str:
    """What the report says under the media table, or in its place when no judge was run with more than one
    media setting (with how to make such runs)."""
    if table.empty:
        return ("No judge has been run with more than one media setting, so whether the MLLM judges use the video "
                "is not measured here: run a judge again with `-p media none` (the text prompt alone) or "
                "`-p media mismatched` (each pair shown another pair's clip) beside its ordinary run.")
    return ("Each row compares a judge cell run with its own clips against the same cell run with no clip or with "
            "another pair's clip, on the rows both hold: the change in two-class WAF (normal order, points) and "
            "the share of verdicts that flip, each with a 95% bootstrap interval over pairs.")
