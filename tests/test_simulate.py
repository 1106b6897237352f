"""Simulated judges have the accuracy and swap consistency they were given."""

from __future__ import annotations

import pytest
from synthetic import synthetic_predictions

from helpers.run.store import COLUMNS
from helpers.stats import metrics
from helpers.stats.simulate import content_accuracy, synthetic_comparisons


def test_simulated_judge_has_its_accuracy_and_swap_consistency():
    preds = synthetic_predictions(n_pairs=4000, judges={"j": 0.7}, swap_consistency=0.8, same_rate=0.0, seed=1)
    row = metrics.metrics_table(preds, n_boot=0).iloc[0]
    assert row["two_class_acc"] == pytest.approx(70, abs=1.5)
    assert row["swap_consistency"] == pytest.approx(80, abs=1.5)
    reverse = preds[preds["order"] == "reverse"]
    assert metrics.two_class(reverse["gt"], reverse["pred"])["acc"] == pytest.approx(0.7, abs=0.015)


def test_table_follows_the_store_schema():
    preds = synthetic_predictions(n_pairs=10, judges={"a": {"S1": 0.6, "S2": 0.8}}, rounds=3)
    assert set(COLUMNS) <= set(preds.columns)
    assert len(preds) == 2 * 3 * 2 * 10
    metrics.check_predictions(preds)


def test_incompatible_accuracy_and_consistency_are_refused():
    assert content_accuracy(1.0, 1.0) == 1.0
    with pytest.raises(ValueError, match="incompatible"):
        content_accuracy(0.95, 0.5)


def test_comparisons_follow_bradley_terry():
    comps = synthetic_comparisons({"strong": 1.0, "weak": 0.0}, 20000, seed=0)
    strong_wins = ((comps.system_a == "strong") & (comps.winner == "a")) | ((comps.system_b == "strong") & (comps.winner == "b"))
    assert strong_wins.mean() == pytest.approx(1 / (1 + pytest.importorskip("numpy").exp(-1.0)), abs=0.01)
