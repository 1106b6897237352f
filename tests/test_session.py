"""Issue 19, one run record: one row builder, one manifest lifecycle, one schema of run
parameters, and resumes that notice changed judge code, a changed endpoint or a tampered row."""

from __future__ import annotations

import ast
import dataclasses
import errno
import importlib
import inspect
import json
import os
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from fake_backend import FAKE_MLLM, FakeBackend

from helpers.data import DataError
from helpers.judges.base import ENGINES, STRATEGY_RECORDS, JudgeSpec, Response
from helpers.run import engine, launch, results, store
from helpers.run.identity import IdentityError
from helpers.run.store import RAW_MAX_BYTES, PredictionRow, RunSession, StorageError, prediction_row
from helpers.run.strategies import Item, Pipeline

ROOT = Path(__file__).parents[1]
SRC = ROOT / "src" / "helpers"


def toy_pairs(n: int = 6) -> pd.DataFrame:
    return pd.DataFrame({
        "name": [f"s{i:02d}" for i in range(n)],
        "a1": [f"The man is angry {i}." + " really" * (i % 3) for i in range(n)],
        "a2": [f"The man is calm {i}." + " very" * (i % 2) for i in range(n)],
        "preference": (["a1", "a2", "same"] * n)[:n],
    })


def cpu_run(store_root: Path, spec: JudgeSpec, **kwargs) -> pd.DataFrame:
    return engine.run(spec, "-", pairs=toy_pairs(), rounds=1, output_dir=store_root, progress=False,
                      dataset="toy", **kwargs)


def manifest_in(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


# --------------------------------------------------------------------------- one row, one manifest writer


def test_no_other_module_builds_a_row_dict_or_writes_a_manifest():
    """``grep`` as a maintainer would: the row's keys are spelled out once (PredictionRow) and
    manifest.json is written by one function (write_json_atomic, used by RunSession)."""
    row_builders, manifest_writers = [], []
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        if path.name != "store.py" and '"parse_rule":' in text and '"pred":' in text:
            row_builders.append(path.name)
        writes = [line for line in text.splitlines() if "manifest" in line.lower()
                  and any(w in line for w in ("write_text(", "json.dump(", "write_manifest(", 'open("w'))]
        if path.name != "store.py" and writes:
            manifest_writers.append((path.name, writes))
    assert row_builders == [] and manifest_writers == []


def test_the_store_columns_are_the_row_schema_and_every_writer_stores_all_of_it(tmp_path):
    assert store.COLUMNS == [f.name for f in dataclasses.fields(PredictionRow)][:13]
    summary = cpu_run(tmp_path, JudgeSpec(name="len", family="cpu", backend="cpu",
                                          options={"judge_class": "helpers.judges.cpu:LengthJudge"}))
    rows = store.read_jsonl(tmp_path / summary.loc[0, "run_id"] / "predictions.jsonl")
    assert rows and all(list(r) == list(store.ROW_FIELDS) for r in rows)
    manifest = manifest_in(tmp_path / summary.loc[0, "run_id"])
    assert manifest["schema_version"] == store.MANIFEST_SCHEMA and manifest["status"] == "complete"


def test_a_label_outside_the_three_is_refused_before_it_is_stored():
    with pytest.raises(ValueError, match=r"judge 'j', row 'S1\|normal\|r0\|s1' of run 'r': pred 'banana' is not one of"):
        prediction_row(judge="j", strategy="S1", input_type="text", order="normal", round=0, name="s1", gt="a1",
                       pred="banana", parse_rule="direct", raw="banana", run_id="r", dataset="d", created_at="t")


def test_an_answer_above_64_kb_is_stored_cut_with_a_flag(tmp_path):
    huge = "é" * RAW_MAX_BYTES  # two bytes a character: cut in the middle would split one
    row = prediction_row(judge="j", strategy="S1", input_type="text", order="normal", round=0, name="s1", gt="a1",
                         pred="a1", parse_rule="direct", raw=huge, run_id="r", dataset="d", created_at="t")
    assert row["raw_truncated"] and len(row["raw"].encode()) <= RAW_MAX_BYTES and row["raw"] == "é" * (RAW_MAX_BYTES // 2)
    short = prediction_row(judge="j", strategy="S1", input_type="text", order="normal", round=0, name="s1", gt="a1",
                           pred="a1", parse_rule="direct", raw="a1", run_id="r", dataset="d", created_at="t")
    assert not short["raw_truncated"] and short["raw"] == "a1"

    class Rambling(FakeBackend):
        def generate(self, requests):
            return [Response(r.key, "a2 " + "x" * (5 * 1024 * 1024)) for r in requests]

    summary = engine.run(FAKE_MLLM, "S1", pairs=toy_pairs(2), rounds=1, order="normal", output_dir=tmp_path,
                         progress=False, dataset="toy", engine=Rambling)
    file = tmp_path / summary.loc[0, "run_id"] / "predictions.jsonl"
    stored = store.read_jsonl(file)
    assert all(r["raw_truncated"] and r["pred"] == "a2" for r in stored)  # parsed from the whole answer
    assert file.stat().st_size < 3 * RAW_MAX_BYTES


# --------------------------------------------------------------------------- what a resume must notice


def write_judge_module(folder: Path, comparison: str) -> None:
    (folder / "flippable_judge.py").write_text(
        "import numpy as np\nimport pandas as pd\nfrom helpers.judges.base import PairJudge\n\n\n"
        "class Flippable(PairJudge):\n"
        "    def predict(self, pairs, *, seed=0):\n"
        "        n1, n2 = pairs['a1'].str.len(), pairs['a2'].str.len()\n"
        f"        return pd.Series(np.where(n1 {comparison} n2, 'a1', 'a2'), index=pairs.index)\n")


def test_a_changed_judge_implementation_is_refused_by_name(tmp_path, monkeypatch):
    """The issue's hostile user: flip ``>`` to ``<`` in a CPU judge between two runs of the
    same command. Before, the second run resumed and mixed old and new labels."""
    code = tmp_path / "code"
    code.mkdir()
    monkeypatch.syspath_prepend(str(code))
    spec = JudgeSpec(name="flippable", family="cpu", backend="cpu", options={"judge_class": "flippable_judge:Flippable"})
    write_judge_module(code, ">")
    first = cpu_run(tmp_path / "store", spec, limit=3)
    write_judge_module(code, "<")
    importlib.invalidate_caches()
    sys.modules.pop("flippable_judge", None)
    with pytest.raises(IdentityError, match=r"implementation.*flippable_judge") as refused:
        cpu_run(tmp_path / "store", spec)
    assert "overwrite=True" in str(refused.value)
    rows = store.read_jsonl(tmp_path / "store" / first.loc[0, "run_id"] / "predictions.jsonl")
    assert len(rows) == 3 * 2  # nothing was added under the new rule
    again = cpu_run(tmp_path / "store", spec, overwrite=True)
    assert again.loc[0, "rows"] == 6 * 2 and len(list((tmp_path / "store" / ".replaced").iterdir())) == 1


def test_the_identity_records_the_code_of_model_free_and_learned_judges():
    from helpers.judges.learned import MiniLMRewardJudge
    from helpers.judges.registry import load_spec
    from helpers.run.identity import implementation_identity

    length = implementation_identity(load_spec("length"))
    assert length["class"] == "helpers.judges.cpu:LengthJudge" and set(length["source_sha256"]) == {"helpers.judges.cpu"}
    learned = MiniLMRewardJudge.implementation(load_spec("minilm_rm"))
    assert {"helpers.judges.learned", "helpers.judges.embeddings"} <= set(learned["source_sha256"])
    assert learned["artefacts"]["embedding_model"] == "all-MiniLM-L6-v2"
    assert implementation_identity(load_spec("qwen25")) is None  # a model's answers are pinned by its checkpoint


def test_another_endpoint_behind_the_same_model_name_is_refused_by_name(tmp_path):
    """An API judge pointed at another server (same checkpoint name) answers differently."""
    here = dataclasses.replace(FAKE_MLLM, api_base="http://127.0.0.1:9001/v1")
    there = dataclasses.replace(FAKE_MLLM, api_base="http://127.0.0.1:9002/v1")
    kwargs = {"pairs": toy_pairs(), "rounds": 1, "output_dir": tmp_path, "progress": False, "dataset": "toy",
              "engine": FakeBackend}
    engine.run(here, "S1", limit=3, **kwargs)
    with pytest.raises(IdentityError, match=r"api_base.*9001"):
        engine.run(there, "S1", **kwargs)
    assert engine.run(here, "S1", **kwargs).loc[0, "rows_new"] == 3 * 2  # the same endpoint resumes


@pytest.mark.parametrize("tamper", ["banana", "duplicate"])
def test_a_tampered_row_is_refused_by_the_closing_table_naming_folder_and_key(tmp_path, tamper):
    summary = cpu_run(tmp_path, JudgeSpec(name="len", family="cpu", backend="cpu",
                                          options={"judge_class": "helpers.judges.cpu:LengthJudge"}))
    file = tmp_path / summary.loc[0, "run_id"] / "predictions.jsonl"
    lines = file.read_text().splitlines(keepends=True)
    if tamper == "banana":
        row = json.loads(lines[2])
        lines[2] = json.dumps(row | {"pred": "banana"}) + "\n"
        expected = r"pred 'banana' is not one of a1, a2, same"
    else:
        row = json.loads(lines[1])
        lines.append(lines[1])
        expected = "stored twice"
    file.write_text("".join(lines))
    for load in (lambda: results.load_run(summary, tmp_path), lambda: results.load_predictions(tmp_path)):
        with pytest.raises(DataError, match=expected) as refused:
            load()
        assert str(file) in str(refused.value) and row["key"] in str(refused.value)


LENGTH = JudgeSpec(name="len", family="cpu", backend="cpu", options={"judge_class": "helpers.judges.cpu:LengthJudge"})


def _edit_round_and_key(row: dict) -> dict:
    return row | {"round": 7, "key": store.row_key(row["strategy"], row["order"], 7, row["name"])}


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda r: r | {"round": 7}, r"round 7 differs from the row's key '-\|normal\|r0\|s02' \(which says '0'\)"),
    (_edit_round_and_key, r"round 7 is beyond the 1 round\(s\) the run was asked for"),
    (lambda r: r | {"judge": "phantom"}, r"judge 'phantom' differs from the 'len' its run folder's manifest records"),
    (lambda r: r | {"strategy": "S1"}, r"strategy 'S1' differs from the row's key"),
    (lambda r: r | {"dataset": "emoprefer"}, r"dataset 'emoprefer' differs from the 'toy' its run folder's manifest"),
    (lambda r: r | {"name": "s05"}, r"name 's05' differs from the row's key"),
    (lambda r: r | {"order": "reverse"}, r"order 'reverse' differs from the row's key"),
    (lambda r: {k: v for k, v in r.items() if k != "key"}, r"field 'key' is missing"),
    (lambda r: [1, 2], r"the line holds a list, not a row object"),
    (lambda r: r | {"round": "0"}, r"round is text \('0'\), not a whole number"),
])
def test_an_edited_row_is_refused_naming_file_line_and_field_by_both_readers(tmp_path, edit, expected):
    """Before: an edited round scored WAF 95.22 instead of 90.67 with exit 0, an edited judge or
    strategy made a phantom cell, an edited name/order, a deleted key or a ``[1,2]`` line gave a
    pandas/Key/TypeError. Each now stops 01_infer's closing table and the report's loader alike."""
    summary = cpu_run(tmp_path, LENGTH)
    file = tmp_path / summary.loc[0, "run_id"] / "predictions.jsonl"
    lines = file.read_text().splitlines(keepends=True)
    lines[2] = json.dumps(edit(json.loads(lines[2]))) + "\n"
    file.write_text("".join(lines))
    for load in (lambda: results.load_run(summary, tmp_path), lambda: results.load_predictions(tmp_path)):
        with pytest.raises(DataError, match=expected) as refused:
            load()
        assert f"{file}, line 3" in str(refused.value)


# --------------------------------------------------------------------------- storage errors


def test_a_full_disk_ends_in_one_clear_message_a_failed_manifest_and_no_temp_file(tmp_path, monkeypatch):
    spec = JudgeSpec(name="len", family="cpu", backend="cpu", options={"judge_class": "helpers.judges.cpu:LengthJudge"})
    real = store.append_jsonl

    def full(path, rows):
        if path.name == "predictions.jsonl" and rows:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, rows)

    monkeypatch.setattr(store, "append_jsonl", full)
    with pytest.raises(StorageError) as failed:
        cpu_run(tmp_path, spec)
    folder = tmp_path / "len__cpu__text__toy"
    message = str(failed.value)
    assert str(folder) in message and "disk is full" in message and "run the same command again" in message
    assert manifest_in(folder)["status"] == "failed" and "disk is full" in manifest_in(folder)["error"]["message"]
    assert not list(folder.glob("*.tmp"))
    monkeypatch.setattr(store, "append_jsonl", real)
    assert cpu_run(tmp_path, spec).loc[0, "status"] == "complete"  # space freed: the same command resumes


def test_a_read_only_folder_leaves_no_temp_file_and_names_the_folder(tmp_path, monkeypatch):
    real = os.replace

    def read_only(src, dst):
        if str(dst).endswith("manifest.json"):
            raise OSError(errno.EROFS, "Read-only file system")
        return real(src, dst)

    monkeypatch.setattr(store.os, "replace", read_only)
    with pytest.raises(StorageError, match=r"read-only.*choose another store") as failed:
        with RunSession("r", tmp_path, identity={}) as run:
            run.start({"judge": "j"})
    assert str(tmp_path / "r") in str(failed.value)
    assert not list((tmp_path / "r").glob("*.tmp")) and not (tmp_path / "r" / "lock").exists()


def test_overwrite_moves_aside_and_never_deletes(tmp_path):
    with RunSession("r", tmp_path, identity={"v": 1}) as run:
        run.start({})
        run.append([prediction_row(judge="j", strategy="S1", input_type="text", order="normal", round=0, name="s1",
                                   gt="a1", pred="a1", parse_rule="direct", raw="a1", run_id="r", dataset="d",
                                   created_at="t")])
        run.close()

    def refuse(folder, stored, identity, done):
        if stored.identity != identity:
            raise IdentityError(f"{folder}: other identity")

    with pytest.raises(IdentityError):
        RunSession("r", tmp_path, identity={"v": 2}, refuse=refuse).open()
    with RunSession("r", tmp_path, identity={"v": 2}, refuse=refuse, overwrite=True) as run:
        assert run.moved is not None and run.done == set()
    assert len(store.read_jsonl(run.moved / "predictions.jsonl")) == 1


def test_the_manifest_names_each_roles_engine_and_a_schema_2_folder_resumes_without_its_old_name(tmp_path):
    """Schema 3 records ``engines`` (the run setting's name); a folder written under schema 2 with
    ``backends`` keeps its rows on resume and ends with one record of the engines, not two."""
    summary = engine.run(FAKE_MLLM, "S1", pairs=toy_pairs(3), rounds=1, order="normal", output_dir=tmp_path,
                         progress=False, dataset="toy", engine=FakeBackend)
    folder = tmp_path / summary.loc[0, "run_id"]
    manifest = manifest_in(folder)
    assert manifest["engines"] == {"judge": "custom"} and "backends" not in manifest
    old = {k: v for k, v in manifest.items() if k != "engines"} | {"backends": manifest["engines"], "schema_version": 2}
    (folder / "manifest.json").write_text(json.dumps(old))
    assert store.read_manifest(folder).details["engines"] == {"judge": "custom"}  # read under today's name
    rows = store.read_jsonl(folder / "predictions.jsonl")

    engine.run(FAKE_MLLM, "S1", pairs=toy_pairs(3), rounds=1, order="normal", output_dir=tmp_path,
               progress=False, dataset="toy", engine=FakeBackend)
    resumed = manifest_in(folder)
    assert resumed["schema_version"] == store.MANIFEST_SCHEMA == 3 and resumed["status"] == "complete"
    assert resumed["engines"] == {"judge": "custom"} and "backends" not in resumed
    assert store.read_jsonl(folder / "predictions.jsonl") == rows


# --------------------------------------------------------------------------- one schema of run parameters


def parameters_cell() -> dict:
    nb = nbformat.read(ROOT / "notebooks" / "01_infer.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    values = {}
    for node in ast.parse(cell.source).body:
        values[node.targets[0].id] = ast.literal_eval(node.value)
    return values


def test_the_notebooks_parameters_are_the_run_configs_fields_with_their_defaults():
    cell = parameters_cell()
    schema = engine.RunConfig.notebook_parameters()
    assert list(cell) == list(schema)  # a field added to RunConfig must appear in 01_infer (and vice versa)
    assert {k: v for k, v in cell.items() if k != "model"} == {k: v for k, v in schema.items() if k != "model"}


def test_a_grid_cell_becomes_the_config_01_infer_makes_from_the_same_parameters(tmp_path):
    parameters = {"model": "length", "rounds": 1, "limit": 3, "output_dir": str(tmp_path), "overwrite": True,
                  "share_descriptions": True, "unknown_papermill_key": 1}
    config = engine.RunConfig.from_parameters(parameters)
    assert (config.model, config.rounds, config.limit, config.output_dir, config.overwrite) == \
        ("length", 1, 3, tmp_path, True)
    assert launch.RUNTIME_PARAMETERS == engine.RunConfig.RUNTIME
    assert "run_statuses" in launch.__dict__ and "RunConfig.from_parameters" in inspect.getsource(launch.run_statuses)


def test_the_tournaments_judge_flags_are_run_config_fields():
    from helpers.tournament import judge as tournament

    translated = {"judge": "model", "store_root": "output_dir"}  # the tournament's own words for two fields
    own = {"pairs", "training", "judges", "names", "tag", "executor", "shards", "workers", "address"}  # data and scheduling
    fields = {f.name for f in dataclasses.fields(engine.RunConfig)}
    for fn in (tournament.judge_shard, tournament.judge_tournament):
        names = set(inspect.signature(fn).parameters) - own
        assert {translated.get(n, n) for n in names} <= fields, fn.__name__


def test_the_engine_choice_has_one_list_and_a_wrong_one_is_refused():
    assert ENGINES == ("auto", "transformers", "vllm", "openai")
    with pytest.raises(ValueError, match=r"engine must be one of \('auto', 'transformers', 'vllm', 'openai'\)"):
        engine.RunConfig("length", engine="local")


@pytest.mark.parametrize("old, new", [("backend", "engine"), ("llm_backend", "llm_engine")])
def test_the_engine_setting_by_its_old_name_is_refused_with_its_new_one(old, new):
    """Silently ignoring ``-p backend vllm`` would run on another engine than the user asked for."""
    with pytest.raises(TypeError, match=f"the run setting '{old}' is now called '{new}'"):
        engine.run("length", **{old: "vllm"})
    with pytest.raises(TypeError, match=f"the run setting '{old}' is now called '{new}'"):
        engine.RunConfig.from_parameters({"model": "length", old: "vllm"})


def test_one_strategy_record_drives_the_pipeline_and_the_identity():
    from helpers.run.identity import prompt_keys

    assert [s for s, r in STRATEGY_RECORDS.items() if r.describes] == ["S2", "S3", "S4"]
    assert [s for s, r in STRATEGY_RECORDS.items() if r.uses_llm] == ["S3", "S4"]
    assert prompt_keys(FAKE_MLLM, "S4") == ["describe_video", "S4_reason", "S4_extract", "system_omni"]
    pipeline = Pipeline(FAKE_MLLM, lambda: FakeBackend(FAKE_MLLM), input_type="text", dataset="toy")
    row = pipeline.row(STRATEGY_RECORDS["S2"], Item("s1", "s1", "normal", 0, "x", "y", "a1"),
                       Response("S2|normal|r0|s1", "a2"), "run")
    assert row["steps"] == {"describe": pipeline.describe_key(Item("s1", "s1", "normal", 0, "x", "y"))}
    assert row["run_id"] == "run" and row["key"] == "S2|normal|r0|s1"


@pytest.mark.parametrize(("edit", "message"), [
    ({"schema_version": "2"}, "schema_version must be a whole number from 1 to 3, not '2'"),
    ({"schema_version": None}, "schema_version must be a whole number from 1 to 3, not None"),
    ({"schema_version": 99}, r"schema_version 99 is newer than this code reads \(3\)"),
    ({"sessions": "oops"}, "field 'sessions' must be a list, not text"),
    ({"identity": [1, 2]}, "field 'identity' must be an object, not a list"),
    ({"judge": 7}, "field 'judge' must be text, not a whole number"),
    ({"rounds": "2"}, "field 'rounds' must be a whole number, not text"),
    ({"sessions": ["oops"]}, r"sessions\[0\] must be an object, not text"),
    (None, "a run manifest is a JSON object, not a list"),
])
def test_a_malformed_or_future_manifest_is_one_store_error_naming_file_and_field(tmp_path, edit, message):
    """Before: schema_version "2"/null or a list gave a TypeError/AttributeError deep in a reader,
    99 was silently rewritten to 3, ``sessions: "oops"`` crashed the next checkpoint."""
    with RunSession("r", tmp_path, identity={"v": 1}) as run:
        run.start({"judge": "j", "rounds": 1})
        run.close()
    path = tmp_path / "r" / "manifest.json"
    good = json.loads(path.read_text())
    path.write_text(json.dumps([1, 2] if edit is None else {**good, **edit}))
    with pytest.raises(store.StoreError, match=message) as info:
        store.read_manifest(tmp_path / "r")
    assert str(path) in str(info.value)
    with pytest.raises(store.StoreError, match=message):  # the engine's resume reads it the same way
        RunSession("r", tmp_path, identity={"v": 1}).open()
    assert json.loads(path.read_text()) == ([1, 2] if edit is None else {**good, **edit})  # not rewritten
    with RunSession("r", tmp_path, identity={"v": 1}, overwrite=True) as run:  # overwrite moves it aside
        assert run.moved is not None


def test_every_manifest_is_read_through_the_typed_reader():
    """No module but ``run/store.py`` parses a manifest's JSON itself: the others call
    ``store.read_manifest`` and get a :class:`RunManifest` (the grep of issue 28)."""
    import re

    src = Path(store.__file__).parents[1]
    pattern = re.compile(r"json\.loads?\(.*manifest|manifest.*json\.loads?\(", re.IGNORECASE)
    offenders = {str(p.relative_to(src)) for p in src.rglob("*.py") if p.name != "store.py"
                 and any(pattern.search(line) for line in p.read_text(encoding="utf-8").splitlines())}
    assert offenders <= {"tournament/design.py"}  # the design's own record (issue 27), not a run manifest
    assert not hasattr(store, "read_run_manifest")  # one reader, not two
