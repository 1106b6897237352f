"""Model crowdsourcing: top-k majority votes, their tie rule, cost and curve."""

from __future__ import annotations

import pandas as pd
import pytest
from synthetic import synthetic_predictions

from helpers.stats import metrics, voting

SWAP = {"a1": "a2", "a2": "a1", "same": "same"}


def judge_rows(judge: str, normal: list[list[str]], reverse_mapped: list[list[str]], gt: list[str]) -> list[dict]:
    """Rows of one judge: normal[r][i] / reverse_mapped[r][i] are labels in the normal frame."""
    rows = []
    for order, rounds in (("normal", normal), ("reverse", reverse_mapped)):
        for r, labels in enumerate(rounds):
            for i, label in enumerate(labels):
                flip = order == "reverse"
                rows.append({"judge": judge, "strategy": "S1", "input_type": "text", "order": order, "round": r,
                             "name": f"p{i}", "gt": SWAP[gt[i]] if flip else gt[i],
                             "pred": SWAP[label] if flip else label})
    return rows


GT = ["a1", "a2", "a1", "a2"]
PREDICTIONS = pd.DataFrame(
    judge_rows("best", [["a1", "a2", "a1", "a1"]], [["a1", "a2", "a2", "a1"]], GT)
    + judge_rows("second", [["a2", "a2", "a1", "a1"]], [["a2", "a2", "a1", "a2"]], GT)
    + judge_rows("third", [["a2", "a1", "a1", "a2"]], [["a2", "a1", "a2", "a2"]], GT)
)


def test_judges_are_ranked_by_two_class_waf_with_their_best_strategy():
    ranked = voting.ranked_cells(metrics.metrics_table(PREDICTIONS, n_boot=0))
    assert ranked["judge"].tolist() == ["best", "second", "third"]


def test_topk_vote_is_a_majority_with_ties_to_the_best_ranked_judge():
    cells = voting.ranked_cells(metrics.metrics_table(PREDICTIONS, n_boot=0))
    two, calls = voting.topk_votes(PREDICTIONS, cells, 2, "normal")
    # p0: a1 vs a2 tie -> best judge's a1; p1: a2 a2; p2: a1 a1; p3: a1 a1
    assert two.tolist() == ["a1", "a2", "a1", "a1"] and calls == 8
    three, calls = voting.topk_votes(PREDICTIONS, cells, 3, "normal")
    assert three.tolist() == ["a2", "a2", "a1", "a1"] and calls == 12


def test_one_judge_with_reverse_rounds_is_its_normal_reverse_vote():
    cells = voting.ranked_cells(metrics.metrics_table(PREDICTIONS, n_boot=0))
    voted, calls = voting.topk_votes(PREDICTIONS, cells, 1, "normal+reverse")
    best = PREDICTIONS[PREDICTIONS["judge"] == "best"]
    assert voted.tolist() == metrics.normal_reverse_vote(best).tolist() == ["a1", "a2", "a1", "a1"]
    assert calls == 8


def test_voting_curve_has_every_k_for_both_modes_with_cost_and_bands():
    preds = synthetic_predictions(n_pairs=200, judges={"a": 0.75, "b": 0.7, "c": 0.65, "d": 0.6}, seed=5)
    curve = voting.voting_curve(preds, metrics.metrics_table(preds, n_boot=0), n_boot=300, seed=0)
    assert sorted(curve["mode"].unique()) == ["normal", "normal+reverse"]
    assert curve.groupby("mode")["k"].apply(list).tolist() == [[1, 2, 3, 4]] * 2
    normal = curve[curve["mode"] == "normal"]
    assert normal["calls"].tolist() == [400, 800, 1200, 1600]  # 2 rounds x 200 pairs per judge
    both = curve[curve["mode"] == "normal+reverse"]
    assert both["calls"].tolist() == [800, 1600, 2400, 3200]
    assert ((curve["two_class_waf_lo"] <= curve["two_class_waf"]) & (curve["two_class_waf"] <= curve["two_class_waf_hi"])).all()
    k1 = metrics.two_class(*_k1(preds))
    assert normal.iloc[0]["two_class_waf"] == pytest.approx(100 * k1["waf"])


def _k1(preds):
    """The best judge's normal rounds voted directly, for comparison with the curve's k = 1."""
    table = metrics.metrics_table(preds, n_boot=0)
    top = metrics.best_strategy(table).iloc[0]
    cell = preds[(preds["judge"] == top["judge"]) & (preds["order"] == "normal")]
    wide = metrics.wide(cell, "normal")
    votes = metrics.majority_vote(pd.concat([wide[r].map(metrics.CODE) for r in (0, 1)], axis=1).to_numpy())
    return wide["gt"], [("a1", "a2", "same")[v] for v in votes]
