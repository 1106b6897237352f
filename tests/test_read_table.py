"""The one reader of a user's table (``helpers.data.read_table``/``scan_table``): CSV or Parquet,
UTF-8, each column once, a field size cap, the required columns, at least one row; every user
table (tournament entries, human labels, training pairs, imported predictions) goes through it."""

from __future__ import annotations

import pandas as pd
import pytest

from helpers import data, imports
from helpers.data import DataError, read_table
from helpers.tournament.judge import training_pairs
from helpers.tournament.rank import load_human
from helpers.tournament.table import read_entries


def test_a_csv_is_read_as_text_with_each_records_line(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('name,text\nx,"two\nlines"\ny,0001\n', encoding="utf-8")
    frame = read_table(path, ("name",))
    assert frame["text"].tolist() == ["two\nlines", "0001"]  # strings, leading zeros kept
    assert frame["csv_line"].tolist() == [2, 4]


def test_a_parquet_table_is_read_by_its_suffix(tmp_path):
    path = tmp_path / "t.parquet"
    pd.DataFrame({"name": ["x", "y"], "n": [1, 2]}).to_parquet(path)
    assert read_table(path, ("name", "n"))["name"].tolist() == ["x", "y"]


@pytest.mark.parametrize(("content", "message"), [
    (b"name,name\nx,y\n", "line 1, column 'name': column appears twice in the header (columns 1 and 2)"),
    (b"name,text\nx,caf\xe9\n", "line 2, column 'text': is not UTF-8 text"),
    (b"text\nx\n", "line 1: missing required column(s) name"),
    (b"name\n", "line 1: has a header but no data rows"),
    (b"", "line 1: file is empty"),
])
def test_a_bad_csv_is_one_located_data_error(tmp_path, content, message):
    path = tmp_path / "t.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match="problem") as info:
        read_table(path, ("name",), "pair file")
    assert f"in pair file {path}" in str(info.value) and f"{path}, {message}" in str(info.value)


def test_a_field_over_the_cap_is_refused_naming_line_and_column(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "MAX_FIELD_CHARS", 10)
    path = tmp_path / "t.csv"
    path.write_text("name,text\nx," + "y" * 11 + "\n")
    with pytest.raises(DataError, match=r"line 2, column 'text': field has 11 characters"):
        read_table(path, ("name",))
    parquet = tmp_path / "t.parquet"
    pd.DataFrame({"name": ["x"], "text": ["y" * 11]}).to_parquet(parquet)
    with pytest.raises(DataError, match=r"column 'text': row 1: text has 11 characters"):
        read_table(parquet, ("name",))


def test_a_file_that_is_not_parquet_or_absent_is_named(tmp_path):
    path = tmp_path / "t.parquet"
    path.write_text("name\nx\n")
    with pytest.raises(DataError, match=r"t\.parquet: is not a readable Parquet file"):
        read_table(path, ("name",))
    with pytest.raises(DataError, match=r"nothing\.csv: file not found"):
        read_table(tmp_path / "nothing.csv")
    with pytest.raises(DataError, match="missing required column"):
        pd.DataFrame({"other": [1]}).to_parquet(tmp_path / "o.parquet")
        read_table(tmp_path / "o.parquet", ("name",))


LATIN1 = b"caf\xe9"


def test_every_user_table_refuses_a_latin1_file_naming_its_line(tmp_path, capsys):
    """Before: the importer read its CSV with a raw ``pd.read_csv`` (UnicodeDecodeError, and a
    duplicate header silently became ``name.1``); the tournament's readers each had their own."""
    entries = tmp_path / "entries.csv"
    entries.write_bytes(b"name,system,description\nx,A," + LATIN1 + b"\n")
    assert "line 2, column 'description': is not UTF-8" in read_entries(entries)[1][0]
    human = tmp_path / "human.csv"
    human.write_bytes(b"name,system_a,system_b,winner\nx,A,B," + LATIN1 + b"\n")
    with pytest.raises(DataError, match="line 2, column 'winner': is not UTF-8"):
        load_human(human)
    train = tmp_path / "train.csv"
    train.write_bytes(b"name,a1,a2,preference\nx,a,b," + LATIN1 + b"\n")
    with pytest.raises(DataError, match="(?s)training table .*line 2, column 'preference': is not UTF-8"):
        training_pairs(str(train))
    preds = tmp_path / "preds.csv"
    preds.write_bytes(b"name,strategy,order,round,pred\nx,S1,normal,0," + LATIN1 + b"\n")
    assert imports.main(["table", str(preds), "--judge", "my_judge", "--input-type", "video",
                         "--output-dir", str(tmp_path / "store")]) == 1
    err = capsys.readouterr().err
    assert "line 2, column 'pred': is not UTF-8" in err and "Traceback" not in err
    dup = tmp_path / "dup.csv"
    dup.write_text("name,strategy,order,round,pred,pred\nx,S1,normal,0,a1,a2\n")
    assert imports.main(["table", str(dup), "--judge", "my_judge", "--input-type", "video",
                         "--output-dir", str(tmp_path / "store")]) == 1
    assert "column 'pred': column appears twice in the header" in capsys.readouterr().err
