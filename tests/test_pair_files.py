"""Any user's pair file is a dataset: ``-p dataset PATH.csv`` (or Parquet), labelled or not.

A pair file holds ``name, a1, a2`` and optionally ``preference`` and ``pair_id``; its reverse
order is the file with a1/a2 (and the label) swapped; it is refused, with file, line and column,
when a row cannot be used; its sha256 is in the run identity; an unlabelled file's runs store
predictions and report no metrics."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from helpers.data import DataError, is_pair_file, read_pair_file, run_pairs
from helpers.run import engine, results


def _pairs(n: int = 6, labelled: bool = True, repeat: bool = False) -> pd.DataFrame:
    names = [f"vid_{(i // 2 if repeat and i < 4 else i):03d}" for i in range(n)]
    table = pd.DataFrame({"name": names, "a1": ["happy " * (i + 1) for i in range(n)],
                          "a2": ["sad and calm " * (n - i) for i in range(n)]})
    if labelled:
        table["preference"] = ["a1", "a2", "same", "a1", "a2", "a1"][:n]
    return table


def test_a_path_with_a_table_suffix_is_a_pair_file_and_a_dataset_key_is_not():
    assert is_pair_file("my_pairs.csv") and is_pair_file("x/track3.parquet") and is_pair_file("data/pairs")
    assert not is_pair_file("emoprefer") and not is_pair_file("track3_candidate")


def test_repeated_names_get_pair_ids_in_file_order_and_keep_their_video(tmp_path):
    path = tmp_path / "p.csv"
    _pairs(repeat=True).to_csv(path, index=False)
    read = read_pair_file(path)
    assert list(read.pairs["name"]) == ["vid_000.1", "vid_000.2", "vid_001.1", "vid_001.2", "vid_004", "vid_005"]
    assert list(read.pairs["media_name"]) == ["vid_000", "vid_000", "vid_001", "vid_001", "vid_004", "vid_005"]
    assert read.keyed and read.labelled


def test_a_pair_id_column_is_the_key_and_a_repeated_one_is_refused_by_line(tmp_path):
    table = _pairs(repeat=True).assign(pair_id=[f"p{i}" for i in range(6)])
    table.to_csv(tmp_path / "ok.csv", index=False)
    assert list(read_pair_file(tmp_path / "ok.csv").pairs["name"]) == [f"p{i}" for i in range(6)]
    table.assign(pair_id=["p0", "p1", "p2", "p1", "p4", "p5"]).to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(DataError, match=r"dup\.csv, line 5, column 'pair_id': duplicate pair_id"):
        read_pair_file(tmp_path / "dup.csv")


def test_a_generated_id_that_equals_another_name_is_refused_not_overwritten(tmp_path):
    table = pd.DataFrame({"name": ["v", "v", "v.1"], "a1": ["x", "y", "z"], "a2": ["q", "r", "s"]})
    table.to_csv(tmp_path / "clash.csv", index=False)
    with pytest.raises(DataError, match=r"clash\.csv, line 4, column 'name'.*add a pair_id column"):
        read_pair_file(tmp_path / "clash.csv")


def test_a_missing_column_is_named(tmp_path):
    _pairs().drop(columns="a2").to_csv(tmp_path / "p.csv", index=False)
    with pytest.raises(DataError, match=r"p\.csv, line 1: missing required column\(s\) a2"):
        read_pair_file(tmp_path / "p.csv")


def test_a_non_utf8_byte_is_located_by_line_and_column(tmp_path):
    path = tmp_path / "p.csv"
    path.write_bytes(b"name,a1,a2\nv1,fine,also fine\nv2,caf\xe9,ok\n")
    with pytest.raises(DataError, match=r"p\.csv, line 3, column 'a1': is not UTF-8 text: byte 0xE9"):
        read_pair_file(path)


def test_an_empty_description_is_located_by_line_and_column(tmp_path):
    table = _pairs()
    table.loc[3, "a2"] = "  "
    table.to_csv(tmp_path / "p.csv", index=False)
    with pytest.raises(DataError, match=r"p\.csv, line 5, column 'a2': description is empty"):
        read_pair_file(tmp_path / "p.csv")


def test_a_partly_labelled_file_is_refused_rather_than_scoring_a_blank_as_same(tmp_path):
    table = _pairs()
    table.loc[2, "preference"] = ""
    table.to_csv(tmp_path / "p.csv", index=False)
    with pytest.raises(DataError, match=r"line 4, column 'preference': preference must be one of a1, a2, same"):
        read_pair_file(tmp_path / "p.csv")


def test_parquet_rows_are_cited_by_number(tmp_path):
    table = _pairs()
    table.loc[1, "a1"] = ""
    table.to_parquet(tmp_path / "p.parquet")
    with pytest.raises(DataError, match=r"p\.parquet, column 'a1': row 2: description is empty"):
        read_pair_file(tmp_path / "p.parquet")


def test_the_reverse_order_swaps_texts_and_labels_and_the_file_hash_is_the_data_identity(tmp_path):
    path = tmp_path / "mine.csv"
    _pairs().to_csv(path, index=False)
    pairs = run_pairs(str(path))
    normal, reverse = pairs.full["normal"], pairs.full["reverse"]
    assert list(reverse["a1"]) == list(normal["a2"]) and list(reverse["a2"]) == list(normal["a1"])
    assert list(reverse["preference"]) == ["a2", "a1", "same", "a2", "a1", "a2"]
    import hashlib
    assert pairs.data_sha256 == {"mine.csv": hashlib.sha256(path.read_bytes()).hexdigest()}
    assert pairs.dataset == "file-mine" and pairs.labelled


def test_an_edited_pair_file_refuses_to_resume_its_run(tmp_path):
    path, store = tmp_path / "mine.csv", tmp_path / "store"
    _pairs().to_csv(path, index=False)
    engine.run("length", "-", dataset=str(path), output_dir=store, progress=False, rounds=1)
    _pairs().assign(a1="edited").to_csv(path, index=False)
    with pytest.raises(Exception, match=r"data_sha256"):
        engine.run("length", "-", dataset=str(path), output_dir=store, progress=False, rounds=1)


def test_an_unlabelled_file_runs_end_to_end_and_its_closing_table_has_no_metrics(tmp_path):
    path, store = tmp_path / "candidate.csv", tmp_path / "store"
    _pairs(labelled=False, repeat=True).to_csv(path, index=False)
    summary = engine.run("length", "-", dataset=str(path), output_dir=store, progress=False)
    table = results.load_run(summary, store)
    assert len(table) == 6 * 2 * 2 and table["gt"].isna().all()  # 6 pairs x 2 orders x 2 rounds, no label invented
    closing = results.run_metrics(table)
    assert closing.loc[0, "labels"] == results.NO_LABELS
    assert closing[["two_class_waf_normal", "two_class_waf_reverse"]].isna().all(axis=None)
    manifest = json.loads((store / summary.loc[0, "run_id"] / "manifest.json").read_text())
    assert manifest["pair_file"] == str(path) and manifest["labelled"] is False
    assert manifest["identity"]["data_sha256"] == {"candidate.csv": read_pair_file(path).sha256}


# --------------------------------------------------------------------------- MER2026 Track 3 layout


def test_track3_datasets_are_registered_pair_files_read_from_mer2026_data_never_downloaded(tmp_path, monkeypatch):
    from helpers.data import dataset_spec

    for key, file in (("track3_emoprefer", "track3_emoprefer.csv"), ("track3_emopreferv2", "track3_emopreferv2.csv"),
                      ("track3_candidate", "track3_candidate.csv")):
        spec = dataset_spec(key)
        assert spec.pair_file and spec.data_env == "MER2026_DATA" and spec.files == {"normal": file}
        assert spec.base_url is None
    monkeypatch.delenv("MER2026_DATA", raising=False)
    with pytest.raises(DataError, match=r"'track3_candidate'.*not downloaded by this project: set MER2026_DATA"):
        run_pairs("track3_candidate")
    monkeypatch.setenv("MER2026_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match=r"\$MER2026_DATA points to .*nowhere, which is not a folder"):
        run_pairs("track3_candidate")
    monkeypatch.setenv("MER2026_DATA", str(tmp_path))
    with pytest.raises(DataError, match=r"which has no track3_candidate\.csv"):
        run_pairs("track3_candidate")


def test_a_track3_run_carries_the_dataset_name_and_finds_media_in_the_mer2026_folder(tmp_path, monkeypatch):
    from helpers.data import main

    _pairs(labelled=False).to_csv(tmp_path / "track3_candidate.csv", index=False)
    monkeypatch.setenv("MER2026_DATA", str(tmp_path))
    config = engine.RunConfig("length", "-", dataset="track3_candidate", output_dir=tmp_path / "store")
    context = engine.prepare_run(config)
    assert context.dataset == "track3_candidate" and context.media_dir == tmp_path
    assert context.plans()[0].run_id == "length__cpu__text__track3_candidate"
    assert main(["check", "--dataset", "track3_candidate"]) == 0
