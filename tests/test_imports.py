"""Importing the authors' released outputs (official ``.npz`` files) and other predictions
tables into the predictions store: the same numbers as the same predictions judged here, and
every file that cannot be matched to the pairs is refused with file and row named.

The official-format files are written here, exactly as the release's ``main_dpo_batch.py``
writes them (``np.savez_compressed(save_npz, gt_labels=[...], pred_labels=[...])``, label
strings in the dataset CSV's row order), from a synthetic judge over the real v1 pairs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score
from synthetic import synthetic_predictions, write_predictions

from helpers import data, imports
from helpers.report import chapters
from helpers.reported import PaperResults
from helpers.run import results
from helpers.stats import metrics

pytestmark = pytest.mark.skipif(not os.environ.get(data.DATA_ENV), reason=f"${data.DATA_ENV} not set (needs the v1 CSVs)")

KINDS = {"S1": "normal-{base}", "S2": "cot-answer-{base}", "S3": "cot-answer2-{base}-qwen25",
         "S4": "cot-answer3-{base}-qwen25"}
METRIC_COLUMNS = ["rounds", "two_class_waf", "two_class_waf_std", "two_class_acc", "two_class_acc_std",
                  "three_class_waf", "three_class_acc", "swap_consistency", "swap_consistency_std", "round_consistency"]


def official_name(model: str, input_type: str, strategy: str, order: str, rnd: int, dataset: str = "emoprefer") -> str:
    base = dataset + ("reverse" if order == "reverse" else "")
    return f"{model}-{input_type}-{KINDS[strategy].format(base=base)}-round{rnd}.npz"


def write_official(folder: Path, predictions: pd.DataFrame, model: str = "qwen25omni_7b") -> list[Path]:
    """One official answer file per strategy x order x round, labels in the CSV's row order."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for (strategy, input_type, order, rnd), part in predictions.groupby(["strategy", "input_type", "order", "round"]):
        order_rows = data.load_pairs("emoprefer", order)["name"]
        part = part.set_index("name").loc[order_rows]
        path = folder / official_name(model, input_type, strategy, order, rnd)
        np.savez_compressed(path, gt_labels=part["gt"].tolist(), pred_labels=part["pred"].tolist())
        written.append(path)
    return written


@pytest.fixture(scope="module")
def pairs() -> pd.DataFrame:
    return data.load_pairs()


@pytest.fixture(scope="module")
def judged(pairs) -> pd.DataFrame:
    """A synthetic Qwen2.5-Omni with S1-S4, both orders, 2 rounds: what a run here would store."""
    table = synthetic_predictions(pairs, judges={"qwen25omni": {"S1": 0.66, "S2": 0.7, "S3": 0.6, "S4": 0.63}},
                                  rounds=2, input_type="audiovideo", seed=3)
    return table


@pytest.fixture()
def released(tmp_path, judged) -> Path:
    folder = tmp_path / "output-matching"
    write_official(folder, judged)
    return folder


def _import(folder: Path, store: Path, **kwargs) -> pd.DataFrame:
    return imports.import_official(folder, "emoprefer", output_dir=store, **kwargs)


def test_official_import_gives_the_metrics_of_the_same_predictions_judged_here(released, judged, tmp_path):
    summary = _import(released, tmp_path / "store")
    assert sorted(summary["strategy"]) == ["S1", "S2", "S3", "S4"]
    assert set(summary["judge"]) == {"qwen25omni"}  # qwen25omni_7b mapped to the registry's name
    assert (summary["files"] == 4).all() and (summary["rows"] == 4 * 574).all()
    imported = results.load_predictions(tmp_path / "store")
    ours = metrics.metrics_table(imported, n_boot=20).set_index(metrics.CELL)[METRIC_COLUMNS]
    direct = metrics.metrics_table(judged, n_boot=20).set_index(metrics.CELL)[METRIC_COLUMNS]
    pd.testing.assert_frame_equal(ours.sort_index(), direct.sort_index())
    assert set(imported.loc[imported["strategy"].isin(["S3", "S4"]), "llm"]) == {"qwen25"}


def test_two_class_scores_equal_the_release_s_own_definition(released, tmp_path):
    """statistic.py: drop pairs humans called 'same', count a 'same' answer as a1, sklearn weighted F1."""
    _import(released, tmp_path / "store")
    file = released / official_name("qwen25omni_7b", "audiovideo", "S2", "normal", 1)
    with np.load(file, allow_pickle=False) as archive:
        gt, pred = archive["gt_labels"].tolist(), archive["pred_labels"].tolist()
    kept = [(g, "a1" if p == "same" else p) for g, p in zip(gt, pred, strict=True) if g != "same"]
    y, yhat = [g for g, _ in kept], [p for _, p in kept]
    imported = results.load_predictions(tmp_path / "store")
    part = imported[(imported["strategy"] == "S2") & (imported["order"] == "normal") & (imported["round"] == 1)]
    scores = metrics.two_class(part["gt"], part["pred"])
    assert scores["waf"] == pytest.approx(f1_score(y, yhat, average="weighted"))
    assert scores["acc"] == pytest.approx(accuracy_score(y, yhat))


def test_manifest_records_the_source_and_every_file_hash(released, tmp_path):
    _import(released, tmp_path / "store")
    folder = tmp_path / "store" / "qwen25omni__S3__audiovideo__emoprefer__llm=qwen25__official"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["source"] == imports.OFFICIAL == "official-release"
    assert manifest["source_label"] == "computed here from the authors' released outputs"
    assert manifest["official_model"] == "qwen25omni_7b" and manifest["llm"] == "qwen25"
    assert len(manifest["files"]) == 4
    for entry in manifest["files"]:
        assert entry["sha256"] == data.sha256_file(released / entry["file"])
    assert manifest["identity"]["files_sha256"] == {e["file"]: e["sha256"] for e in manifest["files"]}
    assert manifest["identity"]["data_sha256"] == data.data_sha256("emoprefer")


def test_importing_twice_changes_nothing(released, tmp_path):
    _import(released, tmp_path / "store")
    before = {p: p.read_bytes() for p in (tmp_path / "store").rglob("*") if p.is_file()}
    again = _import(released, tmp_path / "store")
    assert set(again["status"]) == {"unchanged"}
    assert {p: p.read_bytes() for p in (tmp_path / "store").rglob("*") if p.is_file()} == before


def test_changed_files_into_an_existing_run_are_refused_unless_overwrite(released, tmp_path, judged):
    _import(released, tmp_path / "store")
    file = released / official_name("qwen25omni_7b", "audiovideo", "S1", "normal", 0)
    with np.load(file) as archive:
        gt, pred = archive["gt_labels"].tolist(), archive["pred_labels"].tolist()
    pred[0] = "a2" if pred[0] != "a2" else "a1"
    np.savez_compressed(file, gt_labels=gt, pred_labels=pred)
    with pytest.raises(imports.ImportsError, match=r"qwen25omni__S1__audiovideo__emoprefer__official.*files_sha256.*--overwrite"):
        _import(released, tmp_path / "store")
    summary = _import(released, tmp_path / "store", overwrite=True).set_index("strategy")
    assert summary.loc["S1", "status"] == "overwritten" and summary.loc["S2", "status"] == "unchanged"
    stored = results.load_predictions(tmp_path / "store")
    first = stored[(stored["strategy"] == "S1") & (stored["order"] == "normal") & (stored["round"] == 0)].iloc[0]
    assert first["pred"] == pred[0] and len(stored) == 4 * 4 * 574


def test_shuffled_gt_labels_are_refused_naming_file_and_row(released, tmp_path):
    file = released / official_name("qwen25omni_7b", "audiovideo", "S2", "reverse", 0)
    with np.load(file) as archive:
        gt, pred = archive["gt_labels"], archive["pred_labels"]
    order = np.random.default_rng(0).permutation(len(gt))
    np.savez_compressed(file, gt_labels=gt[order].tolist(), pred_labels=pred[order].tolist())
    first = int(np.flatnonzero(gt[order] != gt)[0])
    with pytest.raises(imports.ImportsError, match=rf"{file.name}: gt_labels differ from "
                       rf"preference_emoprefer_reverse.csv at row {first} ") as caught:
        _import(released, tmp_path / "store")
    assert "nothing imported" in str(caught.value)
    assert not (tmp_path / "store").exists() or not list((tmp_path / "store").rglob("predictions.jsonl"))


def test_a_file_of_the_other_order_is_refused(released, tmp_path):
    """A reverse file saved under a normal name: its labels are the swapped ones."""
    normal = released / official_name("qwen25omni_7b", "audiovideo", "S1", "normal", 0)
    reverse = released / official_name("qwen25omni_7b", "audiovideo", "S1", "reverse", 0)
    normal.write_bytes(reverse.read_bytes())
    with pytest.raises(imports.ImportsError, match=rf"{normal.name}: gt_labels differ from preference_emoprefer.csv at row"):
        _import(released, tmp_path / "store")


def test_a_debug_truncated_file_is_refused(released, tmp_path, pairs):
    """main_dpo_batch.py --debug breaks after appending the third label and the second message:
    three gt_labels, two pred_labels."""
    file = released / official_name("qwen25omni_7b", "audiovideo", "S1", "normal", 1)
    np.savez_compressed(file, gt_labels=pairs["preference"].tolist()[:3], pred_labels=["a1", "a2"])
    with pytest.raises(imports.ImportsError, match=rf"{file.name}: holds 3 gt_labels but preference_emoprefer.csv "
                       rf"has 574 rows; first missing row 3 \(sample '{pairs['name'][3]}'\).*truncated"):
        _import(released, tmp_path / "store")


def test_a_pickled_object_array_is_refused(released, tmp_path, pairs):
    file = released / official_name("qwen25omni_7b", "audiovideo", "S4", "normal", 0)
    labels = np.array(pairs["preference"].tolist(), dtype=object)
    np.savez_compressed(file, gt_labels=labels, pred_labels=labels)
    with pytest.raises(imports.ImportsError, match=rf"{file.name}: 'gt_labels' is an object array that loads only "
                       r"with pickle; refused.*can run arbitrary code"):
        _import(released, tmp_path / "store")
    summary = _import(released, tmp_path / "store", allow_pickle=True)  # the user's explicit choice
    assert len(summary) == 4


def test_description_files_are_skipped_with_a_note_unless_pickle_is_allowed(released, tmp_path, pairs, capsys):
    file = released / "qwen25omni_7b-audiovideo-cot-description-emoprefer-round0.npz"
    np.savez_compressed(file, name2description={n: f"text of {n}" for n in pairs["name"]})
    _import(released, tmp_path / "store")
    assert "skipped 1 description/reasoning file(s)" in capsys.readouterr().out
    assert not list((tmp_path / "store").rglob("steps.jsonl"))
    _import(released, tmp_path / "other", allow_pickle=True)
    steps = (tmp_path / "other" / "qwen25omni__S2__audiovideo__emoprefer__official" / "steps.jsonl").read_text()
    assert len(steps.splitlines()) == 574 and f"text of {pairs['name'][0]}" in steps


def test_an_unknown_model_keeps_its_file_name_and_other_datasets_are_skipped(tmp_path, judged, capsys):
    folder = tmp_path / "out"
    write_official(folder, judged[judged["strategy"] == "S1"], model="videochat2")
    (folder / "videochat2-video-normal-emopreferv2-round0.npz").write_bytes(b"")
    summary = _import(folder, tmp_path / "store")
    assert summary["judge"].tolist() == ["videochat2"]
    assert "other datasets than 'emoprefer'" in capsys.readouterr().out


def test_command_line_imports_and_reports_refusals(released, tmp_path, capsys):
    assert imports.main(["official", str(released), "--output-dir", str(tmp_path / "store")]) == 0
    assert "written" in capsys.readouterr().out
    (released / official_name("qwen25omni_7b", "audiovideo", "S1", "normal", 0)).write_bytes(b"not a zip")
    assert imports.main(["official", str(released), "--output-dir", str(tmp_path / "s2")]) == 1
    assert "not a readable .npz file" in capsys.readouterr().err


# --------------------------------------------------------------------------- table import


def _table(judged: pd.DataFrame) -> pd.DataFrame:
    return judged[["name", "order", "round", "strategy", "pred"]].assign(raw=judged["pred"].str.upper())


def test_a_table_imports_to_the_same_metrics(tmp_path, judged):
    for suffix in (".csv", ".parquet", ".jsonl"):
        path = tmp_path / f"mine{suffix}"
        table = _table(judged)
        if suffix == ".csv":
            table.to_csv(path, index=False)
        elif suffix == ".parquet":
            table.to_parquet(path)
        else:
            table.to_json(path, orient="records", lines=True)
        store = tmp_path / f"store{suffix}"
        summary = imports.import_table(path, "qwen25omni", output_dir=store)
        assert set(summary["input_type"]) == {"audiovideo"}  # the registry's input type
        got = metrics.metrics_table(results.load_predictions(store), n_boot=20).set_index(metrics.CELL)[METRIC_COLUMNS]
        want = metrics.metrics_table(judged, n_boot=20).set_index(metrics.CELL)[METRIC_COLUMNS]
        pd.testing.assert_frame_equal(got.sort_index(), want.sort_index())
    manifest = json.loads((store / "qwen25omni__S1__audiovideo__emoprefer__imported" / "manifest.json").read_text())
    assert manifest["source"] == imports.TABLE and manifest["files"][0]["sha256"] == data.sha256_file(path)
    assert imports.import_table(path, "qwen25omni", output_dir=store)["status"].eq("unchanged").all()


def test_a_bad_table_is_refused_listing_every_problem(tmp_path, judged, pairs):
    table = _table(judged[judged["strategy"] == "S1"]).reset_index(drop=True)
    table.loc[3, "pred"] = "A1"
    table.loc[5, "name"] = "nobody"
    table.loc[7, "order"] = "swapped"
    path = tmp_path / "bad.csv"
    table.to_csv(path, index=False)
    with pytest.raises(imports.ImportsError) as caught:
        imports.import_table(path, "qwen25omni", output_dir=tmp_path / "store")
    text = str(caught.value)
    assert f"{path}, line 5, column 'pred': 'A1' not one of a1, a2, same" in text
    assert f"{path}, line 7, column 'name': 'nobody' not a sample of the dataset" in text
    assert f"{path}, line 9, column 'order': 'swapped' not one of normal, reverse" in text
    assert not (tmp_path / "store").exists()


def test_duplicates_and_missing_samples_are_listed(tmp_path, judged, pairs):
    table = _table(judged[judged["strategy"] == "S1"]).reset_index(drop=True)
    table = pd.concat([table.drop(index=[10, 11]), table.iloc[[0]]], ignore_index=True)
    path = tmp_path / "gaps.csv"
    table.to_csv(path, index=False)
    with pytest.raises(imports.ImportsError) as caught:
        imports.import_table(path, "qwen25omni", output_dir=tmp_path / "store")
    text = str(caught.value)
    assert f"line {len(table) + 1}: duplicate of line 2" in text
    row = judged[judged["strategy"] == "S1"].reset_index(drop=True).iloc[10]
    assert f"strategy S1, order {row['order']}, round {row['round']} lacks 2 sample(s): " in text
    assert row["name"] in text


def test_an_unknown_judge_needs_an_input_type(tmp_path, judged):
    path = tmp_path / "t.csv"
    _table(judged[judged["strategy"] == "S1"]).to_csv(path, index=False)
    with pytest.raises(imports.ImportsError, match="not in params/models/; pass --input-type"):
        imports.import_table(path, "my_judge", output_dir=tmp_path / "store")
    assert imports.main(["table", str(path), "--judge", "my_judge", "--input-type", "video",
                         "--output-dir", str(tmp_path / "store")]) == 0


# --------------------------------------------------------------------------- the report's comparison


def test_sources_label_imported_cells_and_judged_ones(released, tmp_path, judged):
    _import(released, tmp_path / "store")
    table = metrics.metrics_table(results.load_predictions(tmp_path / "store"), n_boot=10)
    labelled = chapters.with_source(pd.concat([table, table.assign(judge="length", strategy="-")]), tmp_path / "store")
    assert set(labelled.loc[labelled["judge"] == "qwen25omni", "source_label"]) == {
        "computed here from the authors' released outputs"}
    assert set(labelled.loc[labelled["judge"] == "length", "source"]) == {"this study"}


def test_paper_check_flags_differences_above_a_hundredth_of_a_point():
    paper = PaperResults.from_mapping({"judges": [{"judge": "Qwen2.5-Omni", "strategy": "S2", "two_class_waf": 67.21,
                                                   "two_class_acc": 67.32, "swap_consistency": 79.09}]})
    table = pd.DataFrame([
        {"judge": "qwen25omni", "strategy": "S2", "input_type": "audiovideo", "two_class_waf": 67.21,
         "two_class_acc": 67.33, "swap_consistency": 79.12, "source": imports.OFFICIAL},
        {"judge": "qwen25omni", "strategy": "S1", "input_type": "audiovideo", "two_class_waf": 60.0,
         "two_class_acc": 60.0, "swap_consistency": 70.0, "source": imports.OFFICIAL},
        {"judge": "qwen25vl", "strategy": "S1", "input_type": "video", "two_class_waf": 1.0,
         "two_class_acc": 1.0, "swap_consistency": 1.0, "source": imports.JUDGED},  # judged here: not compared
    ])
    check = chapters.paper_check(table, paper).set_index("metric")
    assert list(check.index) == ["two_class_waf", "two_class_acc", "swap_consistency"]
    assert check["flag"].tolist() == [False, False, True]  # 0.00, 0.01 (rounding), 0.03
    assert check.loc["swap_consistency", "difference"] == pytest.approx(0.03)
    assert check.loc["swap_consistency", "computed here"] == 79.12
    assert check.loc["swap_consistency", "reported by the paper"] == 79.09


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_imported_judge_appears_in_the_analysis_chapters_with_its_length_balanced_accuracy(tmp_path, judged, pairs):
    """Official files for one judge (S1-S4 x both orders x 2 rounds) -> one import -> the metrics,
    consistency, voting and confound notebooks show it, labelled by its source."""
    import papermill as pm

    from helpers.stats import confound

    store, reports = tmp_path / "store", tmp_path / "reports"
    write_official(tmp_path / "output-matching", judged)
    assert imports.main(["official", str(tmp_path / "output-matching"), "--output-dir", str(store)]) == 0
    length = synthetic_predictions(pairs, judges={"length": 0.7}, strategies=("-",), rounds=1, seed=1)
    write_predictions(length, store, "length_judged_here")
    (reports / "executed").mkdir(parents=True)
    notebooks = Path(__file__).resolve().parents[1] / "notebooks"
    for name in ("02_metrics", "03_consistency", "04_voting", "06_confound"):
        pm.execute_notebook(str(notebooks / f"{name}.ipynb"), str(reports / "executed" / f"{name}.ipynb"),
                            cwd=str(notebooks), parameters={"predictions_dir": str(store), "reports_dir": str(reports),
                                                            "n_boot": 20}, progress_bar=False, kernel_name="python3")
    tables = reports / "tables"
    table = pd.read_csv(tables / "metrics.csv").set_index(["judge", "strategy"])
    assert set(table.loc["qwen25omni", "source_label"]) == {"computed here from the authors' released outputs"}
    assert table.loc[("length", "-"), "source_label"] == "this study"
    want = confound.length_report(judged, pairs).set_index("strategy")["len_balanced_acc"]
    assert table.loc["qwen25omni", "len_balanced_acc"].sort_index().tolist() == pytest.approx(
        want.sort_index().round(2).tolist(), abs=0.006)
    check = pd.read_csv(tables / "metrics_official_check.csv")
    assert set(check["strategy"]) == {"S2"} and set(check["paper judge"]) == {"Qwen2.5-Omni"}
    s2 = table.loc[("qwen25omni", "S2")]
    assert check.set_index("metric").loc["two_class_waf", "computed here"] == pytest.approx(s2["two_class_waf"])
    confound = pd.read_csv(tables / "confound_length.csv")
    assert (confound.loc[confound["judge"] == "qwen25omni", "source"] == imports.OFFICIAL).sum() == 4
    assert "qwen25omni" in (tables / "metrics_main.csv").read_text()
    assert "qwen25omni" in (tables / "metrics_vote.csv").read_text()
    assert (reports / "figures" / "confound_plane.png").is_file()


def test_an_import_that_would_double_a_cell_judged_here_is_refused(released, tmp_path, judged):
    """The analyses key a cell by judge, strategy and input type: two run folders for one cell
    would give every pair two answers."""

    write_predictions(judged[judged["strategy"] == "S2"], tmp_path / "store", "qwen25omni_run_here")
    with pytest.raises(imports.ImportsError, match=r"qwen25omni_run_here already holds qwen25omni S2 audiovideo "
                       r"predictions \(judged here\).*nothing imported"):
        _import(released, tmp_path / "store")
    assert [p.name for p in (tmp_path / "store").iterdir()] == ["qwen25omni_run_here"]


def test_the_judges_table_of_the_summary_names_the_source(released, tmp_path, pairs):
    from helpers.report.setup import setup

    _import(released, tmp_path / "store")
    context = chapters.collect(setup(tmp_path / "store", tmp_path / "reports", predictions=False))
    table = chapters.judges_table(context).set_index("judge")
    assert table.loc["qwen25omni", "status"] == (
        "ran: S1, S2, S3, S4; 2 rounds, 574 pairs (computed here from the authors' released outputs)")


def test_answers_of_two_text_llms_for_one_cell_are_refused(released, tmp_path):
    """S3 judged by qwen25 and by qwen3_8b share the cell (judge, S3, input type)."""
    source = released / official_name("qwen25omni_7b", "audiovideo", "S3", "normal", 0)
    (released / source.name.replace("-qwen25-", "-qwen3_8b-")).write_bytes(source.read_bytes())
    with pytest.raises(imports.ImportsError, match=r"llm=qwen25__official and .*llm=qwen3_8b__official would both "
                       r"hold qwen25omni S3 audiovideo"):
        _import(released, tmp_path / "store")


# --------------------------------------------------------------------------- issue 19: scoring honesty


def test_the_unparsed_share_of_official_rows_is_unknown_not_zero(released, tmp_path):
    """The released files hold labels after the authors' parser: which answers fell to 'same'
    cannot be told, so the share is empty (NaN), never a reassuring 0.0."""
    _import(released, tmp_path / "store")
    table = results.load_predictions(tmp_path / "store")
    assert metrics.metrics_table(table, n_boot=0)["unparsed_pct"].isna().all()
    manifest = json.loads(next((tmp_path / "store").glob("*S1*/manifest.json")).read_text())
    assert manifest["unparsed"].startswith("unknown") and manifest["rounds_per_order"] == {
        "normal": [0, 1], "reverse": [0, 1]}


def test_a_missing_reverse_round_or_order_is_reported_with_a_warning(released, tmp_path):
    (released / official_name("qwen25omni_7b", "audiovideo", "S1", "reverse", 1)).unlink()
    for rnd in (0, 1):
        (released / official_name("qwen25omni_7b", "audiovideo", "S2", "normal", rnd)).unlink()
    with pytest.warns(imports.UnbalancedImportWarning) as caught:
        summary = _import(released, tmp_path / "store").set_index("strategy")
    notes = " ".join(str(w.message) for w in caught)
    assert "swap consistency is computed from round(s) 0 only" in notes
    assert "only the reverse order was imported" in notes
    assert (summary.loc["S1", "rounds_normal"], summary.loc["S1", "rounds_reverse"]) == (2, 1)
    assert (summary.loc["S2", "rounds_normal"], summary.loc["S2", "rounds_reverse"]) == (0, 2)
    assert summary.loc["S3", "note"] == ""
