"""Issue 27: ranks that do not depend on the reference system, no leaderboard from too few
bootstrap replicates or from an unfinished judge, and clear errors for the inputs that used to
pass silently or end in a traceback."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import tournament as T
from helpers.data import DataError
from helpers.stats import bt as S
from helpers.stats.simulate import synthetic_comparisons


def comparisons_with_length(seed: int = 1) -> pd.DataFrame:
    table = synthetic_comparisons([0.0, 0.1, 0.15, 0.5, 0.52, 1.0], 600, tie_rate=0.1, seed=seed)
    table["length_diff"] = np.random.default_rng(seed).uniform(-1, 1, len(table))
    return table


def ratings(method: str, reference: str) -> pd.DataFrame:
    table = comparisons_with_length()
    if method == "plain":
        board = S.bradley_terry(table, n_boot=200, seed=3, reference=reference, prior=1.0)
    else:
        board = S.fit_bt(table, ("length_diff",), n_boot=200, seed=3, reference=reference, prior=1.0).ratings
    return board.set_index("system").sort_index()


@pytest.mark.parametrize("method", ["plain", "style_control"])
def test_another_reference_shifts_every_rating_and_bound_by_one_constant_and_keeps_the_ranks(method):
    first, second = ratings(method, "s00"), ratings(method, "s05")
    shift = second.loc["s00", "rating"] - first.loc["s00", "rating"]
    assert abs(shift) > 50  # the anchor really moved
    for column in ("rating", "rating_lo", "rating_hi"):
        np.testing.assert_allclose(second[column] - first[column], shift, atol=1e-6)
    assert first["rank"].tolist() == second["rank"].tolist()
    assert first["rank"].nunique() > 1  # the data separate some systems: the ranks are not all 1
    # the reference has an interval like any other system, not a zero-width anchor
    assert (first["rating_hi"] - first["rating_lo"]).min() > 1


def test_rank_is_one_plus_the_systems_that_win_in_at_least_97_5_percent_of_replicates():
    # hand-made replicates: b above a in 98/100, c above a in 90/100, c vs b even
    rng = np.random.default_rng(0)
    boot = np.zeros((100, 3))
    boot[:, 1] = np.where(np.arange(100) < 98, 1.0, -1.0)
    boot[:, 2] = np.where(np.arange(100) < 90, 1.0, -1.0) + rng.normal(0, 1e-3, 100)
    lo, hi, rank = S.reference_free_summary(np.array([0.0, 1.0, 1.0]), boot, 0.95)
    assert rank.tolist() == [2, 1, 1]


def test_an_interval_never_excludes_its_own_point_estimate():
    # replicates all on one side of the point (a skewed bootstrap): the bound is widened to the point
    point = np.array([0.0, 1.0, 2.0])
    boot = np.tile([0.0, 3.0, 2.5], (200, 1)) + np.random.default_rng(1).normal(0, 0.01, (200, 3))
    lo, hi, _ = S.reference_free_summary(point, boot, 0.95)
    assert (lo <= point).all() and (point <= hi).all()
    for seed in range(5):  # and on fitted data
        board = S.bradley_terry(synthetic_comparisons([0, 0.2, 2.0], 15, seed=seed), n_boot=100, seed=seed, prior=0.5)
        assert (board["log_strength_lo"] <= board["log_strength"]).all()
        assert (board["log_strength"] <= board["log_strength_hi"]).all()


@pytest.mark.parametrize("n_boot", [0, 1, S.MIN_RANK_BOOT - 1])
def test_too_few_replicates_withhold_ranks_and_intervals(n_boot):
    board = S.bradley_terry(comparisons_with_length(), n_boot=n_boot)
    assert board["rank"].isna().all() and board["rating_lo"].isna().all()
    assert str(S.MIN_RANK_BOOT) in board.attrs["ranks_withheld"]
    fit = S.fit_bt(comparisons_with_length(), ("length_diff",), n_boot=n_boot)
    assert fit.ratings["rank"].isna().all()


# --------------------------------------------------------------------------- the command line


def cli(*argv: object) -> int:
    return T.main([str(a) for a in argv])


def table(path: Path, systems=("alpha", "beta", "gamma"), n_samples: int = 8) -> Path:
    rows = [(f"s{i:02d}", system, " ".join(["calm"] * (3 + 4 * k + i % 3)))
            for i in range(n_samples) for k, system in enumerate(systems)]
    pd.DataFrame(rows, columns=["name", "system", "description"]).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("n_boot", ["0", "1"])
def test_rank_with_too_few_replicates_prints_no_ranked_leaderboard(tmp_path, capsys, n_boot):
    path = table(tmp_path / "t.csv")
    out = tmp_path / "tour"
    assert cli("judge", path, "--out", out, "--judge", "length") == 0
    capsys.readouterr()
    assert cli("rank", path, "--out", out, "--n-boot", n_boot) == 0
    printed = capsys.readouterr().out
    assert "ranks and intervals withheld" in printed and " rank " not in printed.splitlines()[1]
    assert pd.read_csv(out / "leaderboard.csv")["rank"].isna().all()


def test_rank_refuses_an_unfinished_judge_naming_the_shards_and_partial_labels_every_output(tmp_path, capsys):
    path = table(tmp_path / "t.csv")
    out = tmp_path / "tour"
    assert cli("judge", path, "--out", out, "--judge", "length", "--shards", "3") == 0
    # as if killed after the first shard: the other shards' run folders never got written
    runs = sorted(p for p in (out / "predictions").iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(runs) == 3
    for run in runs:
        if not run.name.endswith("s0of3"):
            for child in run.iterdir():
                child.unlink()
            run.rmdir()
    capsys.readouterr()
    assert cli("rank", path, "--out", out, "--n-boot", "0") == 1
    err = capsys.readouterr().err
    assert "shard(s) s1of3, s2of3" in err and "16 of 24 comparisons have no verdict" in err
    assert f"judge {path} --out {out} --judge length" in err and "--partial" in err
    assert not (out / "leaderboard.csv").exists()
    assert cli("rank", path, "--out", out, "--n-boot", "0", "--partial") == 0
    assert "PARTIAL" in capsys.readouterr().out
    for name in ("comparisons", "leaderboard", "length_effect"):
        assert set(pd.read_csv(out / f"{name}.csv")["partial"]) == {"partial: 8 of 24"}
    assert cli("judge", path, "--out", out, "--judge", "length", "--shards", "3") == 0  # the named way out
    assert cli("rank", path, "--out", out, "--n-boot", "0") == 0
    assert "partial" not in pd.read_csv(out / "leaderboard.csv").columns


@pytest.mark.parametrize("level", ["5", "1", "inf", "nan", "0.4"])
def test_a_confidence_level_outside_half_to_one_is_a_usage_error(tmp_path, capsys, level):
    path = table(tmp_path / "t.csv")
    with pytest.raises(SystemExit) as stop:
        cli("judge", path, "--out", tmp_path / "o", "--judge", "length", "--adaptive", "--level", level)
    assert stop.value.code == 2 and "argument --level" in capsys.readouterr().err


def test_out_under_a_file_is_a_usage_error(tmp_path, capsys):
    path = table(tmp_path / "t.csv")
    with pytest.raises(SystemExit) as stop:
        cli("design", path, "--out", path / "sub" / "tour")
    assert stop.value.code == 2 and "is a file" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_out_is_a_clear_error_not_a_traceback(tmp_path, capsys):
    path = table(tmp_path / "t.csv")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert cli("design", path, "--out", locked / "tour") == 1
    finally:
        locked.chmod(0o700)
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err


def test_rank_writes_each_output_whole_or_not_at_all(tmp_path, monkeypatch, capsys):
    path = table(tmp_path / "t.csv")
    out = tmp_path / "tour"
    assert cli("judge", path, "--out", out, "--judge", "length") == 0
    assert cli("rank", path, "--out", out, "--n-boot", "0") == 0
    before = (out / "comparisons.csv").read_bytes()
    real_replace = os.replace

    def disk_full(src, dst):
        raise OSError(28, "No space left on device", str(dst))

    monkeypatch.setattr(os, "replace", disk_full)
    assert cli("rank", path, "--out", out, "--n-boot", "0", "--seed", "1") == 1
    monkeypatch.setattr(os, "replace", real_replace)
    assert "disk is full" in capsys.readouterr().err
    assert (out / "comparisons.csv").read_bytes() == before
    assert not list(out.glob("*.tmp"))
    json.loads((out / "manifest.json").read_text())


def test_conflicting_duplicate_human_labels_are_refused_naming_the_lines(tmp_path):
    path = tmp_path / "human.csv"
    path.write_text("name,system_a,system_b,winner\ns01,alpha,beta,a\ns01,beta,alpha,a\ns02,alpha,beta,b\ns01,alpha,beta,a\n")
    with pytest.raises(DataError) as caught:
        T.load_human(path)
    message = str(caught.value)
    assert "3 rows label the same comparison" in message and "line 2" in message and "line 3" in message


@pytest.mark.parametrize(("first", "twin"), [("gpt", "gpt "), ("gpt", "g\u200bpt"), ("gpt", " gpt"),
                                             ("caf\u00e9", "cafe\u0301")])
def test_system_names_that_print_alike_are_refused(tmp_path, capsys, first, twin):
    path = tmp_path / "t.csv"
    rows = [(f"s{i}", system, f"text {i} {k}") for i in range(3) for k, system in enumerate((first, twin, "other"))]
    pd.DataFrame(rows, columns=["name", "system", "description"]).to_csv(path, index=False)
    assert cli("validate", path) == 1
    assert f"prints like system {first!r}" in capsys.readouterr().err


def training_file(path: Path, n: int) -> Path:
    rows = [(f"t{i}", "a long calm text " * (1 + i % 3), "short", "a1" if i % 2 else "a2") for i in range(n)]
    pd.DataFrame(rows, columns=["name", "a1", "a2", "preference"]).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("n", [1, 4])
def test_a_training_table_too_small_to_cross_fit_is_bad_data_not_a_traceback(tmp_path, capsys, n):
    path = table(tmp_path / "t.csv")
    train = training_file(tmp_path / "train.csv", n)
    assert cli("judge", path, "--out", tmp_path / "o", "--judge", "minilm_rm", "--train", train) == 1
    err = capsys.readouterr().err
    assert "needs at least 20 decided pairs" in err and "Traceback" not in err


def test_a_training_file_that_is_not_parquet_is_named(tmp_path, capsys):
    path = table(tmp_path / "t.csv")
    fake = tmp_path / "train.parquet"
    fake.write_text("name,a1,a2,preference\n")
    assert cli("judge", path, "--out", tmp_path / "o", "--judge", "minilm_rm", "--train", fake) == 1
    assert "not a readable Parquet file" in capsys.readouterr().err


def test_the_offline_training_error_names_data_dir(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("EMOPREFER_DATA", str(tmp_path / "nowhere"))
    path = table(tmp_path / "t.csv")
    assert cli("judge", path, "--out", tmp_path / "o", "--judge", "minilm_rm", "--data-dir", tmp_path / "empty") == 1
    err = capsys.readouterr().err
    assert "--data-dir" in err and "Traceback" not in err


def test_training_and_judged_texts_in_different_scripts_are_flagged():
    from helpers.tournament.judge import script_mismatch

    english = pd.DataFrame({"a1": ["a calm and happy face"] * 3, "a2": ["an angry voice"] * 3})
    assert script_mismatch(english, ["他看起来很平静，语气温和。"] * 4) is not None
    assert script_mismatch(english, ["she smiles warmly"] * 4) is None


# --------------------------------------------------------------------------- adaptive designs


def tied_length_table(path: Path, n_samples: int = 60) -> Path:
    """Four systems; 'twin_a' and 'twin_b' write texts of identical length on every sample, so the
    length judge ties them every time and no number of comparisons separates them."""
    rows = []
    for i in range(n_samples):
        for system, words in (("short", 3), ("twin_a", 8), ("twin_b", 8), ("long", 14)):
            rows.append((f"v{i:03d}", system, " ".join([system[:4]] * (words + i % 4))))
    pd.DataFrame(rows, columns=["name", "system", "description"]).to_csv(path, index=False)
    return path


def test_adaptive_design_keeps_its_batch_size_writes_one_run_folder_and_records_its_judge(tmp_path, capsys):
    path = tied_length_table(tmp_path / "t.csv")
    out = tmp_path / "tour"
    flags = ("--adaptive", "--batch-size", "12", "--max-comparisons", "360")
    assert cli("judge", path, "--out", out, "--judge", "length", *flags) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    sizes = [b["n_comparisons"] for b in manifest["batches"]]
    assert len(sizes) >= 2 and all(size == 12 for size in sizes[:-1]), sizes
    assert manifest["stopped"] in ("futile", "budget", "exhausted")  # twins never separate
    assert manifest["judge"] == "length" and manifest["rounds"] == 1
    runs = [p for p in (out / "predictions").iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(runs) == 1, [p.name for p in runs]  # one run folder for the whole design, not one per batch
    design = pd.read_csv(out / "design.csv")
    assert not design["comparison"].duplicated().any() and len(design) == sum(sizes)
    assert cli("rank", path, "--out", out, "--n-boot", "0") == 0
    capsys.readouterr()
    assert cli("judge", path, "--out", out, "--judge", "random", *flags) == 1  # another judge: refused
    err = capsys.readouterr().err
    assert "judge length in the design, random asked for" in err and "new\n--out" not in err and "--out folder" in err
    assert "--batch_size" not in err  # the hint names only flags that exist


def test_the_futile_rule_stops_when_no_pair_left_open_could_be_separated():
    theta = np.array([0.0, 0.0, 3.0])
    cov = np.diag([0.0, 0.01, 0.01])
    # pairs (0,1) open and equal: never separable; (0,2), (1,2) separated already
    assert not S.separable_pairs(theta, cov, np.array([1000, 1000, 1000])).any()
    close = np.array([0.0, 0.2, 3.0])
    assert S.separable_pairs(close, np.diag([0.0, 0.05, 0.05]), np.array([1000, 0, 0]))[0]
    assert not S.separable_pairs(close, np.diag([0.0, 0.05, 0.05]), np.array([2, 0, 0]))[0]


# --------------------------------------------------------------------------- the saving, measured over seeds


def test_the_saving_table_has_a_median_and_intervals_over_20_seeds_for_each_spread_and_size():
    from helpers.stats import simulate

    short = {key: (size // 10, 4) for key, (size, _) in simulate.HORIZONS.items()}
    per_seed = simulate.adaptive_savings(0.9, 1.0, n_seeds=20, target=0.5, horizons=short)
    summary = simulate.saving_summary(per_seed)
    assert sorted(zip(summary["n_systems"], summary["spread"], strict=True)) == sorted(
        (m, s) for m in (10, 50) for s in ("close", "paper-like", "far"))
    assert (summary["seeds"] == 20).all()
    for row in summary.itertuples():
        saving = per_seed[(per_seed["n_systems"] == row.n_systems) & (per_seed["spread"] == row.spread)]["saving"].dropna()
        if len(saving):  # checked against numpy on the seeds' own savings
            assert row.saving_median == pytest.approx(np.median(saving))
            assert (row.saving_lo, row.saving_hi) == pytest.approx(tuple(np.quantile(saving, [0.025, 0.975])))
            assert row.median_ci_lo <= row.saving_median <= row.median_ci_hi
    # a seed's tournament does not depend on the seeds run beside it
    alone = simulate.design_runs(np.linspace(-1, 1, 10), 20, 3, 0.9, 1.0, True, [7])
    among = simulate.design_runs(np.linspace(-1, 1, 10), 20, 3, 0.9, 1.0, True, [3, 7])
    np.testing.assert_allclose(alone[0], among[1])


# --------------------------------------------------------------------------- style control says what it explains


def test_the_deviance_is_twice_the_log_loss_of_the_fitted_probabilities():
    from sklearn.metrics import log_loss

    from helpers.tournament.rank import _deviance

    table = synthetic_comparisons([0.0, 0.4, 1.0], 300, seed=2)
    table["length_diff"] = np.random.default_rng(2).uniform(-1, 1, len(table))
    strength = pd.Series({"s00": 0.0, "s01": 0.3, "s02": 0.9})
    eta = table["system_a"].map(strength) - table["system_b"].map(strength) + 0.7 * table["length_diff"]
    p = 1 / (1 + np.exp(-eta))
    expected = 2 * len(table) * log_loss((table["winner"] == "a").astype(int), p, labels=[0, 1])
    assert _deviance(table, strength, 0.7, "length_diff") == pytest.approx(expected)


@pytest.mark.parametrize("style", ["linear", "log-length"])
def test_rank_reports_the_covariate_its_fit_and_flags_a_pure_length_judge_above_the_table(tmp_path, capsys, style):
    path = table(tmp_path / "t.csv")
    out = tmp_path / "tour"
    assert cli("judge", path, "--out", out, "--judge", "length") == 0
    capsys.readouterr()
    assert cli("rank", path, "--out", out, "--n-boot", "100", "--style", style) == 0
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    assert lines[0].startswith("note: judge length (-) picks the longer text in 100%")
    covariate = {"linear": "length_diff", "log-length": "log_length_ratio"}[style]
    assert f"style control ({style}: {covariate})" in printed
    effect = pd.read_csv(out / "length_effect.csv").iloc[0]
    assert effect["covariate"] == covariate and effect["style"] == style
    assert effect["coef_lo"] <= effect["coef"] <= effect["coef_hi"]
    assert effect["deviance_style"] <= effect["deviance_plain"] and effect["longer_rule_agreement"] == 1.0


@pytest.mark.parametrize(("field", "value", "says"), [("seed", "0", "field 'seed' is '0', not a int"),
                                                       ("design", "lucky", "not one of round_robin"),
                                                       ("surprise", 1, "unknown field 'surprise'")])
def test_the_design_manifest_is_a_typed_record_and_a_wrong_field_is_named(tmp_path, capsys, field, value, says):
    path = table(tmp_path / "t.csv")
    out = tmp_path / "tour"
    assert cli("design", path, "--out", out) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    manifest[field] = value
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert cli("rank", path, "--out", out) == 1
    err = capsys.readouterr().err
    assert says in err and "--overwrite" in err and "Traceback" not in err


def test_the_redraw_hint_is_a_command_that_runs(tmp_path, capsys):
    import re
    import shlex

    path = table(tmp_path / "t.csv")
    out = tmp_path / "tour"
    assert cli("design", path, "--out", out, "--budget", "2", "--seed", "1") == 0
    capsys.readouterr()
    assert cli("judge", path, "--out", out, "--judge", "length", "--budget", "3") == 1
    hint = re.search(r"'python -m helpers\.tournament (design [^']+)'", capsys.readouterr().err).group(1)
    assert cli(*shlex.split(hint)) == 0  # the hint parses and redraws
    assert cli("judge", path, "--out", out, "--judge", "length", "--budget", "3") == 0
