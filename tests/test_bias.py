"""Length-controlled evaluation: strata, the length GLMs and the columns metrics.csv gains."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from helpers.data import DataError
from helpers.stats import confound


def text(n: int) -> str:
    return "x" * n


def table(pairs: pd.DataFrame, preds: dict[str, list[str]], rounds: int = 1, reverse: bool = False) -> pd.DataFrame:
    """A predictions table (store schema) with one judge per entry of ``preds``."""
    frames = []
    for judge, pred in preds.items():
        for rnd in range(rounds):
            frames.append(pd.DataFrame({"judge": judge, "strategy": "-", "input_type": "text", "order": "normal",
                                        "round": rnd, "name": pairs["name"], "gt": pairs["preference"], "pred": pred}))
            if reverse:  # deliberately wrong rows: the length metrics must ignore the reversed order
                frames.append(frames[-1].assign(order="reverse", pred="a2"))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture
def hand_pairs() -> pd.DataFrame:
    """Six decided pairs with unequal lengths, one tie in length, one 'same' label.

    longer: a1 a1 a2 a2 a1 a2 | tie | a1
    human:  a1 a1 a2 a1 a2 a1 | a1  | same
    -> concordant: p0 p1 p2 ; discordant: p3 p4 p5 ; p6 and p7 in no stratum
    """
    lengths = [(30, 10), (20, 5), (8, 40), (10, 12), (50, 49), (3, 9), (7, 7), (20, 10)]
    human = ["a1", "a1", "a2", "a1", "a2", "a1", "a1", "same"]
    return pd.DataFrame({"name": [f"p{i}" for i in range(8)], "a1": [text(a) for a, _ in lengths],
                         "a2": [text(b) for _, b in lengths], "preference": human})


def test_length_strata_follow_the_human_choice_relative_to_length(hand_pairs):
    strata = confound.length_strata(hand_pairs)
    assert strata.tolist()[:6] == ["concordant"] * 3 + ["discordant"] * 3
    assert strata[6:].isna().all()


def test_stratified_accuracy_matches_hand_counts(hand_pairs):
    # judge: right on p0, p1 (concordant 2/3); right on p3 via 'same' read as a1, wrong p4, p5 (1/3)
    pred = pd.Series(["a1", "a1", "a1", "same", "a1", "a2", "a1", "a1"])
    decided = hand_pairs["preference"] != "same"
    got = confound.stratified_accuracy(hand_pairs["preference"][decided], pred[decided], confound.length_strata(hand_pairs)[decided])
    assert got.loc["concordant", ["n", "correct"]].tolist() == [3, 2]
    assert got.loc["discordant", ["n", "correct"]].tolist() == [3, 1]
    # Wilson interval for 2/3 by hand: (p + z²/2n ± z sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)
    z, n, p = 1.959963984540054, 3, 2 / 3
    centre, half = (p + z**2 / (2 * n)) / (1 + z**2 / n), z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    assert got.loc["concordant", "lo"] == pytest.approx(centre - half)
    assert got.loc["concordant", "hi"] == pytest.approx(centre + half)


def test_length_columns_for_length_judge_oracle_and_hand_judge(hand_pairs):
    longer = confound.longer_label(hand_pairs).tolist()
    preds = {
        "length": longer,
        "oracle": hand_pairs["preference"].replace({"same": "a1"}).tolist(),
        "hand": ["a1", "a1", "a1", "same", "a1", "a2", "a1", "a1"],
    }
    cols = confound.length_columns(table(hand_pairs, preds, reverse=True), hand_pairs).set_index("judge")
    assert list(cols.columns) == ["strategy", "input_type", *confound.LENGTH_COLUMNS]
    assert cols.loc["length", ["len_concordant_acc", "len_discordant_acc", "len_balanced_acc"]].tolist() == [100, 0, 50]
    assert cols.loc["oracle", "len_balanced_acc"] == 100
    assert cols.loc["hand", "len_concordant_acc"] == pytest.approx(200 / 3, abs=0.005)
    assert cols.loc["hand", "len_discordant_acc"] == pytest.approx(100 / 3, abs=0.005)
    assert cols.loc["hand", "len_balanced_acc"] == pytest.approx(50)
    # the length judge's choice is a step function of length: no finite coefficient exists
    assert cols.loc[["length", "oracle"], "len_coef"].isna().all()


def test_rounds_are_averaged(hand_pairs):
    rows = table(hand_pairs, {"j": ["a1"] * 8}, rounds=2)
    rows.loc[(rows["round"] == 1), "pred"] = hand_pairs["preference"].replace({"same": "a1"}).to_numpy()
    report = confound.length_report(rows, hand_pairs).iloc[0]
    # round 0 (always a1): concordant 2/3, discordant 2/3; round 1 (oracle): 1, 1
    assert report["rounds"] == 2
    assert report["len_concordant_acc"] == pytest.approx(100 * (2 / 3 + 1) / 2)
    assert report["two_class_waf"] == pytest.approx(
        50 * (f1_score(["a1", "a1", "a2", "a1", "a2", "a1", "a1"], ["a1"] * 7, average="weighted") + 1)
    )


def test_predictions_for_unknown_pairs_are_refused(hand_pairs):
    rows = table(hand_pairs, {"j": ["a1"] * 8})
    rows.loc[0, "name"] = "ghost"
    with pytest.raises(DataError, match="ghost"):
        confound.length_report(rows, hand_pairs)


def test_unknown_verdicts_are_refused_with_their_row(hand_pairs):
    rows = table(hand_pairs, {"j": ["a1"] * 8})
    rows.loc[2, "pred"] = "A"
    with pytest.raises(DataError, match="row 2, column 'pred'"):
        confound.length_report(rows, hand_pairs)


# --------------------------------------------------------------------------- GLMs on simulated data


def simulated_pairs(n: int, human_length_coef: float, seed: int) -> pd.DataFrame:
    """Pairs whose log-length ratio is N(0, 0.5²) and whose human labels follow a logistic
    model in the standardised ratio with the given coefficient."""
    rng = np.random.default_rng(seed)
    ratio = rng.normal(scale=0.5, size=n)
    len2 = rng.integers(200, 400, size=n)
    len1 = np.maximum(1, np.round(len2 * np.exp(ratio))).astype(int)
    ratio = np.log(len1 / len2)
    zstd = ratio / np.sqrt(np.mean(ratio**2))
    human = rng.random(n) < 1 / (1 + np.exp(-human_length_coef * zstd))
    return pd.DataFrame({"name": [f"s{i}" for i in range(n)], "a1": [text(k) for k in len1],
                         "a2": [text(k) for k in len2], "preference": np.where(human, "a1", "a2")})


def test_human_glm_recovers_a_planted_length_effect():
    pairs = simulated_pairs(4000, human_length_coef=1.2, seed=0)
    fit = confound.human_length_glm(pairs)
    assert fit["lo"] < 1.2 < fit["hi"]
    assert fit["hi"] - fit["lo"] < 0.3
    assert 0.05 < fit["pseudo_r2"] < 0.5
    null = confound.human_length_glm(simulated_pairs(4000, human_length_coef=0.0, seed=5))
    assert null["lo"] < 0 < null["hi"] and null["pseudo_r2"] < 0.01


def test_judge_glm_recovers_a_planted_length_effect_beyond_the_human_label():
    pairs = simulated_pairs(4000, human_length_coef=0.0, seed=3)
    rng = np.random.default_rng(4)
    z = confound.log_length_ratio(pairs) / confound.length_scale(pairs)
    human = (pairs["preference"] == "a1").astype(float)
    chooses_a1 = rng.random(len(pairs)) < 1 / (1 + np.exp(-(-1.0 + 2.0 * human + 0.8 * z)))
    preds = {"biased": np.where(chooses_a1, "a1", "a2").tolist()}
    cols = confound.length_columns(table(pairs, preds), pairs).iloc[0]
    assert cols["len_coef_lo"] < 0.8 < cols["len_coef_hi"]
    assert cols["len_coef_hi"] - cols["len_coef_lo"] < 0.3
    # at zero length difference the judge is right with P = sigmoid(1) for both labels
    report = confound.length_report(table(pairs, preds), pairs).iloc[0]
    assert report["lc_waf"] == pytest.approx(100 / (1 + np.exp(-1.0)), abs=3)


def test_expected_waf_of_hard_verdicts_is_sklearns_weighted_f1():
    gt = pd.Series(["a1", "a1", "a2", "a2", "a1"])
    hard = np.array([1.0, 0.0, 0.0, 1.0, 1.0])
    expected = f1_score(gt, np.where(hard == 1, "a1", "a2"), average="weighted")
    assert confound.expected_waf(gt, hard) == pytest.approx(expected)
