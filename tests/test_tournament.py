"""MER-style tournaments: input rules, pair designs, judging through the engine, and rankings
that say how much of a system's place is only description length."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from helpers import tournament as T
from helpers.data import DataError
from helpers.stats import bt as S
from helpers.stats.bt import bradley_terry
from helpers.tournament import demo as D


def long_table(n_samples: int = 6, systems=("alpha", "beta", "gamma", "delta"), seed: int = 0) -> pd.DataFrame:
    """Descriptions whose length differs by system (alpha longest) and by sample."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_samples):
        for k, system in enumerate(systems):
            words = int(rng.integers(3, 8)) + 4 * (len(systems) - k)
            rows.append((f"s{i:03d}", system, " ".join(["calm"] * words)))
    return pd.DataFrame(rows, columns=list(T.COLUMNS))


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- the long table


def test_a_valid_table_loads_as_strings(tmp_path):
    table = long_table()
    table.to_csv(tmp_path / "t.csv", index=False)
    loaded = T.load_entries(tmp_path / "t.csv")
    pd.testing.assert_frame_equal(loaded, table.astype(str))


def test_every_bad_row_is_reported_with_file_line_column_and_value(tmp_path):
    path = write_csv(tmp_path / "bad.csv", (
        "name,system,description\n"
        "s1,alpha,fine\n"
        "../etc,alpha,escapes the media folder\n"
        "s1,alpha,second description of the same system\n"
        "s2,,a system without a name\n"
        "s2,gamma,   \n"
    ))
    with pytest.raises(DataError) as info:
        T.load_entries(path)
    message = str(info.value)
    assert "4 problem(s)" in message
    assert f"{path}, line 3, column 'name'" in message and "'../etc'" in message
    assert f"{path}, line 4, column 'system'" in message and "first on line 2" in message
    assert f"{path}, line 5, column 'system'" in message and "system name is empty" in message
    assert f"{path}, line 6, column 'description': description is empty" in message


def test_a_name_that_is_only_a_dot_is_refused_like_any_unsafe_sample_name(tmp_path):
    path = write_csv(tmp_path / "dot.csv", "name,system,description\n.,alpha,the media folder itself\ns1,.,x\n"
                                           "s1,alpha,fine\ns1,beta,fine\n")
    with pytest.raises(DataError) as info:
        T.load_entries(path)
    message = str(info.value)
    assert "1 problem(s)" in message  # the system '.' is only a display name: its id is safe
    assert f"{path}, line 2, column 'name'" in message and "not '.'" in message


def test_parquet_rows_are_numbered_and_a_missing_column_is_named(tmp_path):
    table = long_table(2)
    table.loc[5, "description"] = ""
    table.to_parquet(tmp_path / "t.parquet")
    with pytest.raises(DataError, match=r"t\.parquet, row 6, column 'description'"):
        T.load_entries(tmp_path / "t.parquet")
    table.drop(columns="system").to_parquet(tmp_path / "u.parquet")
    with pytest.raises(DataError, match="missing required column.*system"):
        T.load_entries(tmp_path / "u.parquet")


def test_one_system_is_not_a_tournament(tmp_path):
    long_table(systems=("alpha",)).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DataError, match="at least 2 systems"):
        T.load_entries(tmp_path / "t.csv")


def test_systems_missing_on_some_samples_are_reported_not_rejected():
    table = long_table(5)
    table = table[~((table["system"] == "gamma") & table["name"].isin(["s001", "s003"]))]
    report = T.missing_report(table)
    assert report == "system 'gamma' has no description for 2 of 5 samples (e.g. s001, s003)"
    assert T.missing_report(long_table(5)) == ""
    design = T.design_pairs(table)
    assert not ((design.pairs["name"] == "s001") & design.pairs[["system_a", "system_b"]].eq("gamma").any(axis=1)).any()


# --------------------------------------------------------------------------- pair designs


def test_round_robin_draws_every_pair_of_present_systems_once_per_sample():
    table = long_table(7)
    design = T.design_pairs(table)
    assert len(design.pairs) == 7 * 6
    assert set(map(tuple, design.pairs[["system_a", "system_b"]].drop_duplicates().to_numpy())) == set(
        combinations(sorted(table["system"].unique()), 2))
    assert (design.pairs["system_a"] < design.pairs["system_b"]).all()
    assert design.pairs["comparison"].iloc[0] == "s000__alpha__vs__beta"
    assert design.manifest["design"] == "round_robin" and design.manifest["n_comparisons"] == 42


@pytest.mark.parametrize("budget", [1, 2, 4])
def test_a_budget_compares_every_pair_of_systems_about_equally_often(budget):
    table = long_table(30, systems=("a1x", "b2x", "c3x", "d4x", "e5x"))
    design = T.design_pairs(table, budget=budget, seed=3)
    assert (design.pairs.groupby("name").size() == budget).all()
    per_pair = design.pairs.groupby(["system_a", "system_b"]).size()
    assert len(per_pair) == 10  # every one of the C(5,2) pairs is drawn
    assert per_pair.max() - per_pair.min() <= 1
    assert design.manifest["comparisons_per_pair_max"] - design.manifest["comparisons_per_pair_min"] <= 1


def test_designs_are_reproducible_from_their_seed_and_differ_between_seeds():
    table = long_table(30, systems=("a1x", "b2x", "c3x", "d4x", "e5x"))
    first, again = T.design_pairs(table, budget=2, seed=1), T.design_pairs(table, budget=2, seed=1)
    pd.testing.assert_frame_equal(first.pairs, again.pairs)
    assert not first.pairs.equals(T.design_pairs(table, budget=2, seed=2).pairs)
    assert first.manifest["seed"] == 1 and first.manifest["budget"] == 2
    assert T.design_pairs(table, budget=99, seed=1).pairs.equals(T.design_pairs(table).pairs)


def test_design_round_trips_through_its_folder(tmp_path):
    design = T.design_pairs(long_table(), budget=2, seed=5)
    T.write_design(design, tmp_path)
    back = T.read_design(tmp_path)
    pd.testing.assert_frame_equal(back.pairs, design.pairs.astype(str))
    assert back.manifest == design.manifest


# --------------------------------------------------------------------------- pairs, judging, comparisons


def test_pairs_carry_the_texts_of_the_two_systems_and_the_sample_as_media():
    table = long_table(2)
    pairs = T.to_pairs(T.design_pairs(table).pairs, table)
    row = pairs.set_index("name").loc["s001__alpha__vs__gamma"]
    text = table.set_index(["name", "system"])["description"]
    assert row["media_name"] == "s001"
    assert row["a1"] == text[("s001", "alpha")] and row["a2"] == text[("s001", "gamma")]
    assert (row["model1"], row["model2"]) == ("alpha", "gamma")


def test_the_engine_judges_every_comparison_in_both_orders(tmp_path):
    table = long_table(4, systems=("alpha", "beta", "gamma"))
    pairs = T.to_pairs(T.design_pairs(table).pairs, table)
    summary = T.judge_tournament(pairs, ["length"], tmp_path, tag="t", shards=2, rounds=1)
    digest = T.pairs_digest(pairs)
    assert list(summary["run_id"]) == [f"length__cpu__text__t-{digest}.s0of2", f"length__cpu__text__t-{digest}.s1of2"]
    preds = T.tournament_predictions(tmp_path, pairs)
    assert len(preds) == 2 * len(pairs)
    assert (preds.groupby("name")["order"].apply(sorted) == pd.Series([["normal", "reverse"]] * len(pairs))
            .set_axis(sorted(pairs["name"]))).all()
    comps = T.comparisons_from_predictions(preds, pairs)
    # alpha is always the longest system: the length judge gives it every comparison, in both orders
    alpha = comps[comps["system_a"] == "alpha"]
    assert (alpha["winner"] == "a").all() and (comps["consistency"] == 1).all()


def test_a_hand_edited_verdict_is_refused_by_the_tournament_as_by_the_benchmark(tmp_path):
    """Observed: the tournament read the store raw, so a ``banana`` verdict reached the ranking;
    it now reads through the benchmark's checked loader and names the folder and the key."""
    table = long_table(3, systems=("alpha", "beta"))
    pairs = T.to_pairs(T.design_pairs(table).pairs, table)
    summary = T.judge_tournament(pairs, ["length"], tmp_path, tag="t")
    file = Path(tmp_path) / summary.loc[0, "run_id"] / "predictions.jsonl"
    lines = file.read_text().splitlines()
    row = json.loads(lines[0])
    file.write_text("\n".join([json.dumps(row | {"pred": "banana"}), *lines[1:]]) + "\n")
    with pytest.raises(DataError, match=r"pred 'banana' is not one of a1, a2, same") as refused:
        T.tournament_predictions(tmp_path, pairs)
    assert str(file) in str(refused.value) and row["key"] in str(refused.value)


def test_edited_texts_are_judged_afresh_not_resumed_from_the_old_texts(tmp_path):
    table = long_table(3, systems=("alpha", "beta"))
    pairs = T.to_pairs(T.design_pairs(table).pairs, table)
    T.judge_tournament(pairs, ["length"], tmp_path, tag="t")
    edited = table.copy()
    edited.loc[edited["system"] == "beta", "description"] = "calm " * 99  # beta now the longer
    new_pairs = T.to_pairs(T.design_pairs(edited).pairs, edited)
    T.judge_tournament(new_pairs, ["length"], tmp_path, tag="t")
    comps = T.comparisons_from_predictions(T.tournament_predictions(tmp_path, new_pairs), new_pairs)
    assert len(comps) == 3 and (comps["winner"] == "b").all()


def predictions(rows: list[tuple[str, str, int, str]]) -> pd.DataFrame:
    return pd.DataFrame([
        {"judge": "j", "strategy": "-", "input_type": "text", "order": order, "round": rnd, "name": name, "pred": pred}
        for name, order, rnd, pred in rows
    ])


def test_an_order_inconsistent_verdict_is_a_tie_and_rounds_are_pooled():
    table = long_table(1, systems=("alpha", "beta"))
    pairs = T.to_pairs(T.design_pairs(table).pairs, table)
    cid = pairs["name"].iloc[0]
    consistent = predictions([(cid, "normal", 0, "a2"), (cid, "reverse", 0, "a1")])
    out = T.comparisons_from_predictions(consistent, pairs).iloc[0]
    assert (out["winner"], out["consistency"]) == ("b", 1.0)
    position_bias = predictions([(cid, "normal", 0, "a1"), (cid, "reverse", 0, "a1")])
    out = T.comparisons_from_predictions(position_bias, pairs).iloc[0]
    assert (out["winner"], out["consistency"]) == ("tie", 0.0)
    two_rounds = predictions([(cid, "normal", 0, "a1"), (cid, "reverse", 0, "a2"),
                              (cid, "normal", 1, "a1"), (cid, "reverse", 1, "a1")])
    out = T.comparisons_from_predictions(two_rounds, pairs).iloc[0]
    assert (out["winner"], out["consistency"], out["n_rounds"]) == ("a", 0.5, 2)  # win + tie -> 0.75
    with pytest.raises(DataError, match="lack their 'reverse' verdict"):
        T.comparisons_from_predictions(predictions([(cid, "normal", 0, "a1")]), pairs)


def test_length_difference_is_normalised_to_minus_one_one():
    assert T.length_diff(["aaa", "a", ""], ["a", "aaa", ""]).tolist() == [0.5, -0.5, 0.0]


# --------------------------------------------------------------------------- Bradley-Terry and style control


def simulate(n: int, theta: dict[str, float], gamma: float, seed: int = 0, longer: dict[str, float] | None = None):
    """Comparisons from a BT model with a length effect; ``longer`` shifts a system's mean
    normalised length difference (its descriptions are longer), with noise so that length
    varies within every pair of systems."""
    rng = np.random.default_rng(seed)
    systems = sorted(theta)
    a_idx = rng.integers(0, len(systems), n)
    b_idx = (a_idx + rng.integers(1, len(systems), n)) % len(systems)
    sa, sb = np.array(systems)[a_idx], np.array(systems)[b_idx]
    shift = longer or {}
    ld = np.clip(np.array([shift.get(s, 0) for s in sa]) - np.array([shift.get(s, 0) for s in sb])
                 + rng.normal(0, 0.25, n), -0.99, 0.99)
    eta = np.array([theta[s] for s in sa]) - np.array([theta[s] for s in sb]) + gamma * ld
    wins = rng.random(n) < 1 / (1 + np.exp(-eta))
    return pd.DataFrame({"system_a": sa, "system_b": sb, "winner": np.where(wins, "a", "b"), "length_diff": ld})


def test_without_covariates_the_fit_equals_the_analysis_modules_bradley_terry():
    comps = simulate(3000, {"p": 0.0, "q": 0.4, "r": 1.0, "s": -0.5}, gamma=0.0, seed=1)
    comps.loc[comps.index[::17], "winner"] = "tie"
    for prior in (0.0, 2.0):
        ours = S.fit_bt(comps, n_boot=0, prior=prior).ratings.set_index("system")
        theirs = bradley_terry(comps, n_boot=0, prior=prior).set_index("system")
        np.testing.assert_allclose(ours["log_strength"], theirs.loc[ours.index, "log_strength"], atol=1e-6)


def test_style_control_matches_a_statsmodels_logit_with_the_length_regressor():
    comps = simulate(4000, {"p": 0.0, "q": 0.5, "r": 1.0}, gamma=2.0, seed=2, longer={"r": 0.2})
    fit = S.fit_bt(comps, ("length_diff",), n_boot=0, l2=0.0)
    systems = ["p", "q", "r"]
    design = np.zeros((len(comps), 3))
    design[np.arange(len(comps)), comps["system_a"].map(systems.index)] += 1
    design[np.arange(len(comps)), comps["system_b"].map(systems.index)] -= 1
    X = np.column_stack([design[:, 1:], comps["length_diff"]])
    ref = sm.Logit((comps["winner"] == "a").astype(float), X).fit(disp=0).params
    ours = fit.ratings.set_index("system")["log_strength"]
    np.testing.assert_allclose([ours["q"], ours["r"], fit.coefficients["coef"].iloc[0]], ref, atol=1e-6)


def test_a_planted_length_effect_is_absorbed_by_the_covariate():
    # equally good systems; 'long' writes longer descriptions and the judge likes length
    comps = simulate(6000, {"long": 0.0, "mid": 0.0, "short": 0.0}, gamma=3.0, seed=3,
                     longer={"long": 0.25, "short": -0.25})
    plain = S.fit_bt(comps, n_boot=100, seed=0).ratings.set_index("system")
    style = S.fit_bt(comps, ("length_diff",), n_boot=100, seed=0)
    styled = style.ratings.set_index("system")
    assert plain.loc["long", "log_strength_lo"] > plain.loc["short", "log_strength_hi"]  # plain BT is fooled
    assert plain.loc["long", "rank"] == 1 and plain.loc["short", "rank"] == 3
    centre = styled["log_strength"].mean()  # intervals are of each strength beside the mean of all (no anchor)
    for system in ("long", "mid", "short"):  # style control sees three equal systems
        assert styled.loc[system, "log_strength_lo"] <= centre <= styled.loc[system, "log_strength_hi"]
        assert styled.loc[system, "rank"] == 1
    coef = style.coefficients.iloc[0]
    assert coef["coef_lo"] < 3.0 < coef["coef_hi"]


def test_style_control_keeps_real_differences():
    comps = simulate(6000, {"good": 1.0, "bad": 0.0, "mid": 0.5}, gamma=3.0, seed=4, longer={"bad": 0.25})
    styled = S.fit_bt(comps, ("length_diff",), n_boot=100, seed=0).ratings.set_index("system")
    assert list(styled.sort_values("log_strength", ascending=False).index) == ["good", "mid", "bad"]
    assert styled.loc["good", "log_strength_lo"] > styled.loc["bad", "log_strength_hi"]


def test_ci_aware_rank_counts_the_systems_clearly_above():
    # A [5, 6] is above B [2, 4.5] and C [1, 3]; B and C overlap
    assert S.ci_ranks([5, 2, 1], [6, 4.5, 3]).tolist() == [1, 2, 2]


def test_unconnected_systems_are_refused():
    comps = pd.DataFrame({"system_a": ["a", "c"], "system_b": ["b", "d"], "winner": ["a", "b"]})
    with pytest.raises(DataError, match="unconnected groups"):
        S.fit_bt(comps, n_boot=0)


# --------------------------------------------------------------------------- humans


def test_agreement_with_humans_is_counted_on_the_labelled_comparisons():
    comps = pd.DataFrame({"judge": "j", "strategy": "-", "input_type": "text", "comparison": ["c1", "c2", "c3", "c4"],
                          "winner": ["a", "b", "tie", "a"]})
    human = pd.DataFrame({"comparison": ["c1", "c2", "c3"], "winner": ["a", "a", "tie"]})
    row = T.human_agreement(comps, human).iloc[0]
    assert row["n_labelled"] == 3 and row["agreement"] == pytest.approx(2 / 3)
    assert row["agreement_decided"] == pytest.approx(1 / 2)


def test_rank_correlation_needs_three_common_systems():
    left = pd.DataFrame({"system": ["a", "b", "c", "d"], "log_strength": [3.0, 2.0, 1.0, 0.0]})
    right = pd.DataFrame({"system": ["a", "b", "c", "d"], "log_strength": [2.0, 3.0, 1.0, 0.0]})
    out = T.rank_correlation(left, right)
    assert out["kendall_tau"] == pytest.approx(4 / 6) and out["n_systems"] == 4
    assert np.isnan(T.rank_correlation(left.head(2), right.head(2))["kendall_tau"])


def test_human_labels_are_turned_to_the_canonical_orientation(tmp_path):
    path = write_csv(tmp_path / "h.csv", "name,system_a,system_b,winner\ns1,zeta,alpha,a\ns2,alpha,zeta,tie\n")
    human = T.load_human(path)
    assert human["comparison"].tolist() == ["s1__alpha__vs__zeta", "s2__alpha__vs__zeta"]
    assert human["winner"].tolist() == ["b", "tie"]
    bad = write_csv(tmp_path / "bad.csv", "name,system_a,system_b,winner\ns1,a,b,a1\n")
    with pytest.raises(DataError, match=r"bad\.csv, line 2, column 'winner'"):
        T.load_human(bad)


# --------------------------------------------------------------------------- the v1 demonstration's systems


def test_masking_keeps_the_length_and_removes_the_emotion_words():
    text = "She looks Happy, then anxiety: a happyish sadness."
    masked = D.mask_emotion_words(text)
    assert len(masked) == len(text)
    assert masked == "She looks _____, then _______: a happyish _______."


def test_truncation_keeps_the_first_half_of_the_words():
    assert D.truncate_half("one two three four five") == "one two"
    assert D.truncate_half("single") == "single"


def test_a_judge_that_separates_only_the_shorter_system_is_diagnosed_as_following_length():
    cell = {"judge": "j", "strategy": "-", "input_type": "text", "method": "plain"}
    masked, truncated = (f"{better} > {worse}" for better, worse in D.IMPLIED)
    check = pd.DataFrame([
        {**cell, "relation": masked, "verdict": "tied"}, {**cell, "relation": truncated, "verdict": "separated"},
        {**cell, "judge": "k", "relation": masked, "verdict": "separated"},
        {**cell, "judge": "k", "relation": truncated, "verdict": "separated"},
    ])
    coefs = pd.DataFrame({"judge": ["j", "k"], "strategy": "-", "input_type": "text", "covariate": "length_diff",
                          "coef": [2.0, 0.1], "coef_lo": [1.0, -0.2], "coef_hi": [3.0, 0.4]})
    out = D.judge_diagnosis(check, coefs).set_index("judge")["diagnosis"]
    assert out.to_dict() == {"j": "follows length", "k": "recovers the construction"}


def test_length_alignment_counts_which_system_wrote_the_longer_text():
    table = pd.DataFrame({"name": ["s1", "s1", "s2", "s2"], "system": ["a", "b", "a", "b"],
                          "description": ["long text", "short", "tiny", "tiny"]})
    pairs = T.to_pairs(T.design_pairs(table).pairs, table)
    row = T.length_alignment(pairs).iloc[0]
    assert (row["a_longer"], row["equal"], row["b_longer"]) == (0.5, 0.5, 0.0)


def test_shards_are_deterministic_and_cover_every_comparison_once():
    pairs = T.to_pairs(T.design_pairs(long_table(5)).pairs, long_table(5))
    shards = T.shard_names(pairs.sample(frac=1, random_state=1), 3)
    assert shards == T.shard_names(pairs, 3) and len(shards) == 3
    assert sorted(n for shard in shards for n in shard) == sorted(pairs["name"])


# --------------------------------------------------------------------------- command line


def test_the_command_line_validates_designs_judges_and_ranks(tmp_path, capsys):
    table = long_table(8, systems=("alpha", "beta", "gamma"))
    table.to_csv(tmp_path / "t.csv", index=False)
    out = tmp_path / "tour"
    assert T.main(["validate", str(tmp_path / "t.csv")]) == 0
    assert "every system describes every sample" in capsys.readouterr().out
    assert T.main(["design", str(tmp_path / "t.csv"), "--out", str(out), "--budget", "2", "--seed", "1"]) == 0
    assert T.main(["judge", str(tmp_path / "t.csv"), "--out", str(out), "--judge", "length"]) == 0
    assert T.main(["rank", str(tmp_path / "t.csv"), "--out", str(out), "--n-boot", "50"]) == 0
    board = pd.read_csv(out / "leaderboard.csv")
    plain = board[board["method"] == "plain"].set_index("system")
    assert plain["log_strength"].idxmax() == "alpha"
    assert set(board["method"]) == {"plain", "style_control"}
    assert (out / "length_effect.csv").is_file() and (out / "comparisons.csv").is_file()
    write_csv(tmp_path / "bad.csv", "name,system,description\ns1,alpha,\n")
    assert T.main(["validate", str(tmp_path / "bad.csv")]) == 1
    assert "description is empty" in capsys.readouterr().err


# --------------------------------------------------------------------------- refused inputs (issue 11)


def cli(*argv: object) -> int:
    return T.main([str(a) for a in argv])


def test_the_design_manifest_records_the_table_hash_budget_and_seed(tmp_path):
    table = long_table(6, systems=("alpha", "beta", "gamma"))
    table.to_csv(tmp_path / "t.csv", index=False)
    assert cli("design", tmp_path / "t.csv", "--out", tmp_path / "tour", "--budget", "2", "--seed", "3") == 0
    manifest = json.loads((tmp_path / "tour" / "manifest.json").read_text())
    rows = sorted(zip(table["name"], table["system"], table["description"], strict=True))
    assert manifest["entries_sha256"] == hashlib.sha256(json.dumps(rows).encode()).hexdigest()
    assert (manifest["budget"], manifest["seed"]) == (2, 3)


def test_judging_a_table_with_a_new_system_on_the_old_design_is_refused(tmp_path, capsys):
    table = long_table(6, systems=("alpha", "beta", "gamma"))
    table.to_csv(tmp_path / "t.csv", index=False)
    out = tmp_path / "tour"
    assert cli("design", tmp_path / "t.csv", "--out", out) == 0
    long_table(6, systems=("alpha", "beta", "gamma", "delta")).to_csv(tmp_path / "t.csv", index=False)
    capsys.readouterr()
    assert cli("judge", tmp_path / "t.csv", "--out", out, "--judge", "length") == 1
    err = capsys.readouterr().err
    assert "table changed" in err and "new system(s) delta" in err
    assert f"design {tmp_path / 't.csv'} --out {out} --seed 0 --overwrite" in err and "new --out folder" in err
    assert not (out / "predictions").exists()  # nothing judged on the stale design
    # the way out the message names: redraw, judge, and the new system is on the leaderboard
    assert cli("design", tmp_path / "t.csv", "--out", out, "--overwrite") == 0
    assert cli("judge", tmp_path / "t.csv", "--out", out, "--judge", "length") == 0
    assert cli("rank", tmp_path / "t.csv", "--out", out, "--n-boot", "0") == 0
    assert set(pd.read_csv(out / "leaderboard.csv")["system"]) == {"alpha", "beta", "gamma", "delta"}


def test_ranking_a_changed_table_on_the_old_design_is_refused(tmp_path, capsys):
    long_table(6, systems=("alpha", "beta", "gamma")).to_csv(tmp_path / "t.csv", index=False)
    out = tmp_path / "tour"
    assert cli("judge", tmp_path / "t.csv", "--out", out, "--judge", "length") == 0
    edited = long_table(6, systems=("alpha", "beta", "gamma"))
    edited.loc[0, "description"] = "an edited text"
    edited.to_csv(tmp_path / "t.csv", index=False)
    capsys.readouterr()
    assert cli("rank", tmp_path / "t.csv", "--out", out, "--n-boot", "0") == 1
    err = capsys.readouterr().err
    assert "same systems, but descriptions or samples differ" in err and "--overwrite" in err
    assert not (out / "leaderboard.csv").exists()


def test_judging_with_another_budget_or_seed_than_the_stored_design_is_refused(tmp_path, capsys):
    long_table(6, systems=("alpha", "beta", "gamma", "delta")).to_csv(tmp_path / "t.csv", index=False)
    out = tmp_path / "tour"
    assert cli("design", tmp_path / "t.csv", "--out", out, "--budget", "2", "--seed", "1") == 0
    capsys.readouterr()
    assert cli("judge", tmp_path / "t.csv", "--out", out, "--judge", "length", "--budget", "3") == 1
    err = capsys.readouterr().err
    assert "budget 2 in the design, 3 asked for" in err and "--budget 3 --seed 1 --overwrite" in err
    assert cli("judge", tmp_path / "t.csv", "--out", out, "--judge", "length", "--seed", "2") == 1
    assert "seed 1 in the design, 2 asked for" in capsys.readouterr().err
    assert cli("design", tmp_path / "t.csv", "--out", out) == 1  # redrawing otherwise needs --overwrite
    assert "budget 2 in the design, none (round-robin) asked for" in capsys.readouterr().err
    assert cli("judge", tmp_path / "t.csv", "--out", out, "--judge", "length", "--budget", "2", "--seed", "1") == 0
    assert _rows_written(out) == 2 * 12  # the stored design (12 comparisons), both orders


def test_rank_before_design_is_a_clear_error(tmp_path, capsys):
    long_table(4, systems=("alpha", "beta")).to_csv(tmp_path / "t.csv", index=False)
    assert cli("rank", tmp_path / "t.csv", "--out", tmp_path / "never") == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no design.csv" in err and "design " in err and "Traceback" not in err


def test_a_table_where_no_sample_holds_two_systems_is_refused(tmp_path, capsys):
    path = write_csv(tmp_path / "t.csv", "name,system,description\ns1,alpha,one text\ns2,beta,another text\n")
    for command in (("validate", path), ("design", path, "--out", tmp_path / "tour")):
        assert cli(*command) == 1
        err = capsys.readouterr().err
        assert "no sample has descriptions from two systems" in err and "NaN" not in err
    frame = pd.read_csv(path)
    with pytest.raises(DataError, match="no sample of the table has descriptions from two systems"):
        T.design_pairs(frame)


SLOW_JUDGE = """
import os, time
from helpers.judges.cpu import LengthJudge

class SlowJudge(LengthJudge):
    \"\"\"The length judge, slowly: every batch first notes its process id.\"\"\"

    def predict(self, pairs, *, seed=0):
        with open(os.environ["SLOW_JUDGE_PIDS"], "a") as log:
            log.write(f"{os.getpid()}\\n")
        time.sleep(0.3)
        return super().predict(pairs, seed=seed)
"""


def _processes_marked(marker: str) -> list[int]:
    """Pids of live (not zombie) processes whose environment carries ``marker``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker.encode() in (proc / "environ").read_bytes() and (proc / "stat").read_text().split(") ")[1][0] != "Z":
                found.append(int(proc.name))
        except (OSError, IndexError):
            continue
    return found


def _rows_written(folder: Path) -> int:
    return sum(f.read_bytes().count(b"\n") for f in folder.glob("predictions/*/predictions.jsonl"))


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the workers")
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_killing_judge_with_two_workers_ends_the_workers_too(tmp_path, signum):
    root = Path(__file__).resolve().parents[1]
    project = tmp_path / "project"  # the repository's params plus a slow test-only CPU judge
    shutil.copytree(root / "params", project / "params")
    (project / "pyproject.toml").write_text("")
    (project / "params" / "models" / "slow.yaml").write_text(
        "name: slow\nfamily: cpu\nbackend: cpu\ninput_type: text\nstrategies: ['-']\n"
        "options:\n  judge_class: slow_judge:SlowJudge\n")
    (tmp_path / "slow_judge.py").write_text(SLOW_JUDGE)
    long_table(6, systems=("alpha", "beta", "gamma")).to_csv(tmp_path / "t.csv", index=False)
    marker = f"TOURNAMENT_KILL_TEST={uuid.uuid4().hex}"
    env = {**os.environ, "EMOPREFER_ROOT": str(project), "SLOW_JUDGE_PIDS": str(tmp_path / "pids"),
           "PYTHONPATH": os.pathsep.join([str(root / "src"), str(tmp_path)]), marker.split("=")[0]: marker.split("=")[1]}
    out = tmp_path / "tour"
    parent = subprocess.Popen(
        [sys.executable, "-m", "helpers.tournament", "judge", str(tmp_path / "t.csv"), "--out", str(out),
         "--judge", "slow", "--workers", "2", "--shards", "2", "--rounds", "100"],
        env=env, cwd=tmp_path, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and parent.poll() is None:
            pids = (tmp_path / "pids").read_text().split() if (tmp_path / "pids").is_file() else []
            if len(set(pids)) >= 2 and _rows_written(out) > 0:
                break
            time.sleep(0.2)
        assert parent.poll() is None, parent.stderr.read().decode()
        assert len(set(pids)) == 2, "both workers should be judging before the kill"
        parent.send_signal(signum)
        parent.wait(timeout=30)
        deadline = time.monotonic() + 10
        while _processes_marked(marker) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _processes_marked(marker) == [], "a worker outlived the killed judge"
        rows = _rows_written(out)
        time.sleep(1.5)  # five batches of the slow judge
        assert _rows_written(out) == rows, "rows were written after the judge was killed"
        assert rows < 2 * 2 * 100 * 9  # the kill came mid-run, not after it
        if signum == signal.SIGINT:
            assert parent.returncode == 130 and "Traceback" not in parent.stderr.read().decode()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)  # whatever failed above, leave nothing running
        parent.wait(timeout=30)


# --------------------------------------------------------------------------- the notebook


@pytest.mark.slow
def test_the_tournament_notebook_ranks_the_v1_systems_and_names_the_length_follower(tmp_path):
    import os

    import papermill as pm

    root = Path(__file__).resolve().parents[1]
    real = Path(os.environ.get("EMOPREFER_DATA", root.parent / "shared" / "data" / "emoprefer"))
    if not (real / "preference_emoprefer_with_modelnames.csv").is_file():
        pytest.skip(f"v1 files not found in {real}")
    out = tmp_path / "07_tournament.ipynb"
    pm.execute_notebook(
        root / "notebooks" / "07_tournament.ipynb", out, cwd=root / "notebooks", progress_bar=False,
        parameters={"data_dir": str(real), "reports_dir": str(tmp_path / "reports"),
                    "predictions_dir": str(tmp_path / "predictions"), "n_boot": 100, "judges": ["length", "random"]},
    )
    diagnosis = pd.read_csv(tmp_path / "reports" / "tables" / "tournament_diagnosis.csv").set_index("judge")
    assert diagnosis.loc["length", "diagnosis"] == "follows length"  # masked system: same length -> tie
    board = pd.read_csv(tmp_path / "reports" / "tables" / "tournament_leaderboard.csv")
    assert len(board) == 2 * 2 * 4  # judges x methods x systems
    assert (tmp_path / "reports" / "figures" / "tournament_ratings.png").stat().st_size > 1000
    summary = pd.read_csv(tmp_path / "reports" / "tables" / "tournament_summary.csv").iloc[0]  # the prose's values
    assert "`length`" in summary["follows_length"]


def test_judging_again_after_the_judge_code_changed_is_refused_by_name_unless_overwrite(tmp_path, capsys):
    """A run folder made with other judge code is never resumed into: `judge` names the changed
    field and the way out; `judge --overwrite` moves the folder aside and judges afresh."""
    long_table(6, systems=("alpha", "beta", "gamma")).to_csv(tmp_path / "t.csv", index=False)
    out = tmp_path / "tour"
    assert cli("judge", tmp_path / "t.csv", "--out", out, "--judge", "length") == 0
    (manifest,) = (out / "predictions").glob("*/manifest.json")
    record = json.loads(manifest.read_text())
    record["identity"]["implementation"] = {"source_sha256": {"helpers.judges.cpu": "0" * 64}}
    manifest.write_text(json.dumps(record))
    capsys.readouterr()
    assert cli("judge", tmp_path / "t.csv", "--out", out, "--judge", "length") == 1
    err = capsys.readouterr().err
    assert "implementation" in err and "overwrite" in err
    assert cli("judge", tmp_path / "t.csv", "--out", out, "--judge", "length", "--overwrite") == 0
    assert list((out / "predictions" / ".replaced").iterdir())
    assert cli("rank", tmp_path / "t.csv", "--out", out, "--n-boot", "0") == 0
    with pytest.raises(SystemExit) as usage:  # an adaptive design's batches came from its stored verdicts
        cli("judge", tmp_path / "t.csv", "--out", out, "--judge", "length", "--adaptive", "--overwrite")
    assert usage.value.code == 2
