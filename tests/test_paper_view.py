"""The paper-shaped view (helpers.stats.paper): approximate intervals for the paper's reported rows,
CI-aware ranks, and the shorter-preferred pairs, each checked against an independent computation."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from synthetic import synthetic_predictions

from helpers.stats import paper


def test_the_approximate_interval_is_scipys_wilson_interval_on_the_same_count():
    expected = stats.binomtest(448, 563).proportion_ci(confidence_level=0.95, method="wilson")
    lo, hi = paper.approx_interval(100 * 448 / 563, 563)
    assert lo == pytest.approx(100 * expected.low, abs=1e-9) and hi == pytest.approx(100 * expected.high, abs=1e-9)


def test_the_wilson_interval_by_hand():
    p, n, z = 0.6, 100, stats.norm.ppf(0.975)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lo, hi = paper.approx_interval(60.0, 100)
    assert (lo, hi) == (pytest.approx(100 * (centre - half)), pytest.approx(100 * (centre + half)))


def test_reported_rows_get_intervals_for_waf_and_accuracy_and_none_without_pairs():
    rows = paper.reported_rows(pd.DataFrame({"judge": ["A"], "two_class_waf": [67.21], "two_class_acc": [67.32]}), 563)
    assert rows.loc[0, "two_class_waf_lo"] < 67.21 < rows.loc[0, "two_class_waf_hi"]
    assert rows.loc[0, "two_class_acc_hi"] - rows.loc[0, "two_class_acc_lo"] == pytest.approx(7.6, abs=0.3)
    assert all(math.isnan(v) for v in paper.approx_interval(50.0, 0))


def test_ci_aware_ranks_share_a_rank_where_intervals_overlap():
    frame = pd.DataFrame({"two_class_waf_lo": [76.0, 75.0, 60.0, 40.0], "two_class_waf_hi": [83.0, 82.0, 68.0, 77.0]})
    # row 2 (60-68) lies below both of the first two rows' lower bounds; row 3 overlaps everyone
    assert paper.ci_rank(frame).tolist() == [1, 1, 3, 1]


def test_text_features_by_hand():
    features = paper.text_features(["He seems sad, maybe sad and angry.", ""], ["sad", "angry"])
    first = features.iloc[0]
    assert first["words"] == 7 and first["distinct emotion words"] == 2
    assert first["emotion words per 100 words"] == pytest.approx(300 / 7)
    assert first["hedging words per 100 words"] == pytest.approx(100 / 7)  # "seems"; "maybe" is not a hedge here
    assert features.iloc[1]["words"] == 0


def pairs_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "name": ["p1", "p2", "p3", "p4", "p5"],
        "a1": ["sad sad sad", "a long text without any feeling words at all", "joy", "calm calm", "x"],
        "a2": ["a long and neutral text here", "angry", "a longer happy text", "tie", "y"],
        "preference": ["a1", "a2", "a2", "same", "a1"],
    })


def test_pairs_are_split_by_whether_the_preferred_text_is_the_shorter_one():
    split = paper.preferred_and_rejected(pairs_frame()).set_index("name")
    assert set(split.index) == {"p1", "p2", "p3"}  # p4 undecided, p5 equal length
    assert split.loc["p1", "stratum"] == "shorter preferred" and split.loc["p1", "preferred"] == "sad sad sad"
    assert split.loc["p3", "stratum"] == "longer preferred"
    examples = paper.shorter_examples(pairs_frame(), k=1)
    assert examples["name"].tolist() == ["p2"]  # 45/5 characters beats 28/11


def test_the_feature_contrast_uses_scipys_wilcoxon_on_paired_differences():
    rng = np.random.default_rng(0)
    n = 30
    short = [" ".join(["sad"] * int(k) + ["word"] * 5) for k in rng.integers(0, 4, n)]
    long = [" ".join(["word"] * 20) for _ in range(n)]
    pairs = pd.DataFrame({"name": [f"p{i}" for i in range(n)], "a1": short, "a2": long, "preference": "a1"})
    table = paper.feature_contrast(pairs, ["sad"]).set_index(["stratum", "feature"])
    row = table.loc[("shorter preferred", "emotion words per 100 words")]
    won = paper.text_features(short, ["sad"])["emotion words per 100 words"]
    assert row["pairs"] == n and row["preferred"] == pytest.approx(won.mean()) and row["rejected"] == 0
    assert row["p"] == pytest.approx(stats.wilcoxon(won.to_numpy()).pvalue)
    assert math.isnan(table.loc[("longer preferred", "words"), "p"])  # no such pairs


# --------------------------------------------------------------------------- the authors' code, measured here


def authors_parser(response: str) -> str:
    """func_postprocess_preference of the authors' utils/common.py, transcribed."""
    response = response.lower()
    for label in ("a1", "a2", "same"):
        if response.startswith(label):
            return label
    if any(response.find(k) != -1 for k in ("a1", "a2", "same")):
        poses = [10000 if p == -1 else p for p in (response.find("a1"), response.find("a2"), response.find("same"))]
        return ["a1", "a2", "same"][int(np.argmin(poses))]
    return "same"


@pytest.mark.parametrize("answer", ["a2 is better", "I prefer a2.", "x" * 9_990 + " a2", "x" * 10_050 + " a2",
                                    "y" * 10_000 + "same", "x" * 10_001 + " a1 and a2", "no label", "Same."])
def test_the_authors_parser_is_reproduced_including_its_10000_character_cap(answer):
    assert paper.official_label(answer) == authors_parser(answer)


def test_past_character_10000_the_authors_parser_returns_a_label_not_in_the_answer():
    assert paper.official_label("x" * 10_050 + " a2") == "a1"  # the first of a1, a2, same that is missing
    assert paper.official_label("x" * 10_050 + " a1") == "a2"
    assert paper.official_label("x" * 9_000 + " a2") == "a2"


def test_the_official_pairing_is_the_glob_order_and_is_compared_with_the_round_matched_one():
    preds = synthetic_predictions(n_pairs=120, judges={"noisy": 0.7}, rounds=2, swap_consistency=0.7, seed=3)
    row = paper.official_pairing_table(preds).iloc[0]
    pairs = paper.official_glob_pairing("noisy", "-", "text", [0, 1])
    assert sorted(a for a, _ in pairs) == [0, 1] and sorted(b for _, b in pairs) == [0, 1]
    normal = preds[preds["order"] == "normal"].pivot(index="name", columns="round", values="pred")
    reverse = preds[preds["order"] == "reverse"].pivot(index="name", columns="round", values="pred")
    reverse = reverse.replace({"a1": "a2", "a2": "a1"})
    agree = {(a, b): 100 * float((normal[a] == reverse[b]).mean()) for a in (0, 1) for b in (0, 1)}
    assert row["swap_consistency"] == pytest.approx((agree[(0, 0)] + agree[(1, 1)]) / 2)
    assert row["official_swap_consistency"] == pytest.approx(np.mean([agree[p] for p in pairs]))
    assert row["official_std"] == pytest.approx(np.std([agree[p] for p in pairs]))
    crossed = (agree[(0, 1)] + agree[(1, 0)]) / 2
    assert row["every_pairing_min"] == pytest.approx(min(crossed, row["swap_consistency"]))
    assert row["largest_possible_difference"] == pytest.approx(abs(crossed - row["swap_consistency"]))
    stds = [np.std([agree[(0, 0)], agree[(1, 1)]]), np.std([agree[(0, 1)], agree[(1, 0)]])]
    assert row["largest_possible_std_difference"] == pytest.approx(max(abs(v - stds[0]) for v in stds))
