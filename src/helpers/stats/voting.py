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


# --------------------------------------------------------------------------- two-class answers

TWO_CLASS_RULE = (
    "per pair, the a1 and a2 votes over every round of both orders (reverse mapped back), of every "
    "judge pooled; 'same' abstains. More a1 than a2 votes: a1; more a2: a2. A tie (including only "
    "'same' votes) goes to the first judge in rank order whose own votes are not tied, else to the seeded "
    "coin: a1 when the first byte of sha256('<seed>|<pair>') is even, a2 when odd"
)
"""The rule that turns a judge's (or several judges') a1/a2/same verdicts into the two-class
answer a challenge like MER2026 Track 3 scores. The coin depends only on the seed and the pair's
key, so an answer does not change with the order pairs are processed in or with the other pairs."""


def seeded_coin(keys: Sequence[str], seed: int = 0) -> np.ndarray:
    """The tie-breaking coin of :data:`TWO_CLASS_RULE` per pair: ``a1`` or ``a2``."""
    import hashlib

    return np.array(["a1" if hashlib.sha256(f"{seed}|{k}".encode()).digest()[0] % 2 == 0 else "a2" for k in keys],
                    dtype=object)


def two_class_answers(votes: Sequence[np.ndarray], keys: Sequence[str], seed: int = 0) -> pd.DataFrame:
    """Two-class answers by :data:`TWO_CLASS_RULE`.

    ``votes``: one ``(n, V)`` code array per judge (a1 0, a2 1, same 2, missing -1; see
    :func:`vote_columns`), best-ranked judge first; ``keys``: the n pairs. Returns ``answer``
    (None where no judge answered the pair at all), the pooled ``a1_votes``/``a2_votes``/
    ``same_votes`` and ``decided_by``: ``majority``, ``judge <i>`` (a tie broken by the i-th
    judge, from 1), ``seeded coin`` or ``no answer``."""
    keys = list(keys)
    pooled = np.concatenate(list(votes), axis=1)
    a1, a2 = (pooled == 0).sum(axis=1), (pooled == 1).sum(axis=1)
    answer = np.where(a1 > a2, "a1", np.where(a2 > a1, "a2", None)).astype(object)
    decided = np.where(a1 != a2, "majority", None).astype(object)
    for rank, judge in enumerate(votes, 1):
        j1, j2 = (judge == 0).sum(axis=1), (judge == 1).sum(axis=1)
        take = (decided == None) & (j1 != j2)  # noqa: E711 - elementwise on an object array
        answer[take] = np.where(j1 > j2, "a1", "a2")[take]
        decided[take] = f"judge {rank}"
    voted = (pooled >= 0).any(axis=1)
    coin = (decided == None) & voted  # noqa: E711
    answer[coin] = seeded_coin(keys, seed)[coin]
    decided[coin] = "seeded coin"
    decided[~voted] = "no answer"
    return pd.DataFrame({"name": keys, "answer": answer, "a1_votes": a1, "a2_votes": a2,
                         "same_votes": (pooled == 2).sum(axis=1), "decided_by": decided})
