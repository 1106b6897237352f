"""The analysis notebooks 02-05 execute under papermill on a small synthetic predictions table
and write the tables and figures the report embeds."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import papermill as pm
import pytest
from synthetic import synthetic_predictions, write_predictions

from helpers import data
from helpers.stats import metrics

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.environ.get(data.DATA_ENV), reason=f"${data.DATA_ENV} not set (needs the v1 CSVs)"),
]


def run(name: str, predictions: Path, reports: Path, **extra) -> None:
    pm.execute_notebook(
        str(NOTEBOOKS / f"{name}.ipynb"), str(reports / "executed" / f"{name}.ipynb"), cwd=str(NOTEBOOKS),
        parameters={"predictions_dir": str(predictions), "reports_dir": str(reports), "n_boot": 100, **extra},
        progress_bar=False, kernel_name="python3",
    )


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    pairs = data.load_pairs()
    preds = synthetic_predictions(pairs, judges={"good": 0.75, "fair": 0.62}, strategies=("S1", "S2"), seed=0)
    write_predictions(preds, root / "predictions", "synthetic")
    reports = root / "reports"
    (reports / "executed").mkdir(parents=True)
    for name in ("02_metrics", "03_consistency", "04_voting"):
        run(name, root / "predictions", reports)
    run("05_ranking", root / "predictions", reports, sim_reps=5)
    return reports


def test_metrics_csv_has_the_agreed_columns(study):
    table = pd.read_csv(study / "tables" / "metrics.csv")
    assert list(table.columns[: len(metrics.METRICS_COLUMNS)]) == metrics.METRICS_COLUMNS
    assert len(table) == 4 and set(table["judge"]) == {"good", "fair"}


def test_every_figure_and_table_is_written(study):
    figures = {p.name for p in (study / "figures").glob("*.png")}
    assert {"metrics_heatmap.png", "metrics_confusion.png", "consistency_ours.png", "consistency_paper.png",
            "voting_curves.png", "ranking_forest.png", "ranking_simulation.png"} <= figures
    tables = {p.name for p in (study / "tables").glob("*.csv")}
    assert {"metrics_ci.csv", "paper_results.csv", "consistency_pearson.csv", "voting.csv", "ranking_mer.csv",
            "ranking_simulation.csv", "ranking_cost.csv"} <= tables


def test_paper_rows_are_labelled_as_reported(study):
    paper = pd.read_csv(study / "tables" / "paper_results.csv")
    assert (paper["source"] == "reported by the paper").all()


def test_the_notebooks_leave_values_for_the_chapters_and_cope_with_few_cells(study):
    """The notebooks write values (the chapters' sentences quote them through _variables.yml): the
    main table's first row is the best judge on the unrounded mean, the correlations say how many
    cells they rest on, and the ranking cost is a table."""
    table = pd.read_csv(study / "tables" / "metrics.csv")
    best = table.sort_values(["two_class_waf_unrounded", "judge"], ascending=[False, True]).iloc[0]
    assert pd.read_csv(study / "tables" / "metrics_main.csv").iloc[0]["judge"] == best["judge"]
    pearson = pd.read_csv(study / "tables" / "consistency_pearson.csv")
    assert pearson["n"].tolist() == [4, 10]
    assert len(pd.read_csv(study / "tables" / "ranking_cost.csv"))


def test_a_single_judge_is_reported_not_crashed(tmp_path):
    preds = synthetic_predictions(data.load_pairs(), judges={"solo": 0.7}, rounds=1, seed=0)
    write_predictions(preds, tmp_path / "predictions", "solo")
    reports = tmp_path / "reports"
    (reports / "executed").mkdir(parents=True)
    run("03_consistency", tmp_path / "predictions", reports)
    run("04_voting", tmp_path / "predictions", reports)
    pearson = pd.read_csv(reports / "tables" / "consistency_pearson.csv")
    assert "needs at least 3" in pearson["note"].iloc[0]
    assert pd.read_csv(reports / "tables" / "voting.csv")["k"].max() == 1
