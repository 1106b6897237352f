"""The EmoPrefer data layer: where files come from, what is rejected, and what v1 looks like."""

from __future__ import annotations

import csv
import functools
import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest

from helpers import data

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "emoprefer"
REAL = Path(os.environ.get("EMOPREFER_DATA", SHARED))
needs_real = pytest.mark.skipif(
    not (REAL / "preference_emoprefer.csv").is_file(),
    reason=f"real EmoPrefer v1 files not found (set EMOPREFER_DATA; looked in {REAL})",
)

PAIRS = [
    ("s_001", "a long and detailed description of joy", "short calm", "a1"),
    ("s_002", "anger", "a description of anger, with\nsome context", "a2"),
    ("s_003", "sadness", "sorrow", "same"),
]


def write_csv(path: Path, header: list[str], rows: list[tuple]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def make_dataset(folder: Path, rows=PAIRS, reverse=True, named=True) -> Path:
    """A small valid v1-shaped folder; tests then corrupt one thing at a time."""
    folder.mkdir(parents=True, exist_ok=True)
    write_csv(folder / "preference_emoprefer.csv", ["name", "a1", "a2", "preference"], rows)
    if reverse:
        swapped = [(n, a2, a1, data.swap_label(p)) for n, a1, a2, p in rows]
        write_csv(folder / "preference_emoprefer_reverse.csv", ["name", "a1", "a2", "preference"], swapped)
    if named:
        with_models = [(n, "mercaptionplus", a1, "merrfine", a2, p) for n, a1, a2, p in rows]
        write_csv(
            folder / "preference_emoprefer_with_modelnames.csv",
            ["name", "model1", "a1", "model2", "a2", "preference"],
            with_models,
        )
    return folder


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No test sees the developer's EMOPREFER_DATA, cache or network unless it asks."""
    monkeypatch.delenv("EMOPREFER_DATA", raising=False)
    monkeypatch.setenv("EMOPREFER_ROOT", str(tmp_path / "project"))
    (tmp_path / "project" / "params").mkdir(parents=True)
    root = Path(__file__).resolve().parents[1]
    (tmp_path / "project" / "params" / "datasets.yaml").write_text((root / "params" / "datasets.yaml").read_text())
    monkeypatch.setenv("EMOPREFER_BASE_URL", "http://127.0.0.1:9/nowhere/")  # closed port: offline
    data.dataset_specs.cache_clear()
    data._load_checked.cache_clear()
    yield
    data.dataset_specs.cache_clear()
    data._load_checked.cache_clear()


def errors_for(folder: Path) -> str:
    with pytest.raises(data.DataError) as info:
        data.load_pairs(data_dir=folder)
    return str(info.value)


# --------------------------------------------------------------------------- loading


def test_load_pairs_reads_columns_and_model_names(tmp_path):
    pairs = data.load_pairs(data_dir=make_dataset(tmp_path / "d"))
    assert list(pairs.columns) == ["name", "a1", "a2", "preference", "model1", "model2"]
    assert pairs["preference"].tolist() == ["a1", "a2", "same"]
    assert pairs.loc[1, "a2"] == "a description of anger, with\nsome context"


def test_reverse_order_swaps_texts_models_and_labels(tmp_path):
    folder = make_dataset(tmp_path / "d")
    normal = data.load_pairs(order="normal", data_dir=folder)
    reverse = data.load_pairs(order="reverse", data_dir=folder)
    assert (reverse["a1"] == normal["a2"]).all() and (reverse["a2"] == normal["a1"]).all()
    assert reverse["preference"].tolist() == ["a2", "a1", "same"]
    assert reverse["model1"].tolist() == ["merrfine"] * 3


def test_reverse_is_derived_when_the_reverse_file_is_absent(tmp_path):
    folder = make_dataset(tmp_path / "d", reverse=False, named=False)
    reverse = data.load_pairs(order="reverse", data_dir=folder)
    assert reverse["preference"].tolist() == ["a2", "a1", "same"]
    assert "model1" not in reverse.columns


def test_unknown_order_and_dataset_are_rejected(tmp_path):
    folder = make_dataset(tmp_path / "d")
    with pytest.raises(data.DataError, match="order"):
        data.load_pairs(order="sideways", data_dir=folder)
    with pytest.raises(data.DataError, match="unknown dataset"):
        data.load_pairs(dataset="emoprefer9", data_dir=folder)


# --------------------------------------------------------------------------- bad input, one rule each


def test_missing_column_names_file_and_column(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    write_csv(folder / "preference_emoprefer.csv", ["name", "a1", "a2"], [("s1", "x", "y")])
    message = errors_for(folder)
    assert "preference_emoprefer.csv, line 1" in message and "preference" in message


def test_bad_label_names_line_column_and_value(tmp_path):
    rows = [PAIRS[0], ("s_002", "x", "y", "both")]
    message = errors_for(make_dataset(tmp_path / "d", rows=rows, reverse=False, named=False))
    assert "line 3, column 'preference'" in message and "'both'" in message


def test_line_numbers_count_physical_lines_of_multiline_records(tmp_path):
    rows = [PAIRS[1], ("s_009", "x", "y", "maybe")]  # PAIRS[1] spans two lines
    message = errors_for(make_dataset(tmp_path / "d", rows=rows, reverse=False, named=False))
    assert "line 4, column 'preference'" in message


@pytest.mark.parametrize("name", ["../etc/passwd", "a b", "x..y", "dir/file", "", "."])
def test_unsafe_names_are_rejected(tmp_path, name):
    rows = [PAIRS[0], (name, "x", "y", "a1")]
    message = errors_for(make_dataset(tmp_path / "d", rows=rows, reverse=False, named=False))
    assert "line 3, column 'name'" in message


def test_duplicate_names_are_rejected(tmp_path):
    rows = [PAIRS[0], PAIRS[1], ("s_001", "x", "y", "a1")]
    message = errors_for(make_dataset(tmp_path / "d", rows=rows, reverse=False, named=False))
    # PAIRS[1] spans lines 3-4, so the duplicate record starts on line 5
    assert "line 5, column 'name'" in message and "duplicate" in message and "first on line 2" in message


def test_empty_description_is_rejected(tmp_path):
    rows = [PAIRS[0], ("s_002", "x", "   ", "a1")]
    message = errors_for(make_dataset(tmp_path / "d", rows=rows, reverse=False, named=False))
    assert "line 3, column 'a2'" in message and "empty" in message


def test_reverse_file_must_swap_texts_and_map_labels(tmp_path):
    folder = make_dataset(tmp_path / "d", named=False)
    write_csv(
        folder / "preference_emoprefer_reverse.csv",
        ["name", "a1", "a2", "preference"],
        [(n, a2, a1, p) for n, a1, a2, p in PAIRS],  # labels not mapped
    )
    message = errors_for(folder)
    assert "preference_emoprefer_reverse.csv, line 2, column 'preference'" in message
    assert "must be 'a2'" in message


def test_reverse_file_with_unswapped_text_is_rejected(tmp_path):
    folder = make_dataset(tmp_path / "d", named=False)
    write_csv(
        folder / "preference_emoprefer_reverse.csv",
        ["name", "a1", "a2", "preference"],
        [(n, a1, a2, data.swap_label(p)) for n, a1, a2, p in PAIRS],
    )
    assert "column 'a1'" in errors_for(folder)


def test_modelnames_file_must_agree_with_the_plain_file(tmp_path):
    folder = make_dataset(tmp_path / "d")
    write_csv(
        folder / "preference_emoprefer_with_modelnames.csv",
        ["name", "model1", "a1", "model2", "a2", "preference"],
        [(n, "m1", a1, "m2", a2, "a1") for n, a1, a2, _ in PAIRS],
    )
    message = errors_for(folder)
    assert "with_modelnames.csv, line 3, column 'preference'" in message


def test_every_problem_is_reported_not_just_the_first(tmp_path):
    rows = [("bad name", "x", "y", "a1"), ("s_2", "", "y", "a3")]
    message = errors_for(make_dataset(tmp_path / "d", rows=rows, reverse=False, named=False))
    assert "3 problem(s)" in message


# --------------------------------------------------------------------------- hostile files: loader and CLI agree

SRC = Path(data.__file__).resolve().parents[1]  # the helpers package these tests import


def check_cli(folder: Path) -> subprocess.CompletedProcess:
    """``python -m helpers.data check FOLDER`` as a user runs it, on the same source tree."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-m", "helpers.data", "check", str(folder)],
                          capture_output=True, text=True, env=env, timeout=120)


def refused_everywhere(folder: Path, *parts: str) -> str:
    """The loader raises DataError and the command exits 1, both with every part, never a traceback."""
    message = errors_for(folder)
    for part in parts:
        assert part in message, f"{part!r} not in the loader's message:\n{message}"
    data._load_checked.cache_clear()
    result = check_cli(folder)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert message in result.stderr, "the command prints the loader's message"
    assert "pairs:" not in result.stdout, "no summary of data that were refused"
    return message


def accepted_everywhere(folder: Path) -> pd.DataFrame:
    pairs = data.load_pairs(data_dir=folder)
    result = check_cli(folder)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert f"pairs: {len(pairs)}" in result.stdout
    return pairs


def write_raw(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


NORMAL = "preference_emoprefer.csv"


def test_utf8_bom_header_is_accepted(tmp_path):
    folder = make_dataset(tmp_path / "d")
    for path in folder.iterdir():  # Excel's "CSV UTF-8" puts a byte-order mark before the header
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    pairs = accepted_everywhere(folder)
    assert pairs["name"].tolist() == ["s_001", "s_002", "s_003"]
    assert list(pairs.columns)[:4] == ["name", "a1", "a2", "preference"]


def test_latin1_file_names_file_line_and_column(tmp_path):
    text = "name,a1,a2,preference\ns_001,joy,calm,a1\ns_002,anger,un caf\u00e9 triste,a2\n"
    write_raw(tmp_path / "d" / NORMAL, text, encoding="latin-1")
    refused_everywhere(tmp_path / "d", f"{NORMAL}, line 3, column 'a2'", "not UTF-8", "0xE9")


def test_invalid_byte_inside_a_multiline_description_names_its_physical_line(tmp_path):
    folder = tmp_path / "d"
    write_raw(folder / NORMAL, 'name,a1,a2,preference\ns_001,"joy\nand more",calm,a1\n')
    path = folder / NORMAL
    path.write_bytes(path.read_bytes().replace(b"and more", b"and \xff more"))
    refused_everywhere(folder, f"{NORMAL}, line 3, column 'a1'", "not UTF-8", "0xFF")


@pytest.mark.parametrize("newline", ["\r\n", "\r"], ids=["windows_crlf", "old_mac_cr"])
def test_crlf_and_cr_line_endings_keep_their_line_numbers(tmp_path, newline):
    lines = ["name,a1,a2,preference", 's_001,"joy' + newline + 'and more",calm,a1', "s_002,anger,calm,maybe", ""]
    write_raw(tmp_path / "bad" / NORMAL, newline.join(lines))
    refused_everywhere(tmp_path / "bad", f"{NORMAL}, line 4, column 'preference'", "'maybe'")
    write_raw(tmp_path / "ok" / NORMAL, newline.join(lines).replace("maybe", "a2"))
    pairs = accepted_everywhere(tmp_path / "ok")
    assert pairs["a1"].tolist() == ["joy" + newline + "and more", "anger"]


def test_description_of_200_kb_is_accepted_intact(tmp_path):
    long = "joy " * 50_000  # 200,000 characters: over csv's default 131,072
    pairs = accepted_everywhere(make_dataset(tmp_path / "d", rows=[(*PAIRS[0][:2], long, "a1")]))
    assert pairs.loc[0, "a2"] == long
    assert csv.field_size_limit() == 131_072, "csv's process-wide limit is put back"


def test_description_at_the_cap_is_accepted_and_one_more_character_is_refused(tmp_path):
    at_cap = "x" * data.MAX_FIELD_CHARS
    assert len(data.load_pairs(data_dir=make_dataset(tmp_path / "ok", rows=[("s_1", at_cap, "y", "a1")]))) == 1
    over = make_dataset(tmp_path / "over", rows=[("s_1", at_cap + "x", "y", "a1")], reverse=False, named=False)
    refused_everywhere(over, f"{NORMAL}, line 2, column 'a1'", "1,048,577 characters", "1,048,576 accepted")


@pytest.mark.slow
def test_description_of_100_mb_is_refused_clearly(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    with open(folder / NORMAL, "w", encoding="utf-8") as handle:
        handle.write("name,a1,a2,preference\ns_001,joy,calm,a1\ns_002,")
        handle.write("x" * 100_000_000)
        handle.write(",calm,a2\n")
    refused_everywhere(folder, f"{NORMAL}, line 3, column 'a1'", "100,000,000 characters")


def test_unclosed_quote_is_a_located_error(tmp_path):
    write_raw(tmp_path / "d" / NORMAL, 'name,a1,a2,preference\ns_001,joy,calm,a1\ns_002,"anger,calm,a2\n')
    refused_everywhere(tmp_path / "d", f"{NORMAL}, line 3", "not valid CSV")


def test_duplicate_header_column_is_refused(tmp_path):
    write_raw(tmp_path / "d" / NORMAL, "name,a1,a2,preference,a1\ns_001,joy,calm,a1,again\n")
    refused_everywhere(tmp_path / "d", f"{NORMAL}, line 1, column 'a1'", "twice in the header")


def test_header_only_files_are_refused_not_an_empty_study(tmp_path):
    folder = make_dataset(tmp_path / "d", rows=[])
    message = refused_everywhere(folder, f"{NORMAL}, line 1", "no data rows")
    assert "3 problem(s)" in message, "each of the three header-only files is named"


def test_header_only_file_after_blank_lines_names_the_header_line(tmp_path):
    write_raw(tmp_path / "d" / NORMAL, "\n\nname,a1,a2,preference\n\n")
    refused_everywhere(tmp_path / "d", f"{NORMAL}, line 3", "no data rows")


def test_empty_file_is_refused(tmp_path):
    write_raw(tmp_path / "d" / NORMAL, "")
    refused_everywhere(tmp_path / "d", f"{NORMAL}, line 1", "file is empty")


def test_dot_sample_name_is_rejected_like_dotdot(tmp_path):
    for name in (".", ".."):
        with pytest.raises(data.DataError, match="unsafe sample name"):
            data.check_name(name)
        with pytest.raises(data.DataError, match="unsafe"):
            data.media_paths(name, tmp_path)
    folder = make_dataset(tmp_path / "d", rows=[PAIRS[0], (".", "x", "y", "a1")], reverse=False, named=False)
    refused_everywhere(folder, f"{NORMAL}, line 3, column 'name'", "not '.'")


def test_project_without_dataset_list_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("EMOPREFER_ROOT", str(tmp_path / "not_a_project"))
    data.dataset_specs.cache_clear()
    with pytest.raises(data.DataError, match="datasets.yaml: cannot read the dataset list"):
        data.load_pairs(data_dir=make_dataset(tmp_path / "d"))
    result = check_cli(tmp_path / "d")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "datasets.yaml: cannot read the dataset list" in result.stderr


def test_an_edited_file_is_read_again_not_served_from_the_cache(tmp_path):
    folder = make_dataset(tmp_path / "d", reverse=False, named=False)
    assert data.load_pairs(data_dir=folder)["preference"].tolist() == ["a1", "a2", "same"]
    relabelled = [(n, a1, a2, "same") for n, a1, a2, _ in PAIRS]
    write_csv(folder / NORMAL, ["name", "a1", "a2", "preference"], relabelled)
    assert data.load_pairs(data_dir=folder)["preference"].tolist() == ["same"] * 3


# --------------------------------------------------------------------------- where the files come from


def test_explicit_argument_wins_over_environment(tmp_path, monkeypatch):
    env_dir = make_dataset(tmp_path / "env", rows=PAIRS[:1], reverse=False, named=False)
    arg_dir = make_dataset(tmp_path / "arg")
    monkeypatch.setenv("EMOPREFER_DATA", str(env_dir))
    assert data.resolve_data_dir("emoprefer", arg_dir) == arg_dir
    assert data.resolve_data_dir("emoprefer") == env_dir


def test_environment_pointing_to_an_empty_folder_is_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("EMOPREFER_DATA", str(tmp_path / "empty"))
    with pytest.raises(data.DataError, match=r"\$EMOPREFER_DATA points to .*empty"):
        data.load_pairs()


def test_project_cache_is_used_when_nothing_is_given(tmp_path):
    cached = make_dataset(tmp_path / "project" / "data" / "raw" / "emoprefer")
    assert data.resolve_data_dir("emoprefer") == cached
    assert len(data.load_pairs()) == 3


def test_offline_with_nothing_found_names_the_variable(tmp_path):
    with pytest.raises(data.DataError, match="EMOPREFER_DATA"):
        data.load_pairs()


@pytest.fixture
def http_server(tmp_path):
    """A local HTTP server standing in for the official address."""
    served = make_dataset(tmp_path / "served")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_download_from_local_http_server_into_the_cache(http_server, monkeypatch, tmp_path):
    monkeypatch.setenv("EMOPREFER_BASE_URL", http_server)
    with pytest.warns(UserWarning, match="differ from the paper"):  # our fixture is not the paper's file
        pairs = data.load_pairs()
    assert len(pairs) == 3
    cache = tmp_path / "project" / "data" / "raw" / "emoprefer"
    assert sorted(p.name for p in cache.iterdir()) == sorted(data.dataset_spec("emoprefer").files.values())
    assert not list(cache.glob("*.part"))


def test_download_from_file_url(tmp_path, monkeypatch):
    served = make_dataset(tmp_path / "served", named=False)
    monkeypatch.setenv("EMOPREFER_BASE_URL", served.as_uri() + "/")
    with pytest.warns(UserWarning):
        assert len(data.load_pairs(order="reverse")) == 3


# --------------------------------------------------------------------------- media


def test_media_paths_flat_and_mer2025_layout(tmp_path):
    flat = data.media_paths("s_001", tmp_path)
    assert flat.video == tmp_path / "s_001.mp4" and flat.audio == tmp_path / "s_001.wav"
    (tmp_path / "video").mkdir()
    (tmp_path / "video" / "s_001.mp4").write_bytes(b"")
    assert data.media_paths("s_001", tmp_path).video == tmp_path / "video" / "s_001.mp4"


def test_media_paths_refuse_traversal(tmp_path):
    with pytest.raises(data.DataError, match="unsafe"):
        data.media_paths("../secret", tmp_path)


def test_missing_media_lists_every_missing_file(tmp_path):
    (tmp_path / "s_001.mp4").write_bytes(b"")
    missing = data.missing_media(["s_001", "s_002", "s_003"], tmp_path, "audiovideo")
    assert missing == [tmp_path / "s_002.mp4", tmp_path / "s_003.mp4"]
    assert len(data.missing_media(["s_001"], tmp_path, "audio")) == 1
    assert data.missing_media(["s_001"], None, "text") == []


# --------------------------------------------------------------------------- command line


def test_check_command_accepts_valid_and_rejects_invalid(tmp_path, capsys):
    assert data.main(["check", str(make_dataset(tmp_path / "ok"))]) == 0
    assert "pairs: 3" in capsys.readouterr().out
    bad = make_dataset(tmp_path / "bad", rows=[("s_1", "x", "y", "nope")], reverse=False, named=False)
    assert data.main(["check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "line 2, column 'preference'" in err


# --------------------------------------------------------------------------- the real v1 files


@needs_real
def test_real_v1_has_the_published_shape():
    pairs = data.load_pairs(data_dir=REAL)
    assert len(pairs) == 574
    assert pairs["preference"].value_counts().to_dict() == {"a2": 288, "a1": 275, "same": 11}
    assert set(pairs["model1"]) | set(pairs["model2"]) == {"merrfine", "mercaptionplus"}


@needs_real
def test_real_v1_sha256_matches_the_pinned_values():
    checked = data.check_dataset("emoprefer", REAL)
    assert checked.problems == []
    assert checked.sha_ok is True


@needs_real
def test_real_v1_reverse_file_is_consistent():
    normal = data.load_pairs(data_dir=REAL)
    reverse = data.load_pairs(order="reverse", data_dir=REAL)
    pd.testing.assert_frame_equal(data.swap_pairs(normal), reverse)
