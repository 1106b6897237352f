"""Two-class answers and a challenge submission (``python -m helpers.submit``).

The rule: a1 and a2 votes over both orders and every round (and every judge of a vote) pooled,
'same' abstaining; a tie goes to the first judge in rank order that is not tied, else to a coin
seeded by the pair's key. The submission has one row per pair, in the pair file's order."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score

from helpers import submit
from helpers.data import DataError
from helpers.run import engine
from helpers.stats.voting import seeded_coin, two_class_answers


def test_majority_then_next_judge_then_seeded_coin_then_no_answer():
    first = np.array([[0, 0, 1, 2],       # p0: a1 2 : a2 1 from judge 1
                      [0, 1, 2, 2],       # p1: judge 1 tied 1:1
                      [2, 2, 2, 2],       # p2: only 'same'
                      [-1, -1, -1, -1]])  # p3: nobody answered
    second = np.array([[1, 1], [2, 2], [2, 2], [-1, -1]])
    out = two_class_answers([first, second], ["p0", "p1", "p2", "p3"], seed=7)
    # p0 pooled over both judges: a1 2, a2 3 -> a2 by majority (the second judge's votes count too)
    assert list(out["a1_votes"]) == [2, 1, 0, 0] and list(out["a2_votes"]) == [3, 1, 0, 0]
    assert out.loc[0, "answer"] == "a2" and out.loc[0, "decided_by"] == "majority"
    assert out.loc[1, "decided_by"] == "seeded coin"  # judge 1 tied 1:1, judge 2 only 'same'
    coin = "a1" if hashlib.sha256(b"7|p1").digest()[0] % 2 == 0 else "a2"
    assert out.loc[1, "answer"] == coin
    assert out.loc[2, "decided_by"] == "seeded coin" and out.loc[3, "decided_by"] == "no answer"
    assert pd.isna(out.loc[3, "answer"])


def test_a_tie_goes_to_the_first_judge_in_rank_order_that_is_not_tied():
    first = np.array([[0, 1]])   # tied
    second = np.array([[1, 1]])  # a2
    third = np.array([[0, 0, 0]])  # would win a pooled majority alone; here pooled is a1 4 : a2 3 -> majority
    out = two_class_answers([first, second], ["p"], seed=0)
    assert out.loc[0, "answer"] == "a2" and out.loc[0, "decided_by"] == "majority"  # pooled 1:3
    tied_pool = two_class_answers([first, np.array([[0, 1]]), np.array([[1, 2]]), np.array([[0, 2]])], ["p"])
    assert tied_pool.loc[0, "a1_votes"] == tied_pool.loc[0, "a2_votes"] == 3
    assert tied_pool.loc[0, "answer"] == "a2" and tied_pool.loc[0, "decided_by"] == "judge 3"
    assert two_class_answers([third], ["p"]).loc[0, "answer"] == "a1"


def test_the_coin_depends_on_seed_and_key_only():
    keys = [f"k{i}" for i in range(64)]
    coin = seeded_coin(keys, 3)
    assert list(seeded_coin(keys[::-1], 3)) == list(coin[::-1])
    assert set(coin) == {"a1", "a2"} and list(seeded_coin(keys, 4)) != list(coin)


def _file(tmp_path, labelled=True, n=8):
    rng = np.random.default_rng(1)
    table = pd.DataFrame({"name": ["v0", "v0"] + [f"v{i}" for i in range(2, n)],
                          "a1": ["word " * int(k) for k in rng.integers(1, 30, n)],
                          "a2": ["text " * int(k) for k in rng.integers(1, 30, n)]})
    if labelled:
        table["preference"] = rng.choice(["a1", "a2", "same"], n)
    path = tmp_path / ("lab.csv" if labelled else "unl.csv")
    table.to_csv(path, index=False)
    return path, table


def test_a_submission_has_one_row_per_pair_in_file_order_with_pair_ids_and_labelled_scores(tmp_path):
    path, table = _file(tmp_path)
    store = tmp_path / "store"
    run = engine.run("length", "-", dataset=str(path), output_dir=store, progress=False)
    out = tmp_path / "sub.csv"
    assert submit.main([str(store / run.loc[0, "run_id"]), "--out", str(out)]) == 0
    written = pd.read_csv(out)
    assert list(written.columns) == ["name", "pair_id", "preference"]
    assert list(written["name"]) == list(table["name"]) and list(written["pair_id"][:2]) == ["v0.1", "v0.2"]
    assert set(written["preference"]) <= {"a1", "a2"}
    longer = np.where(table["a1"].str.len() >= table["a2"].str.len(), "a1", "a2")  # the length judge, by hand
    assert list(written["preference"]) == list(longer)
    scores = submit.build([str(store / run.loc[0, "run_id"])]).scores()
    keep = table["preference"] != "same"
    gt, pred = table.loc[keep, "preference"], written.loc[keep, "preference"]
    assert scores["two_class_waf"] == pytest.approx(100 * f1_score(gt, pred, average="weighted"))
    assert scores["two_class_acc"] == pytest.approx(100 * accuracy_score(gt, pred))


def test_top_k_vote_of_runs_given_best_first(tmp_path):
    path, _ = _file(tmp_path, labelled=False)
    store = tmp_path / "store"
    runs = [engine.run(m, "-", dataset=str(path), output_dir=store, progress=False).loc[0, "run_id"]
            for m in ("random", "length")]
    alone = submit.build([runs[0]], root=store).answers
    voted = submit.build(runs, top_k=1, root=store).answers
    assert alone.equals(voted)
    both = submit.build(runs, root=store)
    assert both.runs == runs and len(both.answers) == 8 and both.answers["answer"].notna().all()


def test_refuses_a_pair_without_an_answer_and_a_changed_file(tmp_path, capsys):
    path, table = _file(tmp_path, labelled=False)
    store = tmp_path / "store"
    rid = engine.run("length", "-", dataset=str(path), output_dir=store, progress=False, limit=5).loc[0, "run_id"]
    out = tmp_path / "sub.csv"
    assert submit.main([rid, "--store", str(store), "--out", str(out)]) == 1
    assert "3 of 8 pairs have no answer" in capsys.readouterr().err and not out.exists()
    assert submit.main([rid, "--store", str(store), "--out", str(out), "--top-k", "2"]) == 2  # usage: one run only
    assert "--top-k must be between 1 and the number of runs (1)" in capsys.readouterr().err
    assert submit.main(["no_such_run", "--store", str(store), "--out", str(out)]) == 1
    table.assign(a1="changed").to_csv(path, index=False)
    with pytest.raises(DataError, match="changed since the runs were made"):
        submit.build([rid], root=store)
