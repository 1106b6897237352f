"""The probe suite holds what it claims: padding adds only listed neutral sentences, length-matched
pairs are within the tolerance, the content copy changes only mapped emotion words, everything is
a function of the seed, and the probe metrics are what a hand count gives."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import f1_score

from helpers import data, paths
from helpers.data import DataError
from helpers.judges.base import JudgeSpec
from helpers.judges.learned import SourceJudge
from helpers.stats import probes

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "emoprefer"
REAL = Path(os.environ.get("EMOPREFER_DATA", SHARED))
needs_real = pytest.mark.skipif(not (REAL / "preference_emoprefer.csv").is_file(),
                                reason=f"real EmoPrefer v1 files not found (looked in {REAL})")

CONFIG = probes.load_config()
SENTENCE = re.compile(r"(?<=\.) ")


def v1_like(n: int = 40, seed: int = 3) -> pd.DataFrame:
    """Pairs shaped like v1: a long MER-Caption+ text with emotion words against a short MERR-Fine one."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        long = " ".join(["The woman looks happy and calm, and her voice is cheerful."] * int(rng.integers(6, 14)))
        short = " ".join(["He seems sad and angry."] * int(rng.integers(2, 5)))
        first = bool(rng.integers(2))
        rows.append({"name": f"s{i:03d}", "model1": "mercaptionplus" if first else "merrfine",
                     "a1": long if first else short, "model2": "merrfine" if first else "mercaptionplus",
                     "a2": short if first else long, "preference": ["a1", "a2", "same"][int(rng.integers(3))]})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def built():
    return probes.build_probes(v1_like(), CONFIG)[0]


def sides(frame: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """(original, edited) texts of a probe table whose label is the original."""
    first = frame["preference"] == "a1"
    return frame["a1"].where(first, frame["a2"]), frame["a2"].where(first, frame["a1"])


def check_padded(original: str, padded: str) -> None:
    assert padded.startswith(original.rstrip())
    added = padded[len(original.rstrip()):].strip()
    assert added, "padding added nothing"
    assert set(SENTENCE.split(added)) <= set(CONFIG.neutral_sentences)
    assert probes.emotion_words_in(added) == []


def check_flipped(original: str, edited: str) -> None:
    before, after = re.split(r"([A-Za-z]+)", original), re.split(r"([A-Za-z]+)", edited)
    assert len(before) == len(after)
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert changed, "the copy changed nothing"
    for word, new in changed:
        assert new.lower() == CONFIG.antonyms[word.lower()], (word, new)
    assert abs(len(edited) - len(original)) <= CONFIG.tolerance * len(original)


def test_padding_adds_only_listed_neutral_sentences_and_no_emotion_word(built):
    original, padded = sides(built["verbosity"])
    assert len(built["verbosity"]) > 0
    for a, b in zip(original, padded, strict=True):
        check_padded(a, b)
    assert (built["verbosity"]["model1"] == built["verbosity"]["model2"]).all()  # the writer is held


def test_the_neutral_sentences_hold_no_emotion_word_and_a_sentence_with_one_is_refused(tmp_path):
    for sentence in CONFIG.neutral_sentences:
        assert probes.emotion_words_in(sentence) == [], sentence
    raw = yaml.safe_load((paths.params_dir() / "probes.yaml").read_text())
    raw["neutral_sentences"].append("The speaker sounds happy.")
    (tmp_path / "probes.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(DataError, match="'The speaker sounds happy.' holds emotion word"):
        probes.load_config(tmp_path / "probes.yaml")


def test_padding_reaches_the_longer_texts_length_within_the_tolerance(built):
    pairs = v1_like().set_index("name")
    for row in built["verbosity"].itertuples():
        target = max(len(pairs.loc[row.name, "a1"]), len(pairs.loc[row.name, "a2"]))
        padded = row.a2 if row.preference == "a1" else row.a1
        assert abs(len(padded) - target) <= CONFIG.tolerance * target


def test_length_matched_pairs_are_within_the_tolerance_and_keep_the_human_label(built):
    matched = built["length_matched"].set_index("name")
    pairs = v1_like().set_index("name").loc[matched.index]
    assert len(matched) == len(pairs)
    lengths = pd.concat([matched["a1"].str.len(), matched["a2"].str.len()], axis=1)
    assert ((lengths.max(axis=1) - lengths.min(axis=1)) <= CONFIG.tolerance * lengths.max(axis=1)).all()
    assert (matched["preference"] == pairs["preference"]).all()
    for name, row in matched.iterrows():
        longer = "a1" if len(pairs.loc[name, "a1"]) >= len(pairs.loc[name, "a2"]) else "a2"
        shorter = "a2" if longer == "a1" else "a1"
        assert row[longer] == pairs.loc[name, longer]  # the longer text is untouched
        check_padded(pairs.loc[name, shorter], row[shorter])


def test_in_length_matched_pairs_which_text_is_longer_is_a_seeded_coin():
    pairs = v1_like(200)
    matched = probes.build_probes(pairs, CONFIG)[0]["length_matched"].set_index("name")
    pairs = pairs.set_index("name").loc[matched.index]
    was = pairs["a1"].str.len() > pairs["a2"].str.len()
    now = matched["a1"].str.len() > matched["a2"].str.len()
    assert (matched["a1"].str.len() != matched["a2"].str.len()).all()  # never a tie for the longer-text rule
    assert 0.4 < (was == now).mean() < 0.6  # the longer-text rule agrees with v1's longer text half the time


def test_content_probe_changes_only_mapped_emotion_words_within_the_tolerance(built):
    original, edited = sides(built["content"])
    assert len(original) > 0
    for a, b in zip(original, edited, strict=True):
        check_flipped(a, b)


def test_a_replacement_that_breaks_the_length_tolerance_is_skipped():
    tight = dataclasses.replace(CONFIG, tolerance=0.01)
    text = "Sad. " + "x" * 95  # 100 characters: sad -> happy adds 2, more than 1 %
    assert probes.flip_emotions(text, tight) == (text, 0)
    assert probes.flip_emotions(text, CONFIG) == ("Happy. " + "x" * 95, 1)


def test_probes_are_a_function_of_the_seed(built):
    again = probes.build_probes(v1_like(), CONFIG)[0]
    for probe in probes.PROBES:
        pd.testing.assert_frame_equal(built[probe], again[probe])
    other = probes.build_probes(v1_like(), dataclasses.replace(CONFIG, seed=1))[0]
    assert not built["verbosity"].equals(other["verbosity"])


@needs_real
def test_on_v1_every_probe_holds_its_claims():
    v1 = data.load_pairs("emoprefer", "normal", REAL)
    built, summary = probes.build_probes(v1, CONFIG)
    assert (summary["pairs"] + summary["left_out"] == len(v1)).all()
    for a, b in zip(*sides(built["verbosity"]), strict=True):
        check_padded(a, b)
    for a, b in zip(*sides(built["content"]), strict=True):
        check_flipped(a, b)
    lengths = pd.concat([built["length_matched"]["a1"].str.len(), built["length_matched"]["a2"].str.len()], axis=1)
    assert ((lengths.max(axis=1) - lengths.min(axis=1)) <= CONFIG.tolerance * lengths.max(axis=1)).all()


# --------------------------------------------------------------------------- files and identity


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project root with this repository's params/ and a v1-like dataset in $EMOPREFER_DATA."""
    root = tmp_path / "project"
    shutil.copytree(paths.params_dir(), root / "params", ignore=shutil.ignore_patterns("runs", "grid_*"))
    (root / "pyproject.toml").write_text("")
    v1 = v1_like()
    folder = tmp_path / "v1"
    folder.mkdir()
    v1[["name", "a1", "a2", "preference"]].to_csv(folder / "preference_emoprefer.csv", index=False)
    v1.to_csv(folder / "preference_emoprefer_with_modelnames.csv", index=False)
    monkeypatch.setenv("EMOPREFER_ROOT", str(root))
    monkeypatch.setenv(data.DATA_ENV, str(folder))
    data.dataset_specs.cache_clear()
    yield root
    data.dataset_specs.cache_clear()


def test_probe_datasets_are_generated_on_demand_byte_identically_and_their_hash_enters_the_identity(project):
    pairs = data.run_pairs("probe_verbosity")  # the files do not exist yet: generated from v1 here
    plain = project / "data" / "probes" / "probe_verbosity.csv"
    first = data.sha256_file(plain)
    summary = probes.write_probe_files()
    assert data.sha256_file(plain) == first == summary.set_index("probe").loc["verbosity", "sha256"]
    assert pairs.identity_data["probe_verbosity.csv"] == first
    assert "emoprefer/preference_emoprefer.csv" in pairs.identity_data  # what learned judges fit on
    assert pairs.train is not None and len(pairs.train["normal"]) == len(v1_like())
    assert set(pairs.tables["normal"]["preference"]) <= {"a1", "a2"}


def test_a_learning_judge_fits_on_the_human_labels_not_on_the_probe_labels():
    spec = JudgeSpec(name="source", family="cpu", backend="cpu", options={"folds": 5})
    v1 = v1_like().assign(preference=lambda f: np.where(f["model1"] == "mercaptionplus", "a1", "a2"))
    judge = SourceJudge(spec)
    on_v1 = judge.predict(v1, seed=0)
    relabelled = v1.assign(preference=np.where(v1["preference"] == "a1", "a2", "a1"))  # the opposite labels
    assert (judge.predict_trained(relabelled, v1, seed=0) == on_v1).all()
    assert (on_v1 == v1["preference"]).all()  # writer rule learned from v1's labels
    assert (judge.predict(relabelled, seed=0) != on_v1).all()  # fitting on probe labels would flip it


# --------------------------------------------------------------------------- the metrics


def verdicts(judge: str, gts: dict[str, str], preds: dict[tuple[str, str, int], str]) -> pd.DataFrame:
    """Prediction rows: gts per pair in the normal order, preds per (name, order, round)."""
    rows = []
    for (name, order, rnd), pred in preds.items():
        gt = gts[name] if order == "normal" else data.swap_label(gts[name])
        rows.append({"judge": judge, "strategy": "-", "input_type": "text", "order": order, "round": rnd,
                     "name": name, "gt": gt, "pred": pred})
    return pd.DataFrame(rows)


def test_probe_metrics_match_a_hand_count():
    gts = {"p1": "a1", "p2": "a2", "p3": "a1", "p4": "a2"}
    # verbosity: verdicts for the padded copy (the side that is not the label)
    verbosity = verdicts("j", gts, {
        ("p1", "normal", 0): "a2", ("p1", "reverse", 0): "a1",   # padded twice
        ("p2", "normal", 0): "a1", ("p2", "reverse", 0): "a1",   # padded once (normal), original once
        ("p3", "normal", 0): "a1", ("p3", "reverse", 0): "same",  # original, tie (counts half)
        ("p4", "normal", 0): "a1", ("p4", "reverse", 0): "a2",   # padded twice
    })
    content = verdicts("j", gts, {("p1", "normal", 0): "a1", ("p2", "normal", 0): "a1",
                                  ("p3", "normal", 0): "a1", ("p4", "normal", 0): "a2"})
    matched_gt = {"p1": "a1", "p2": "a2", "p3": "a1", "p4": "same"}
    matched = verdicts("j", matched_gt, {("p1", "normal", 0): "a1", ("p2", "normal", 0): "a1",
                                         ("p3", "normal", 0): "same", ("p4", "normal", 0): "a2",
                                         ("p1", "normal", 1): "a1", ("p2", "normal", 1): "a2",
                                         ("p3", "normal", 1): "a1", ("p4", "normal", 1): "a1"})
    table = probes.probe_table({"verbosity": verbosity, "length_matched": matched, "content": content}, n_boot=200)
    row = table.iloc[0]
    assert row["verbosity"] == pytest.approx(100 * (1 + 0.5 + 0.25 + 1) / 4)
    assert row["content"] == pytest.approx(100 * 3 / 4)
    # two-class WAF: gt same dropped, predicted same counts as a1; mean over the two rounds
    gt = ["a1", "a2", "a1"]
    expected = np.mean([f1_score(gt, ["a1", "a1", "a1"], average="weighted"),
                        f1_score(gt, ["a1", "a2", "a1"], average="weighted")])
    assert row["matched_waf"] == pytest.approx(100 * expected, abs=0.01)
    assert row["verbosity_lo"] <= row["verbosity"] <= row["verbosity_hi"]
    assert row["content_lo"] <= row["content"] <= row["content_hi"]
    assert (row["verbosity_pairs"], row["matched_pairs"], row["content_pairs"]) == (4, 4, 4)


def test_the_table_has_a_row_per_judge_run_and_leaves_missing_probes_empty():
    gts = {"p1": "a1", "p2": "a2"}
    one = {("p1", "normal", 0): "a1", ("p2", "normal", 0): "a1"}
    by_probe = {"verbosity": pd.concat([verdicts("length", gts, one), verdicts("random", gts, one)]),
                "content": verdicts("length", gts, one), "length_matched": None}
    table = probes.probe_table(by_probe, n_boot=50)
    assert list(table["judge"]) == ["length", "random"]
    assert np.isnan(table.set_index("judge").loc["random", "content"])
    assert table["matched_waf"].isna().all()
    pending = probes.pending_rows(table, ["length", "random", "qwen25omni"], CONFIG.datasets)
    assert list(pending["judge"]) == ["qwen25omni"]
    command = pending["command"].iloc[0]
    assert "-p model qwen25omni -p dataset $d" in command
    assert all(d in command for d in CONFIG.datasets.values())


@pytest.mark.slow
@needs_real
def test_notebook_06b_has_a_row_per_judge_run_and_names_the_command_for_the_others(tmp_path, monkeypatch):
    import papermill as pm
    from synthetic import synthetic_predictions, write_predictions

    monkeypatch.setenv(data.DATA_ENV, str(REAL))
    store, reports = tmp_path / "predictions", tmp_path / "reports"
    for probe, dataset in CONFIG.datasets.items():
        pairs = data.load_pairs(dataset)
        judges = {"good": 0.8, "fair": 0.6} if probe != "content" else {"good": 0.8}  # fair: not run on one probe
        table = synthetic_predictions(pairs, judges=judges, seed=1).assign(dataset=dataset, run_id=f"syn_{probe}")
        write_predictions(table, store, f"syn_{probe}")
    notebooks = Path(__file__).resolve().parents[1] / "notebooks"
    pm.execute_notebook(str(notebooks / "06b_probes.ipynb"), str(tmp_path / "06b.ipynb"), cwd=str(notebooks),
                        parameters={"predictions_dir": str(store), "reports_dir": str(reports), "n_boot": 50},
                        progress_bar=False, kernel_name="python3")
    table = pd.read_csv(reports / "tables" / "probes.csv").set_index("judge")
    assert sorted(table.index) == ["fair", "good"]
    assert table.loc["good", ["verbosity", "matched_waf", "content"]].notna().all()
    assert np.isnan(table.loc["fair", "content"])  # unknown, not zero
    assert (reports / "figures" / "probes.png").is_file()
    pending = pd.read_csv(reports / "tables" / "probes_pending.csv")
    assert {"qwen25omni", "qwen25vl"} <= set(pending["judge"])
