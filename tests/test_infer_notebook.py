"""End to end: the inference notebook under papermill, and the grid runner, on the real v1 data."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import papermill
import pytest
import yaml
from sklearn.metrics import f1_score

from helpers import paths
from helpers.run import launch
from helpers.run.store import read_predictions

DATA = os.environ.get("EMOPREFER_DATA")
NOTEBOOK = paths.project_root() / "notebooks" / "01_infer.ipynb"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not DATA or not (Path(DATA) / "preference_emoprefer.csv").is_file(),
                       reason="EMOPREFER_DATA does not point at the v1 CSVs"),
]


def csv(name: str) -> pd.DataFrame:
    return pd.read_csv(Path(DATA) / name, dtype=str, keep_default_na=False)


def test_length_judge_notebook_writes_every_pair_order_and_round_and_a_manifest(tmp_path):
    out = tmp_path / "01_infer.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOK), str(out), cwd=str(NOTEBOOK.parent), progress_bar=False,
        parameters={"model": "length", "strategy": "S1", "rounds": 2, "output_dir": str(tmp_path / "store")},
    )
    table = read_predictions(tmp_path / "store")
    assert len(table) == 574 * 2 * 2
    assert table.groupby(["order", "round"]).size().eq(574).all()
    assert not table.duplicated(["order", "round", "name"]).any()
    assert set(table["strategy"]) == {"-"} and set(table["judge"]) == {"length"}

    # the predictions and labels, checked against the CSV files read independently here
    normal, reverse = csv("preference_emoprefer.csv"), csv("preference_emoprefer_reverse.csv")
    for order, source in (("normal", normal), ("reverse", reverse)):
        rows = table[(table["order"] == order) & (table["round"] == 0)].set_index("name").loc[source["name"]]
        longer = [
            "a1" if len(a) > len(b) else "a2" if len(b) > len(a) else "same" for a, b in zip(source.a1, source.a2, strict=True)
        ]
        assert rows["pred"].tolist() == longer
        assert rows["gt"].tolist() == source["preference"].tolist()

    manifest = json.loads(next((tmp_path / "store").glob("*/manifest.json")).read_text())
    assert manifest["status"] == "complete" and manifest["rows"] == 574 * 4
    assert manifest["data_sha256"]["preference_emoprefer.csv"].startswith("ca4095b37f7c")
    assert manifest["calls_total"] == {"cpu": 574 * 4}
    assert {"git_revision", "packages", "prompt_hashes", "parameters", "sessions"} <= set(manifest)

    # the closing table reports the paper's two-class WAF, recomputed here with sklearn
    decided = normal[normal["preference"] != "same"]
    pred = ["a1" if len(a) >= len(b) else "a2" for a, b in zip(decided.a1, decided.a2, strict=True)]  # same -> a1
    expected = 100 * f1_score(decided["preference"], pred, average="weighted")
    executed = json.loads(out.read_text())
    last = executed["cells"][-1]["outputs"][0]["data"]["text/plain"]
    assert f"{expected:.2f}" in "".join(last)


def test_a_tampered_row_stops_the_closing_table_naming_its_folder_and_key(tmp_path):
    """Issue 19: a stored pred edited to 'banana' was scored silently by the closing table."""
    parameters = {"model": "length", "rounds": 1, "limit": 5, "output_dir": str(tmp_path / "store")}
    papermill.execute_notebook(str(NOTEBOOK), str(tmp_path / "first.ipynb"), cwd=str(NOTEBOOK.parent),
                               progress_bar=False, parameters=parameters)
    file = next((tmp_path / "store").glob("*/predictions.jsonl"))
    lines = file.read_text().splitlines(keepends=True)
    row = json.loads(lines[0])
    file.write_text(json.dumps(row | {"pred": "banana"}) + "\n" + "".join(lines[1:]))
    with pytest.raises(papermill.PapermillExecutionError) as refused:
        papermill.execute_notebook(str(NOTEBOOK), str(tmp_path / "again.ipynb"), cwd=str(NOTEBOOK.parent),
                                   progress_bar=False, parameters=parameters)
    message = str(refused.value)
    assert "DataError" in message and "'banana' is not one of a1, a2, same" in message and row["key"] in message


def test_grid_runs_present_cpu_judges_skips_missing_ones_and_finished_cells(tmp_path):
    spec = {
        "notebook": "notebooks/01_infer.ipynb",
        "executed_dir": str(tmp_path / "runs"),
        "matrix": {"model": ["always_a1", "not_written_yet"]},
        "parameters": {"strategy": "-", "rounds": 1, "limit": 20, "output_dir": str(tmp_path / "store")},
    }
    file = tmp_path / "grid_small.yaml"
    file.write_text(yaml.safe_dump(spec))
    messages: list[str] = []
    first = launch.run_grid(file, log=messages.append).set_index("cell")
    assert first.loc["always_a1", "status"] == "done"
    assert first.loc["not_written_yet", "status"] == "skipped"
    assert "no params/models/not_written_yet.yaml" in first.loc["not_written_yet", "reason"]
    assert (tmp_path / "runs" / "grid_small" / "always_a1.ipynb").is_file()
    assert len(read_predictions(tmp_path / "store")) == 20 * 2

    second = launch.run_grid(file, log=messages.append).set_index("cell")
    assert second.loc["always_a1", "reason"] == "finished earlier"
    # deleting the predictions makes the cell unfinished again
    for manifest in (tmp_path / "store").glob("*/manifest.json"):
        manifest.unlink()
    assert launch.run_grid(file, dry_run=True).set_index("cell").loc["always_a1", "status"] == "planned"


def test_grid_file_errors_name_the_file(tmp_path):
    file = tmp_path / "grid_bad.yaml"
    file.write_text("matrix: {model: []}\n")
    with pytest.raises(launch.GridError, match="grid_bad.yaml: matrix.model must be a non-empty list"):
        launch.load_grid(file)
    with pytest.raises(launch.GridError, match="executor must be one of"):
        launch.run_grid(file, executor="slurm")


def test_shipped_grids_expand_to_their_cells():
    paper = launch.load_grid(paths.params_dir() / "grid_paper.yaml")
    assert len(paper.cells) == 4 * 4
    assert {c.parameters["strategy"] for c in paper.cells} == {"S1", "S2", "S3", "S4"}
    cpu = launch.load_grid(paths.params_dir() / "grid_cpu.yaml")
    judges = ["length", "random", "always_a1", "source", "minilm_rm", "minilm_rm_nolen"]
    assert list(dict.fromkeys(c.model for c in cpu.cells)) == judges
    datasets = ["emoprefer", "probe_verbosity", "probe_length_matched", "probe_content"]
    assert [(c.model, c.parameters["dataset"]) for c in cpu.cells] == [(j, d) for j in judges for d in datasets]
    lanes, _ = launch.plan(paper, force=True)
    assert all(len({c.model for c in lane}) == 1 for lane in lanes)  # one judge per lane


def test_notebook_runs_all_strategies_through_the_real_transformers_backend(tmp_path, monkeypatch):
    """A tiny random Qwen2 text LM (built here, offline) plays both the judge (input type text)
    and the S3/S4 text LLM: the transformers code path from papermill parameters to stored rows."""
    from tiny_models import build_text_lm

    root = tmp_path / "project"
    shutil.copytree(paths.params_dir(), root / "params", ignore=shutil.ignore_patterns("runs", "grid_*"))
    (root / "pyproject.toml").write_text("")
    checkpoint = build_text_lm(tmp_path / "tiny_lm")
    (root / "params" / "models" / "tiny_text.yaml").write_text(yaml.safe_dump({
        "family": "text", "backend": "local", "checkpoint": str(checkpoint), "input_type": "text",
        "batch_size": 4, "generation": {"max_tokens": 6, "do_sample": False},  # greedy: one description per sample
    }))
    monkeypatch.setenv("EMOPREFER_ROOT", str(root))
    store = tmp_path / "store"
    out = tmp_path / "01_infer.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOK), str(out), cwd=str(NOTEBOOK.parent), progress_bar=False,
        parameters={"model": "tiny_text", "strategy": "all", "judge_llm": "tiny_text", "rounds": 1, "limit": 3,
                    "engine": "transformers", "output_dir": str(store)},
    )
    table = read_predictions(store)
    assert table.groupby("strategy").size().to_dict() == {"S1": 6, "S2": 6, "S3": 6, "S4": 6}
    assert set(table["pred"]) <= {"a1", "a2", "same"} and table["raw"].map(len).gt(0).all()
    manifests = {m["strategy"]: m for m in (json.loads(f.read_text()) for f in store.glob("*/manifest.json"))}
    assert manifests["S3"]["engines"] == {"judge": "transformers", "llm": "transformers"}
    assert manifests["S1"]["judge_spec"]["checkpoint"] == str(checkpoint)
    assert manifests["S2"]["calls_total"] == {"describe": 3, "S2": 6}
    assert manifests["S4"]["calls_total"] == {"S4_reason": 6, "S4_extract": 6}
    # what the backend itself reports once loaded: the weights read, dtype, device, versions
    judge = manifests["S1"]["backend_info"]["judge"]
    assert judge["local_path"] == str(Path(checkpoint).resolve()) and judge["checkpoint"] == str(checkpoint)
    assert (judge["dtype"], judge["device"]) == ("torch.float32", "cpu")
    assert judge["transformers"] == importlib.metadata.version("transformers")
    assert set(manifests["S3"]["backend_info"]) == {"llm"}  # S3 reused S2's descriptions


def test_limit_and_names_select_pairs_and_a_model_judge_without_media_lists_all_missing(tmp_path):
    from helpers.data import DataError
    from helpers.run import engine

    summary = engine.run("length", limit=10, rounds=1, output_dir=tmp_path / "store", progress=False)
    table = read_predictions(tmp_path / "store")
    assert summary.loc[0, "rows"] == len(table) == 10 * 2
    assert table.loc[table["order"] == "normal", "name"].tolist() == csv("preference_emoprefer.csv")["name"][:10].tolist()
    (tmp_path / "media").mkdir()
    with pytest.raises(DataError, match=r"574 media file\(s\) missing for input_type 'audiovideo'"):
        engine.run("qwen25omni", "S1", media_dir=tmp_path / "media", output_dir=tmp_path / "store", progress=False)
