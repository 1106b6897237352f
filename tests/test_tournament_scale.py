"""Tournaments at challenge scale (issue 20): settings that would silently invert or blank a
leaderboard are refused, a perfectly ordered 100,000-row tournament fits with a prior, the fast
bootstrap finds the same maxima as full Newton steps, and every user error on the command line is
one message with the right exit status."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helpers.stats import bt as S
from helpers.stats.simulate import synthetic_comparisons

# --------------------------------------------------------------------------- the fitter


@pytest.mark.parametrize("settings", [{"prior": -1000.0}, {"prior": float("nan")}, {"n_boot": -5}, {"n_boot": 2.5}])
def test_a_negative_prior_or_bootstrap_count_is_refused_not_fitted(settings):
    comps = synthetic_comparisons([0.0, 1.0, 2.0], 300, seed=1)
    with pytest.raises(S.ComparisonError, match="prior must be|n_boot must be"):
        S.bradley_terry(comps, **{"n_boot": 0, **settings})
    with pytest.raises(S.ComparisonError, match="prior must be|n_boot must be"):
        S.fit_bt(comps, **{"n_boot": 0, **settings})


def test_a_perfectly_ordered_100000_row_tournament_fits_with_a_prior():
    """Ten systems, the longer always wins (a length judge on systems of fixed length): with one
    virtual tie per pair the maximum is finite, though adjacent systems sit ~7 apart and the ends
    more than 50 apart (the old cap refused it, advising the prior it had been given)."""
    systems = [f"sys{k}" for k in range(10)]
    rng = np.random.default_rng(0)
    a = rng.integers(0, 10, 100_000)
    b = (a + rng.integers(1, 10, 100_000)) % 10
    comps = pd.DataFrame({"system_a": np.array(systems)[a], "system_b": np.array(systems)[b],
                          "winner": np.where(a > b, "a", "b"), "length_diff": np.where(a > b, 0.3, -0.3)})
    board = S.bradley_terry(comps, n_boot=0, prior=1.0)
    assert list(board["system"]) == systems[::-1]
    assert board["log_strength"].max() - board["log_strength"].min() > 50
    # the fitted maximum: the score vanishes (independent check of the first-order condition)
    wins = S.aggregate_wins(*S.encode_comparisons(comps, {s: k for k, s in enumerate(systems)}, None),
                            np.ones((1, len(comps))), 10)[0] + 0.5 * (1 - np.eye(10))
    theta = board.set_index("system").loc[systems, "log_strength"].to_numpy()
    p = 1 / (1 + np.exp(theta[None, :] - theta[:, None]))
    assert np.abs(wins.sum(axis=1) - ((wins + wins.T) * p).sum(axis=1)).max() < 1e-6
    style = S.fit_bt(comps, ("length_diff",), n_boot=0, prior=1.0)
    assert np.isfinite(style.ratings["log_strength"]).all()


def test_the_chord_bootstrap_finds_the_same_maxima_as_full_newton_steps():
    comps = synthetic_comparisons(np.linspace(-1, 1, 12), 3000, tie_rate=0.05, seed=3)
    systems = sorted(set(comps["system_a"]) | set(comps["system_b"]))
    i, j, o, w = S.encode_comparisons(comps, {s: k for k, s in enumerate(systems)}, None)
    point = S.aggregate_wins(i, j, o, w, np.ones((1, len(i))), 12)
    theta = S.fit_win_matrices(point, 0, 0.5)[0]
    draws = np.random.default_rng(0).multinomial(len(i), np.full(len(i), 1 / len(i)), size=20).astype(float)
    replicates = S.aggregate_wins(i, j, o, w, draws, 12)
    chord = S.bootstrap_win_matrices(replicates, theta, point[0], 0, 0.5)
    newton = S.fit_win_matrices(replicates, 0, 0.5)
    assert np.abs(chord - newton).max() < 1e-8


# --------------------------------------------------------------------------- the command line

from helpers import tournament as T  # noqa: E402


def table(path, systems=("alpha", "beta", "gamma"), n_samples=6):
    rows = [(f"s{i:02d}", system, " ".join(["calm"] * (3 + 4 * k + i % 3)))
            for i in range(n_samples) for k, system in enumerate(systems)]
    pd.DataFrame(rows, columns=list(T.COLUMNS)).to_csv(path, index=False)
    return path


def cli(*argv: object) -> int:
    return T.main([str(a) for a in argv])


@pytest.mark.parametrize(("argv", "named"), [
    (("design", "--budget", "0"), "argument --budget"),
    (("design", "--seed", "-1"), "argument --seed"),
    (("judge", "--judge", "length", "--rounds", "0"), "argument --rounds"),
    (("judge", "--judge", "length", "--strategy", "S9"), "argument --strategy"),
    (("judge", "--judge", "length", "--shards", "x"), "argument --shards"),
    (("rank", "--prior", "-1000"), "argument --prior"),
    (("rank", "--prior", "nan"), "argument --prior"),
    (("rank", "--n-boot", "-5"), "argument --n-boot"),
])
def test_a_bad_argument_is_one_usage_message_and_exit_2(tmp_path, capsys, argv, named):
    path = table(tmp_path / "t.csv")
    command, *flags = argv
    with pytest.raises(SystemExit) as info:
        cli(command, path, "--out", tmp_path / "tour", *flags)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err
    assert not (tmp_path / "tour").exists()  # refused before any work


def test_out_naming_a_file_is_a_usage_error(tmp_path, capsys):
    path = table(tmp_path / "t.csv")
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(SystemExit) as info:
        cli("design", path, "--out", tmp_path / "file")
    assert info.value.code == 2 and "--out" in capsys.readouterr().err


def test_a_file_that_is_not_parquet_is_bad_data_named_not_a_traceback(tmp_path, capsys):
    (tmp_path / "t.parquet").write_text("name,system,description\n")
    assert cli("validate", tmp_path / "t.parquet") == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 't.parquet'}: is not a readable Parquet file" in err and "Traceback" not in err


def drawn(tmp_path):
    path = table(tmp_path / "t.csv")
    assert cli("design", path, "--out", tmp_path / "tour", "--budget", "2", "--seed", "1") == 0
    return path, tmp_path / "tour"


@pytest.mark.parametrize("command", ["judge", "rank"])
def test_a_truncated_design_is_refused_by_its_hash(tmp_path, capsys, command):
    path, out = drawn(tmp_path)
    lines = (out / "design.csv").read_text().splitlines(keepends=True)
    (out / "design.csv").write_text("".join(lines[:5]))
    capsys.readouterr()
    extra = ("--judge", "length") if command == "judge" else ()
    assert cli(command, path, "--out", out, *extra) == 1
    err = capsys.readouterr().err
    assert "design.csv was changed after it was drawn" in err and "4 rows, the manifest records 12" in err
    assert "--overwrite" in err and not (out / "predictions").exists()


def test_an_edited_design_row_is_refused_by_its_hash(tmp_path, capsys):
    path, out = drawn(tmp_path)
    text = (out / "design.csv").read_text()
    (out / "design.csv").write_text(text.replace("alpha,beta", "beta,alpha", 1))
    assert cli("rank", path, "--out", out) == 1
    assert "changed after it was drawn" in capsys.readouterr().err


@pytest.mark.parametrize(("content", "says"), [("{not json", "not valid JSON"), ("[1, 2]", "expected a JSON object"),
                                               (None, "has no manifest.json")])
def test_a_corrupt_or_missing_manifest_is_refused_with_the_redraw(tmp_path, capsys, content, says):
    path, out = drawn(tmp_path)
    if content is None:
        (out / "manifest.json").unlink()
    else:
        (out / "manifest.json").write_text(content)
    capsys.readouterr()
    assert cli("judge", path, "--out", out, "--judge", "length") == 1
    err = capsys.readouterr().err
    assert says in err and "--overwrite" in err and "Traceback" not in err


def test_the_design_is_written_before_its_manifest_and_records_its_hash(tmp_path):
    import hashlib
    import json

    _, out = drawn(tmp_path)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["design_sha256"] == hashlib.sha256((out / "design.csv").read_bytes()).hexdigest()
    assert (out / "manifest.json").stat().st_mtime_ns >= (out / "design.csv").stat().st_mtime_ns
    assert not list(out.glob(".*.tmp"))


def test_real_system_names_are_display_names_with_safe_ids(tmp_path, capsys):
    systems = ("videochat(emb)", "Qwen/Qwen2.5-Omni-7B", "GPT-4o (2024-08-06)", "GPT-4o 2024-08-06")
    path = table(tmp_path / "t.csv", systems=systems)
    ids = [T.system_id(s) for s in systems]
    assert len(set(ids)) == 4 and all(T.SAFE_ID.fullmatch(i) and "__" not in i for i in ids)
    assert T.system_id("alpha-1.5") == "alpha-1.5"  # a safe name is its own id
    out = tmp_path / "my tournament"  # a folder name with a space names run folders safely too
    assert cli("judge", path, "--out", out, "--judge", "length") == 0
    assert cli("rank", path, "--out", out, "--n-boot", "20") == 0
    board = pd.read_csv(out / "leaderboard.csv")
    assert set(board["system"]) == set(systems)
    plain = board[board["method"] == "plain"].set_index("system")["log_strength"]
    assert list(plain.sort_values().index) == list(systems)  # the length judge: the longest wins
    assert "GPT-4o (2024-08-06)" in capsys.readouterr().out


# --------------------------------------------------------------------------- adaptive design


def test_flip_probability_is_the_normal_tail_of_the_difference_over_its_se():
    theta = np.array([0.0, 1.0, 1.2])
    cov = np.array([[0.0, 0, 0], [0, 0.04, 0.01], [0, 0.01, 0.05]])
    i, j, flip = S.flip_probabilities(theta, cov)
    from scipy.stats import norm
    assert list(zip(i, j, strict=True)) == [(0, 1), (0, 2), (1, 2)]
    assert flip == pytest.approx([norm.sf(1 / 0.2), norm.sf(1.2 / np.sqrt(0.05)), norm.sf(0.2 / np.sqrt(0.07))])
    assert not S.adjacent_separated(theta, cov) and S.adjacent_separated(theta * 10, cov)


def test_adaptive_pairs_go_to_close_systems_and_repeat_with_the_seed():
    theta = np.array([0.0, 0.05, 3.0, 6.0])
    cov = np.eye(4) * 0.02
    cov[0, 0] = 0
    i, j = S.adaptive_pairs(theta, cov, 2000, np.random.default_rng(1))
    close = np.mean((i == 0) & (j == 1))
    assert close > 0.9  # the only pair whose order is uncertain, beside 5% uniform exploration
    again = S.adaptive_pairs(theta, cov, 2000, np.random.default_rng(1))
    assert (again[0] == i).all() and (again[1] == j).all()


def test_comparisons_to_reach_interpolates_between_batches():
    from helpers.stats.simulate import comparisons_to_reach

    curve = pd.DataFrame({"n_systems": 10, "design": ["uniform"] * 3 + ["adaptive"] * 3,
                          "n_comparisons": [100, 200, 300] * 2, "tau_mean": [0.5, 0.8, 0.95, 0.85, 0.95, 0.99]})
    row = comparisons_to_reach(curve, 0.9).iloc[0]
    assert row["uniform"] == pytest.approx(200 + 100 * 0.1 / 0.15)
    assert row["adaptive"] == pytest.approx(150)
    assert row["ratio_uniform_to_adaptive"] == pytest.approx(row["uniform"] / 150)


def test_in_simulation_the_adaptive_design_ranks_10_systems_better_for_the_same_comparisons():
    from helpers.stats.simulate import adaptive_vs_uniform

    curve = adaptive_vs_uniform((10,), 0.6732, 0.7909, batches={10: (250, 8)}, n_reps=4, seed=2)
    last = curve[curve["n_comparisons"] == 2000].set_index("design")["tau_mean"]
    assert last["adaptive"] > last["uniform"]


def adaptive_table(path, n_samples=40, n_systems=5):
    rng = np.random.default_rng(0)
    rows = [(f"v{i:03d}", f"sys{k}", " ".join(["word"] * int(5 + 3 * k + rng.integers(0, 12))))
            for i in range(n_samples) for k in range(n_systems)]
    pd.DataFrame(rows, columns=list(T.COLUMNS)).to_csv(path, index=False)
    return path


def stored_rows(out) -> int:
    from helpers.run.store import read_predictions

    return len(read_predictions(out / "predictions"))


def test_adaptive_judging_records_every_batch_resumes_and_repeats_from_the_seed(tmp_path, capsys):
    import json

    path = adaptive_table(tmp_path / "t.csv")
    flags = ("--judge", "length", "--adaptive", "--batch-size", "30", "--max-comparisons", "150")
    assert cli("judge", path, "--out", tmp_path / "a", *flags) == 0
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    design = pd.read_csv(tmp_path / "a" / "design.csv")
    assert manifest["design"] == "adaptive" and manifest["stopped"] in ("separated", "budget")
    assert [b["rule"] for b in manifest["batches"]] == ["uniform"] + ["adaptive"] * (len(manifest["batches"]) - 1)
    assert design.groupby("batch").size().tolist() == [b["n_comparisons"] for b in manifest["batches"]]
    assert len(design) <= 150 and not design["comparison"].duplicated().any()
    rows = stored_rows(tmp_path / "a")
    assert rows == 2 * len(design)  # both orders, once each
    assert cli("judge", path, "--out", tmp_path / "a", *flags) == 0  # a re-run judges nothing again
    assert stored_rows(tmp_path / "a") == rows
    assert cli("judge", path, "--out", tmp_path / "b", *flags) == 0  # the same seed draws the same batches
    assert (tmp_path / "a" / "design.csv").read_bytes() == (tmp_path / "b" / "design.csv").read_bytes()
    assert cli("rank", path, "--out", tmp_path / "a", "--n-boot", "0") == 0
    capsys.readouterr()
    assert cli("judge", path, "--out", tmp_path / "a", *flags[:-1], "200") == 1  # other settings: refused
    assert "max_comparisons 150 in the design, 200 asked for" in capsys.readouterr().err


def test_an_adaptive_run_killed_mid_batch_resumes_to_the_same_design(tmp_path, monkeypatch):
    from helpers.tournament import judge as J

    path = adaptive_table(tmp_path / "t.csv")
    flags = ("--judge", "length", "--adaptive", "--batch-size", "30", "--max-comparisons", "150")
    assert cli("judge", path, "--out", tmp_path / "whole", *flags) == 0
    real, calls = J.judge_tournament, []

    def dies_on_the_third_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(J, "judge_tournament", dies_on_the_third_batch)
    assert cli("judge", path, "--out", tmp_path / "killed", *flags) == 130
    monkeypatch.setattr(J, "judge_tournament", real)
    assert cli("judge", path, "--out", tmp_path / "killed", *flags) == 0
    assert (tmp_path / "killed" / "design.csv").read_bytes() == (tmp_path / "whole" / "design.csv").read_bytes()
    assert stored_rows(tmp_path / "killed") == stored_rows(tmp_path / "whole")


@pytest.mark.parametrize(("extra", "named"), [(("--judge", "random"), "exactly one --judge"),
                                              (("--budget", "2"), "--budget: not allowed with --adaptive")])
def test_adaptive_judging_needs_one_judge_and_no_budget(tmp_path, capsys, extra, named):
    path = adaptive_table(tmp_path / "t.csv")
    with pytest.raises(SystemExit) as info:
        cli("judge", path, "--out", tmp_path / "a", "--judge", "length", "--adaptive", *extra)
    assert info.value.code == 2 and named in capsys.readouterr().err


# --------------------------------------------------------------------------- learned judges


def labelled_training(path, n=40, seed=1):
    rng = np.random.default_rng(seed)
    words = "she he sounds looks angry calm tense happy sad frowning smiling voice face eyes trembling".split()

    def text(k):
        return " ".join(rng.choice(words, k))

    rows = []
    for i in range(n):
        long, short = text(int(rng.integers(12, 25))), text(int(rng.integers(2, 5)))
        rows.append((f"p{i}", long, short, "a1") if rng.random() < 0.5 else (f"p{i}", short, long, "a2"))
    pd.DataFrame(rows, columns=["name", "a1", "a2", "preference"]).to_csv(path, index=False)
    return path


def test_a_learned_judge_trains_on_labelled_pairs_then_judges_the_tournament(tmp_path, capsys):
    """minilm_rm on an unlabelled tournament: it fits on the named labelled table (where the
    longer text always wins) and ranks the systems by length; its run folders carry the
    training data's digest (another training table, other runs)."""
    from helpers.tournament.judge import pairs_digest, training_pairs

    path = table(tmp_path / "t.csv", systems=("short", "medium", "long"), n_samples=4)
    train = labelled_training(tmp_path / "train.csv")
    out = tmp_path / "tour"
    assert cli("judge", path, "--out", out, "--judge", "minilm_rm", "--train", train) == 0
    assert "train on" in capsys.readouterr().out
    digest = pairs_digest(training_pairs(str(train)))
    folders = [p.name for p in (out / "predictions").iterdir()]
    assert len(folders) == 1 and f".t{digest}.s0of1" in folders[0]
    assert cli("rank", path, "--out", out, "--n-boot", "0") == 0
    plain = pd.read_csv(out / "leaderboard.csv").query("method == 'plain'").set_index("system")["log_strength"]
    assert plain.idxmax() == "long" and plain.idxmin() == "short"


def test_a_training_table_without_labels_is_refused_naming_it(tmp_path, capsys):
    path = table(tmp_path / "t.csv")
    bad = tmp_path / "train.csv"
    bad.write_text("name,a1,a2,preference\np1,x,y,maybe\n")
    assert cli("judge", path, "--out", tmp_path / "tour", "--judge", "minilm_rm", "--train", bad) == 1
    err = capsys.readouterr().err
    assert f"training table {bad}" in err and "'maybe' is not a1, a2 or same" in err


@pytest.mark.slow
def test_the_adaptive_notebook_writes_its_table_and_labelled_figure(tmp_path):
    """notebooks/07a_adaptive.ipynb under papermill with 20 seeds of short simulated designs: the
    table the report quotes holds three spreads x two sizes, each over 20 seeds."""
    import json
    import os
    from pathlib import Path

    import papermill as pm

    from helpers import data

    if not os.environ.get(data.DATA_ENV):
        pytest.skip(f"${data.DATA_ENV} not set (the paper table names the best judge)")
    notebooks = Path(__file__).resolve().parents[1] / "notebooks"
    out = tmp_path / "07a.ipynb"
    pm.execute_notebook(str(notebooks / "07a_adaptive.ipynb"), str(out), cwd=str(notebooks), progress_bar=False,
                        kernel_name="python3", parameters={"reports_dir": str(tmp_path), "sim_batches": 3})
    table = pd.read_csv(tmp_path / "tables" / "adaptive_design.csv")
    assert sorted(zip(table["n_systems"], table["spread"], strict=True)) == sorted(
        (m, s) for m in (10, 50) for s in ("close", "paper-like", "far"))
    assert (table["seeds"] >= 20).all()
    assert (table["accuracy"] == 0.6732).all() and (table["swap_consistency"] == 0.7909).all()
    real = pd.read_csv(tmp_path / "tables" / "adaptive_real.csv").set_index("design")
    assert real.loc["adaptive", "comparisons"] < real.loc["round_robin", "comparisons"]
    assert (real["run_folders"] == 1).all() and (real["judge_calls"] == 2 * real["comparisons"]).all()
    assert (tmp_path / "figures" / "adaptive_design.png").is_file()
    sources = ["".join(c["source"]) for c in json.loads(out.read_text())["cells"]]
    assert any("#| label: fig-adaptive" in s and "#| fig-cap:" in s and "#| fig-alt:" in s for s in sources)
