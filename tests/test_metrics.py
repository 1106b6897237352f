"""The paper's metrics, checked against hand-computed cases and sklearn/statsmodels/scipy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score
from synthetic import synthetic_predictions, write_predictions

from helpers.data import DataError
from helpers.run import results
from helpers.stats import metrics


def table(rows: list[tuple], judge: str = "j", strategy: str = "S1") -> pd.DataFrame:
    """Predictions from (order, round, name, gt, pred) tuples; gt/pred in each order's own frame."""
    frame = pd.DataFrame(rows, columns=["order", "round", "name", "gt", "pred"])
    return frame.assign(judge=judge, strategy=strategy, input_type="text")


# --------------------------------------------------------------------------- scalar metrics


def test_two_class_drops_same_ground_truth_and_reads_predicted_same_as_a1():
    # the pair with gt 'same' is dropped; the predicted 'same' (gt a1) becomes a1, hence correct
    scores = metrics.two_class(["a1", "a1", "a1", "a2", "same"], ["a1", "a1", "same", "a2", "a1"])
    assert scores == {"waf": 1.0, "acc": 1.0}


def test_two_class_weighted_f1_by_hand():
    # pred -> a1 a1 a2 a2; a1: TP 1, support 1, predicted 2 -> F1 2/3; a2: TP 2, support 3, predicted 2 -> 4/5
    scores = metrics.two_class(["a1", "a2", "a2", "a2"], ["same", "a1", "a2", "a2"])
    assert scores["waf"] == pytest.approx((1 * 2 / 3 + 3 * 4 / 5) / 4)
    assert scores["acc"] == pytest.approx(3 / 4)


def test_three_class_weighted_f1_by_hand():
    # a1: F1 1 (weight 1); a2: F1 0 (weight 1); same: TP 1, support 2, predicted 2 -> 1/2 (weight 2)
    scores = metrics.three_class(["a1", "a2", "same", "same"], ["a1", "same", "same", "a2"])
    assert scores["waf"] == pytest.approx((1 + 0 + 2 * 0.5) / 4)
    assert scores["acc"] == pytest.approx(0.5)


@pytest.mark.parametrize("seed", range(5))
def test_vectorised_scores_equal_sklearn(seed):
    rng = np.random.default_rng(seed)
    gt = rng.choice(["a1", "a2", "same"], size=60, p=[0.45, 0.45, 0.1])
    pred = rng.choice(["a1", "a2", "same"], size=60, p=[0.4, 0.4, 0.2])
    for task in ("two_class", "three_class"):
        waf, acc = metrics.round_scores_boot(metrics.codes(gt), metrics.codes(pred)[:, None], np.ones((1, 60)), task)
        g, p = metrics.to_two_class(gt, pred) if task == "two_class" else (gt, pred)
        labels = ["a1", "a2"] if task == "two_class" else ["a1", "a2", "same"]
        assert waf[0, 0] == pytest.approx(f1_score(g, p, labels=labels, average="weighted", zero_division=0))
        assert acc[0, 0] == pytest.approx(accuracy_score(g, p))


def test_bootstrap_weights_resample_every_pair_count_and_are_reproducible():
    weights = metrics.bootstrap_weights(50, 200, 7)
    assert weights.shape == (200, 50) and (weights.sum(axis=1) == 50).all()
    assert np.array_equal(weights, metrics.bootstrap_weights(50, 200, 7))
    assert not np.array_equal(weights, metrics.bootstrap_weights(50, 200, 8))


# --------------------------------------------------------------------------- per cell


def test_rounds_are_averaged_with_the_population_std_like_the_paper():
    rows = [("normal", 0, n, "a1", "a1") for n in "abcd"]
    rows += [("normal", 1, n, "a1", p) for n, p in zip("abcd", ["a1", "a1", "a2", "a2"], strict=True)]
    out = metrics.metrics_table(table(rows), n_boot=20)
    assert list(out.columns) == metrics.METRICS_COLUMNS
    row = out.iloc[0]
    assert row["rounds"] == 2
    assert row["two_class_acc"] == 75.0
    assert row["two_class_acc_std"] == 25.0  # ddof=0; the sample std would be 35.36


def test_swap_consistency_maps_reverse_predictions_back():
    rows = [("normal", 0, "x", "a1", "a1"), ("normal", 0, "y", "a2", "a2"), ("normal", 0, "z", "same", "same"),
            # reverse frame: x's a1 is normal a2, so reverse 'a2' means normal 'a1' -> agrees
            ("reverse", 0, "x", "a2", "a2"), ("reverse", 0, "y", "a1", "a2"), ("reverse", 0, "z", "same", "same")]
    assert metrics.swap_consistency_rounds(table(rows)).to_dict() == {0: pytest.approx(2 / 3)}


def test_round_consistency_is_mean_pairwise_agreement_within_each_order():
    rows = [("normal", r, n, "a1", p) for r, preds in enumerate([["a1", "a1"], ["a1", "a2"], ["a1", "a2"]])
            for n, p in zip("xy", preds, strict=True)]
    # round pairs (0,1): 1/2, (0,2): 1/2, (1,2): 1
    assert metrics.round_consistency(table(rows)) == pytest.approx((0.5 + 0.5 + 1) / 3)
    assert np.isnan(metrics.round_consistency(table(rows[:2])))


@pytest.mark.parametrize(
    ("normal", "reverse_mapped", "expected"),
    [
        (["a1", "a2"], ["a2", "a1"], "a1"),  # 2-2 tie: a1 came first
        (["a2", "a1"], ["a1", "a2"], "a2"),  # same counts, other order of appearance
        (["same", "a1"], ["a2", "a2"], "a2"),  # plain majority from the reverse rounds
        (["same", "a2"], ["a2", "same"], "same"),  # 2-2 tie between same and a2: same came first
        (["a2", "a2"], ["a1", "same"], "a2"),
    ],
)
def test_normal_reverse_vote_breaks_ties_by_first_appearance(normal, reverse_mapped, expected):
    swap = {"a1": "a2", "a2": "a1", "same": "same"}
    rows = [("normal", r, "x", "a1", p) for r, p in enumerate(normal)]
    rows += [("reverse", r, "x", "a2", swap[p]) for r, p in enumerate(reverse_mapped)]
    assert metrics.normal_reverse_vote(table(rows)).loc["x"] == expected


def test_majority_vote_ignores_missing_votes():
    votes = np.array([[0, -1, 1, 1], [-1, -1, -1, -1], [2, 0, -1, -1]])
    assert metrics.majority_vote(votes).tolist() == [1, -1, 2]


def test_metrics_table_matches_sklearn_per_round_on_a_simulated_table():
    preds = synthetic_predictions(n_pairs=120, judges={"good": 0.8, "poor": 0.55}, strategies=("S1", "S2"), seed=2)
    out = metrics.metrics_table(preds, n_boot=200, seed=0)
    assert len(out) == 4
    for row in out.itertuples():
        cell = preds[(preds.judge == row.judge) & (preds.strategy == row.strategy) & (preds.order == "normal")]
        per_round = []
        for _, part in cell.groupby("round"):
            g, p = metrics.to_two_class(part["gt"], part["pred"])
            per_round.append(f1_score(g, p, average="weighted"))
        assert row.two_class_waf == round(100 * np.mean(per_round), 2)
        assert row.two_class_waf_std == round(100 * np.std(per_round), 2)
        assert row.two_class_waf_lo < row.two_class_waf < row.two_class_waf_hi
    good, poor = out[out.judge == "good"], out[out.judge == "poor"]
    assert good["two_class_acc"].min() > poor["two_class_acc"].max()


def test_reused_cis_give_the_same_table():
    preds = synthetic_predictions(n_pairs=80, seed=4)
    cis = metrics.ci_table(preds, n_boot=100, seed=1)
    assert metrics.metrics_table(preds, n_boot=100, seed=1, cis=cis).equals(metrics.metrics_table(preds, n_boot=100, seed=1))
    assert set(cis["metric"]) == {"two_class_waf", "two_class_acc", "three_class_waf", "three_class_acc",
                                  "swap_consistency"}


def test_best_strategy_is_the_highest_two_class_waf_per_judge():
    scores = pd.DataFrame({"judge": ["a", "a", "b"], "strategy": ["S1", "S2", "S1"], "input_type": "text",
                           "two_class_waf": [60.0, 65.0, 70.0]})
    best = metrics.best_strategy(scores)
    assert best[["judge", "strategy"]].values.tolist() == [["b", "S1"], ["a", "S2"]]


def authors_best_prompt(means: dict[str, float]) -> str:
    """The authors' statistic.py (main_present_results): np.argmax over the unrounded two-class
    WAF means, prompts in the order normal, cot, cot2, cot3 (S1..S4); the first maximum wins."""
    order = [s for s in ("S1", "S2", "S3", "S4") if s in means]
    return order[int(np.argmax([means[s] for s in order]))]


def test_best_strategy_is_picked_on_unrounded_means_as_the_authors_statistic_picks_it():
    unrounded = {"S1": 70.0, "S2": 78.686502, "S3": 60.0, "S4": 78.686601}  # S2 and S4 both show 78.69
    scores = pd.DataFrame({"judge": "j", "strategy": list(unrounded), "input_type": "text",
                           "two_class_waf": [round(v, 2) for v in unrounded.values()],
                           "two_class_waf_unrounded": list(unrounded.values())})
    assert metrics.best_strategy(scores)["strategy"].tolist() == [authors_best_prompt(unrounded)] == ["S4"]
    tied = {"S1": 70.0, "S2": 78.686601, "S4": 78.686601}  # an exact tie: the first in S1..S4 order, as np.argmax
    scores = pd.DataFrame({"judge": "j", "strategy": list(tied)[::-1], "input_type": "text",
                           "two_class_waf": 78.69, "two_class_waf_unrounded": list(tied.values())[::-1]})
    assert metrics.best_strategy(scores)["strategy"].tolist() == [authors_best_prompt(tied)] == ["S2"]


def test_the_best_judge_is_picked_on_unrounded_means_and_an_exact_tie_by_name():
    table = pd.DataFrame({"judge": ["b", "a", "c"], "strategy": ["S2", "S4", "S1"], "input_type": "text",
                          "two_class_waf": 78.69, "two_class_waf_unrounded": [78.6866, 78.6865, 78.6866]})
    assert metrics.best_row(table)["judge"] == "b"  # b and c tie exactly; a is lower unrounded
    assert metrics.best_strategy(table)["judge"].tolist() == ["b", "c", "a"]


def test_metrics_table_keeps_the_unrounded_mean_it_rounds_for_display():
    preds = synthetic_predictions(n_pairs=60, seed=2)
    table = metrics.metrics_table(preds, n_boot=10)
    decided = preds[(preds["order"] == "normal") & (preds["gt"] != "same")]
    for row in table.itertuples():
        cell = decided[(decided["judge"] == row.judge) & (decided["strategy"] == row.strategy)]
        by_round = [f1_score(g["gt"], g["pred"].replace("same", "a1"), average="weighted")
                    for _, g in cell.groupby("round")]
        assert row.two_class_waf_unrounded == pytest.approx(100 * np.mean(by_round), abs=1e-9)
        assert row.two_class_waf == round(row.two_class_waf_unrounded, 2)


# --------------------------------------------------------------------------- significance, correlation


def test_mcnemar_counts_discordant_pairs_and_uses_the_exact_binomial():
    a = pd.Series([True] * 5 + [True, False] * 5, index=range(15))
    b = pd.Series([False] * 5 + [True, False] * 5, index=range(15))
    result = metrics.mcnemar_test(a, b)
    assert (result["only_a"], result["only_b"], result["n"]) == (5, 0, 15)
    assert result["pvalue"] == pytest.approx(stats.binomtest(0, 5, 0.5).pvalue)  # 2 * 0.5**5


def test_mcnemar_table_tests_every_pair_of_cells():
    preds = synthetic_predictions(n_pairs=100, judges={"a": 0.8, "b": 0.6, "c": 0.55}, seed=1)
    best = metrics.best_strategy(metrics.metrics_table(preds, n_boot=10))
    out = metrics.mcnemar_table(preds, best)
    assert len(out) == 3 and (out["pvalue_holm"] >= out["pvalue"]).all()


def test_pearson_matches_scipy_and_explains_too_few_cells():
    x, y = [1.0, 2.0, 3.0, 4.0, 6.0], [2.0, 1.0, 4.0, 3.0, 7.0]
    out = metrics.pearson(x, y)
    ref = stats.pearsonr(x, y)
    assert out["r"] == pytest.approx(ref.statistic) and out["pvalue"] == pytest.approx(ref.pvalue)
    assert out["lo"] < out["r"] < out["hi"]
    short = metrics.pearson([1.0, 2.0], [3.0, 4.0])
    assert np.isnan(short["r"]) and "at least 3" in short["note"]


# --------------------------------------------------------------------------- loading


def test_bad_labels_and_duplicates_are_refused_with_the_row():
    good = table([("normal", 0, "x", "a1", "a1"), ("normal", 0, "y", "a2", "a1")])
    with pytest.raises(DataError, match=r"row 1, column 'pred'.*'b'"):
        metrics.check_predictions(good.assign(pred=["a1", "b"]))
    with pytest.raises(DataError, match="appears twice"):
        metrics.check_predictions(pd.concat([good, good.iloc[[0]]], ignore_index=True))
    with pytest.raises(DataError, match="missing column"):
        metrics.check_predictions(good.drop(columns="gt"))


def test_load_predictions_reads_the_store_layout(tmp_path):
    preds = synthetic_predictions(n_pairs=30, seed=0)
    write_predictions(preds, tmp_path, "run1")
    loaded = results.load_predictions(tmp_path)
    assert len(loaded) == len(preds)
    assert metrics.metrics_table(loaded, n_boot=10).equals(metrics.metrics_table(preds, n_boot=10))


def test_unparsed_pct_is_the_share_of_answers_that_fell_back_to_same_per_cell():
    """Issue 11: an answer matching no parser rule is still scored `same` (the paper's rule), but
    every such fallback is counted, per judge x strategy x input type, over both orders and rounds."""
    preds = synthetic_predictions(n_pairs=40, judges={"a": 0.7, "b": 0.6}, seed=1)
    rules = pd.Series("prefix", index=preds.index, dtype=object)
    rows_a = preds.index[preds["judge"] == "a"]
    rules[rows_a[:10]] = "default_same"
    table = metrics.metrics_table(preds.assign(parse_rule=rules), n_boot=10).set_index("judge")
    assert table.loc["a", "unparsed_pct"] == round(100 * 10 / len(rows_a), 2) == 6.25
    assert table.loc["b", "unparsed_pct"] == 0.0
    flags = metrics.unparsed_flags(table.reset_index()).tolist()
    assert flags == ["⚠ 6.2% unparsed", ""]  # above 5 %: flagged beside the numbers
    assert "a - text: 6.2%" in metrics.unparsed_note(table.reset_index())
    assert metrics.unparsed_note(table.reset_index().iloc[[1]]) == ""
    assert np.isnan(metrics.metrics_table(preds.drop(columns="parse_rule"), n_boot=10)["unparsed_pct"]).all()
