"""User errors at the command lines of the importer and the OpenAI backend's replies (issue 20):
one message naming the argument or file and the fix, exit 2 for a bad argument, exit 1 for bad
data, and a file can make the importer allocate only what an answer file or a table needs."""

from __future__ import annotations

import time

import numpy as np
import pytest

from helpers import imports
from helpers.judges import openai as O


def test_a_header_only_table_is_refused_naming_the_file(tmp_path, capsys):
    path = tmp_path / "preds.csv"
    path.write_text("name,strategy,order,round,pred\n")
    assert imports.main(["table", str(path), "--judge", "my_judge", "--input-type", "video",
                         "--output-dir", str(tmp_path / "store")]) == 1
    err = capsys.readouterr().err
    assert f"{path}, line 1: has a header but no data rows" in err and "Traceback" not in err


@pytest.mark.parametrize("judge", ["../x", "a b", "x__y"])
def test_a_judge_name_that_cannot_name_a_run_folder_is_a_usage_error(tmp_path, capsys, judge):
    path = tmp_path / "preds.csv"
    path.write_text("name,strategy,order,round,pred\n")
    with pytest.raises(SystemExit) as info:
        imports.main(["table", str(path), "--judge", judge])
    assert info.value.code == 2 and "argument --judge" in capsys.readouterr().err


def test_a_non_utf8_byte_string_label_is_refused_naming_key_and_row(tmp_path):
    path = tmp_path / "answers.npz"
    np.savez_compressed(path, gt_labels=np.array([b"a1", b"a2"]), pred_labels=np.array([b"a1", b"\xffa"]))
    with pytest.raises(imports.ImportsError, match=r"'pred_labels', row 1: .* is not UTF-8 text \(byte 0xFF\)"):
        imports.read_answer_file(path)


def test_a_small_file_holding_millions_of_labels_is_refused_from_its_header(tmp_path):
    path = tmp_path / "bomb.npz"
    labels = np.full(imports.MAX_LABELS + 1, b"a1", dtype="S2")  # compresses to a few kB
    np.savez_compressed(path, gt_labels=labels, pred_labels=labels)
    assert path.stat().st_size < 100_000
    start = time.perf_counter()
    with pytest.raises(imports.ImportsError, match="holds 1,000,001 values.*refused before loading"):
        imports.read_answer_file(path)
    assert time.perf_counter() - start < 1.0  # nothing decompressed


def test_a_parquet_table_with_too_many_rows_is_refused_from_its_footer(tmp_path, monkeypatch):
    import pandas as pd

    path = tmp_path / "preds.parquet"
    pd.DataFrame({"name": ["x"] * 11}).to_parquet(path)
    monkeypatch.setattr(imports, "MAX_TABLE_ROWS", 10)
    with pytest.raises(imports.ImportsError, match="11 rows; at most 10 accepted"):
        imports.read_prediction_table(path)


def test_a_file_that_is_not_parquet_is_refused_naming_it(tmp_path):
    path = tmp_path / "preds.parquet"
    path.write_text("name,strategy\n")
    with pytest.raises(imports.ImportsError, match=r"preds\.parquet: is not a readable Parquet file"):
        imports.read_prediction_table(path)


@pytest.mark.parametrize("content", [42, {"text": "a1"}, 1.5])
def test_an_api_answer_whose_content_is_not_text_is_an_error_not_a_crash(content):
    payload = {"choices": [{"message": {"content": content}}]}
    with pytest.raises(TypeError, match=f"message content is {type(content).__name__}"):
        O.response_text(payload)
    assert O.response_text({"choices": [{"message": {"content": None}}]}) == ""


def test_the_backend_reports_a_non_text_content_as_a_bad_reply(monkeypatch):
    from helpers.judges.base import JudgeSpec

    spec = JudgeSpec(name="api", family="openai", backend="openai", checkpoint="m", input_type="video",
                     api_base="http://127.0.0.1:9", api_key_env="K")
    backend = O.OpenAIBackend(spec)
    monkeypatch.setattr(backend, "_post", lambda data, key: {"choices": [{"message": {"content": 42}}]})
    with pytest.raises(O.OpenAIError, match="not a chat completion .*message content is int"):
        backend._complete({}, "secret")


# --------------------------------------------------------------------------- helpers.run and helpers.report


@pytest.mark.parametrize(("argv", "named"), [
    (["--workers", "0"], "argument --workers"),
    (["--gpus", "x,y"], "argument --gpus"),
    (["--executor", "foo"], "argument --executor"),
    (["-p", "seed", "{bad"], "argument -p seed"),
])
def test_a_bad_run_argument_is_a_usage_error_before_any_cell_runs(tmp_path, capsys, argv, named):
    from helpers.run.launch import main

    grid = tmp_path / "grid.yaml"
    grid.write_text("cells: []\n")
    with pytest.raises(SystemExit) as info:
        main([str(grid), "--dry-run", *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err


def test_a_report_out_path_through_a_file_is_a_usage_error(tmp_path, capsys):
    from helpers.report.render import main

    (tmp_path / "file").write_text("x")
    (tmp_path / "index.qmd").write_text("# x\n")
    with pytest.raises(SystemExit) as info:
        main(["--index", str(tmp_path / "index.qmd"), "--out", str(tmp_path / "file" / "x.html")])
    assert info.value.code == 2 and "argument --out" in capsys.readouterr().err
