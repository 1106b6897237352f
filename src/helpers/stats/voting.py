"""Model crowdsourcing: majority votes of the top-k judges, as the paper's voting experiment.

Judges are ranked by two-class WAF, each with its best strategy (the main table). For each k the
votes of the k best judges are pooled: every normal round of each judge (normal-only), or every
normal round then every mapped reverse round of each judge (normal+reverse). Votes are ordered
judge by judge from the best down, so a tie goes to the best-ranked judge's earliest vote, and
k = 1 with reverse rounds is exactly that judge's normal-reverse vote (:mod:`helpers.stats.metrics`).

All k are scored on the samples every ranked judge answered, so the curve compares like with
like; the cost of each point is the number of predictions (judge calls) its votes used.
Multi-step strategies (S2-S4) make more than one model call per prediction; ``calls`` counts
predictions, which is what a user pays per judge decision.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from helpers.data import LABELS
from helpers.stats.metrics import (
    CELL,
    best_strategy,
    bootstrap_weights,
    codes,
    majority_vote,
    mapped_reverse,
    percentile_ci,
    round_scores_boot,
    two_class,
    wide,
)

MODES = {"normal": ("normal",), "normal+reverse": ("normal", "reverse")}


def ranked_cells(table: pd.DataFrame) -> pd.DataFrame:
    """One row per judge (its best strategy), best two-class WAF first."""
    return best_strategy(table)[CELL + ["two_class_waf"]]


def _cell(predictions: pd.DataFrame, key: Sequence[str]) -> pd.DataFrame:
    mask = np.ones(len(predictions), dtype=bool)
    for column, value in zip(CELL, key, strict=True):
        mask &= (predictions[column] == value).to_numpy()
    return predictions[mask]


def common_names(predictions: pd.DataFrame, cells: pd.DataFrame) -> pd.Index:
    """Samples every listed cell judged in the normal order (sorted)."""
    names = None
    for key in cells[CELL].itertuples(index=False):
        cell = _cell(predictions, key)
        got = pd.Index(cell.loc[cell["order"] == "normal", "name"].unique())
        names = got if names is None else names.intersection(got)
    return (names if names is not None else pd.Index([])).sort_values()


def vote_columns(predictions: pd.DataFrame, key: Sequence[str], names: pd.Index, orders: Sequence[str]) -> np.ndarray:
    """One judge cell's votes ``(n, V)`` in the normal frame: normal rounds 0..R-1, then (if
    asked) mapped reverse rounds 0..R-1; -1 where a prediction is missing."""
    cell = _cell(predictions, key)
    blocks = []
    for order in orders:
        if not (cell["order"] == order).any():
            continue
        table = wide(cell, "normal") if order == "normal" else mapped_reverse(cell)
        table = table.reindex(names)
        blocks += [codes(table[r]) for r in sorted(c for c in table.columns if c != "gt")]
    return np.stack(blocks, axis=1) if blocks else np.full((len(names), 0), -1)


def topk_votes(predictions: pd.DataFrame, cells: pd.DataFrame, k: int, mode: str = "normal",
               names: pd.Index | None = None) -> tuple[pd.Series, int]:
    """Majority label per sample over the top-k cells' votes, and the predictions used."""
    names = common_names(predictions, cells) if names is None else names
    votes = np.concatenate([vote_columns(predictions, key, names, MODES[mode])
                            for key in cells[CELL].head(k).itertuples(index=False)], axis=1)
    voted = majority_vote(votes)
    labels = pd.Series(np.array(LABELS + ("",), dtype=object)[voted], index=names, name="vote")
    return labels, int((votes >= 0).sum())


def voting_curve(predictions: pd.DataFrame, table: pd.DataFrame, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95, max_k: int | None = None) -> pd.DataFrame:
    """Two-class WAF/accuracy (percent) of the top-k vote for k = 1..K, both modes, with
    percentile bootstrap CIs over samples (the same resamples for every k) and the cost."""
    cells = ranked_cells(table)
    max_k = len(cells) if max_k is None else min(max_k, len(cells))
    names = common_names(predictions, cells)
    first = _cell(predictions, tuple(cells[CELL].iloc[0]))
    gt = wide(first, "normal")["gt"].reindex(names)
    weights = bootstrap_weights(len(names), n_boot, seed)
    rows = []
    for mode in MODES:
        for k in range(1, max_k + 1):
            voted, calls = topk_votes(predictions, cells, k, mode, names)
            scores = two_class(gt, voted)
            waf_boot, _ = round_scores_boot(codes(gt), codes(voted)[:, None], weights, "two_class")
            lo, hi = percentile_ci(waf_boot[:, 0], level)
            rows.append({"mode": mode, "k": k, "judges": ", ".join(cells["judge"].head(k)),
                         "two_class_waf": 100 * scores["waf"], "two_class_waf_lo": 100 * lo,
                         "two_class_waf_hi": 100 * hi, "two_class_acc": 100 * scores["acc"],
                         "calls": calls, "samples": len(names)})
    return pd.DataFrame(rows)
