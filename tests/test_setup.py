"""The notebooks' one preamble (helpers.report.setup): folders, predictions of one dataset, the
paper's reported table, and the message when nothing has been judged yet."""

from __future__ import annotations

import os

import pandas as pd
import pytest
import yaml
from synthetic import synthetic_predictions, write_predictions

from helpers import data, paths
from helpers.report.setup import setup
from helpers.reported import HumanAgreement, PaperResults, paper_results

needs_data = pytest.mark.skipif(not os.environ.get(data.DATA_ENV), reason=f"${data.DATA_ENV} not set")


def test_the_papers_table_is_the_params_file_read_into_typed_rows():
    raw = yaml.safe_load((paths.params_dir() / "paper_results.yaml").read_text(encoding="utf-8"))
    paper = paper_results()
    assert [vars(j) for j in paper.judges] == raw["judges"]
    assert paper.human == HumanAgreement(two_class=69.31, with_ties=59.23)
    assert paper.best().judge == "Qwen2.5-Omni" and paper.table()["judge"].tolist() == [r["judge"] for r in raw["judges"]]


def test_the_papers_best_judge_is_the_highest_two_class_waf_and_an_exact_tie_goes_to_the_first_name():
    row = {"strategy": "S1", "two_class_acc": 60.0, "swap_consistency": 60.0}
    paper = PaperResults.from_mapping({"judges": [{"judge": "B", "two_class_waf": 61.0, **row},
                                                  {"judge": "A", "two_class_waf": 61.0, **row},
                                                  {"judge": "C", "two_class_waf": 60.99, **row}]})
    assert paper.best().judge == "A"


def test_an_absent_papers_table_is_empty_and_a_malformed_one_is_refused_by_name_and_row(tmp_path):
    assert not paper_results(tmp_path / "absent.yaml") and paper_results(tmp_path / "absent.yaml").best() is None
    bad = tmp_path / "paper.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ValueError, match=r"paper\.yaml: must be a YAML mapping"):
        paper_results(bad)
    bad.write_text("judges:\n  - {judge: X, strategy: S1, two_class_waf: 60}\n")
    with pytest.raises(ValueError, match=r"paper\.yaml: judges row 1 lacks two_class_acc, swap_consistency"):
        paper_results(bad)


def test_without_predictions_setup_makes_the_folders_and_reads_the_paper(tmp_path):
    ctx = setup(reports_dir=tmp_path / "reports", predictions_dir=tmp_path / "store", predictions=False)
    assert ctx.tables.is_dir() and ctx.figures.is_dir() and ctx.tables == tmp_path / "reports" / "tables"
    assert ctx.predictions is None and ctx.paper == paper_results()
    with pytest.raises(AttributeError):
        ctx.dataset = "emopreferv2"  # frozen: a notebook cannot change what it analyses halfway


@needs_data
def test_an_empty_store_stops_with_what_to_run(tmp_path):
    with pytest.raises(RuntimeError, match=r"no emoprefer predictions under .*store: run the judges first"):
        setup(tmp_path / "store", tmp_path / "reports")
    empty = setup(tmp_path / "store", tmp_path / "reports", require_predictions=False)
    assert empty.predictions.empty


@needs_data
@pytest.mark.filterwarnings("ignore:run folder.*have no manifest")  # a hand-written store
def test_only_the_requested_datasets_predictions_are_loaded(tmp_path):
    pairs = data.load_pairs()
    ours = synthetic_predictions(pairs.head(30), judges={"good": 0.8}, rounds=1, seed=0).assign(dataset="emoprefer")
    other = ours.assign(dataset="emopreferv2", judge="elsewhere")
    write_predictions(pd.concat([ours, other], ignore_index=True), tmp_path / "store", "mixed")
    ctx = setup(tmp_path / "store", tmp_path / "reports")
    assert set(ctx.predictions["judge"]) == {"good"}
    assert ctx.cells[["judge", "rows"]].values.tolist() == [["good", len(ours)]]
    assert ctx.summary == f"{len(ours)} predictions, 1 judge(s), 1 judge cell(s)"
