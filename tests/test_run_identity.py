"""Issue 11, run identity: a run folder is resumed only by the very same run, a crash is
recorded, call counts survive kills, run ids stay inside the store, unparsed answers are
counted, and an echoed API key never reaches the disk."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pandas as pd
import pytest
import yaml
from crash_judges import CrashingBackend, EchoingBackend, GarbageBackend
from fake_backend import FAKE_LLM, FAKE_MLLM, FakeBackend
from sklearn.metrics import f1_score

from helpers import paths
from helpers.data import DataError, data_sha256, swap_label
from helpers.judges.base import JudgeSpec
from helpers.run import engine, launch, results
from helpers.run.identity import IdentityError, build_identity, identity_changes
from helpers.run.store import RunStore, StoreError, read_jsonl, read_predictions
from helpers.stats import metrics

TESTS = Path(__file__).parent
DATA = os.environ.get("EMOPREFER_DATA")
needs_data = pytest.mark.skipif(not DATA or not (Path(DATA) / "preference_emoprefer.csv").is_file(),
                                reason="EMOPREFER_DATA does not point at the v1 CSVs")
FILES = ("preference_emoprefer.csv", "preference_emoprefer_reverse.csv")


def toy_pairs(n: int = 6) -> pd.DataFrame:
    return pd.DataFrame({
        "name": [f"s{i:02d}" for i in range(n)],
        "a1": [f"The man is angry {i}." for i in range(n)],
        "a2": [f"The man is calm and happy, smiling {i}." for i in range(n)],
        "preference": (["a1", "a2", "same"] * n)[:n],
    })


def fake_run(store: Path, strategy: str = "S1", **kwargs) -> pd.DataFrame:
    kwargs = {"pairs": toy_pairs(), "rounds": 2, "output_dir": store, "progress": False, "judge_llm": FAKE_LLM,
              "dataset": "toy", "engine": FakeBackend} | kwargs
    return engine.run(kwargs.pop("spec", FAKE_MLLM), strategy, **kwargs)


def manifest_in(folder: Path) -> dict:
    return json.loads((Path(folder) / "manifest.json").read_text())


def copy_data(target: Path, relabel: int = 0) -> Path:
    """The v1 normal and reverse files, with the first ``relabel`` pairs given another label
    (consistently in both files, so the data still pass every check)."""
    target.mkdir(parents=True)
    normal = pd.read_csv(Path(DATA) / FILES[0], dtype=str, keep_default_na=False)
    reverse = pd.read_csv(Path(DATA) / FILES[1], dtype=str, keep_default_na=False)
    if relabel:
        flipped = normal.loc[: relabel - 1, "preference"].map({"a1": "a2", "a2": "a1", "same": "a1"})
        normal.loc[: relabel - 1, "preference"] = flipped
        by_name = normal.set_index("name")["preference"]
        reverse["preference"] = reverse["name"].map(by_name).map(swap_label)
    normal.to_csv(target / FILES[0], index=False)
    reverse.to_csv(target / FILES[1], index=False)
    return target


def paper_waf(table: pd.DataFrame) -> float:
    """Two-class WAF of round 0, normal order, by hand with sklearn (same dropped, same -> a1)."""
    part = table[(table["order"] == "normal") & (table["round"] == 0) & (table["gt"] != "same")]
    return 100 * f1_score(part["gt"], part["pred"].replace("same", "a1"), average="weighted")


# --------------------------------------------------------------------------- changed data


@needs_data
def test_relabelled_data_is_not_resumed_into_stale_rows_or_scored_with_stale_labels(tmp_path):
    """Observed: relabel 50 pairs and rerun -> 0 new rows, the old gt kept, the manifest showing
    the new sha256 (WAF 79.57 where a fresh run gives 72.81)."""
    old, new, store = copy_data(tmp_path / "old"), copy_data(tmp_path / "new", relabel=50), tmp_path / "store"
    first = engine.run("length", rounds=1, output_dir=store, data_dir=old, progress=False)
    folder = Path(first.loc[0, "folder"])
    before = (folder / "predictions.jsonl").read_bytes()

    with pytest.raises(IdentityError) as refused:
        engine.run("length", rounds=1, output_dir=store, data_dir=new, progress=False)
    message = str(refused.value)
    assert "data_sha256.preference_emoprefer.csv" in message and "overwrite=True" in message
    assert "new run folder" in message
    assert (folder / "predictions.jsonl").read_bytes() == before  # not one row added
    assert manifest_in(folder)["data_sha256"]["preference_emoprefer.csv"] != \
        json.loads(json.dumps(data_sha256("emoprefer", new)))["preference_emoprefer.csv"]

    # scoring the old store against the new data is refused, not scored with stale labels
    with pytest.raises(DataError, match=r"made on other emoprefer data.*preference_emoprefer.csv"):
        results.load_predictions(store, "emoprefer", new)
    with pytest.raises(DataError, match="made on other emoprefer data"):
        engine.load_run(first, store, new)

    # overwrite=True moves the old run aside and judges afresh: the numbers of a fresh run
    again = engine.run("length", rounds=1, output_dir=store, data_dir=new, progress=False, overwrite=True)
    fresh = engine.run("length", rounds=1, output_dir=tmp_path / "fresh", data_dir=new, progress=False)
    table = results.load_predictions(store, "emoprefer", new)
    relabelled = pd.read_csv(new / FILES[0], dtype=str, keep_default_na=False)
    normal = table[table["order"] == "normal"].set_index("name").loc[relabelled["name"]]
    assert normal["gt"].tolist() == relabelled["preference"].tolist()
    assert paper_waf(table) == pytest.approx(paper_waf(read_predictions(tmp_path / "fresh")))
    moved = list((store / ".replaced").iterdir())
    stale = pd.DataFrame(read_jsonl(moved[0] / "predictions.jsonl"))  # the old rows with their old gt
    assert paper_waf(stale) != pytest.approx(paper_waf(table))  # what resuming would have reported
    assert again.loc[0, "rows_new"] == fresh.loc[0, "rows"] == 574 * 2
    assert len(moved) == 1 and (moved[0] / "predictions.jsonl").read_bytes() == before  # kept, not deleted
    assert manifest_in(folder)["replaced"][0]["folder"] == str(moved[0])


@needs_data
def test_a_labels_file_edited_under_a_finished_store_is_never_scored_silently(tmp_path):
    """Even a store whose gt column was tampered with is scored with the labels of the data."""
    data_dir, store = copy_data(tmp_path / "data"), tmp_path / "store"
    engine.run("length", rounds=1, limit=40, output_dir=store, data_dir=data_dir, progress=False)
    file = next(store.glob("*/predictions.jsonl"))
    rows = read_jsonl(file)
    file.write_text("".join(json.dumps(r | {"gt": "same"}) + "\n" for r in rows))
    table = results.load_predictions(store, "emoprefer", data_dir)
    labels = pd.read_csv(data_dir / FILES[0], dtype=str, keep_default_na=False).set_index("name")["preference"]
    normal = table[table["order"] == "normal"]
    assert normal["gt"].tolist() == labels.loc[normal["name"]].tolist()


# --------------------------------------------------------------------------- changed prompt


def edited_prompts(tmp_path: Path, monkeypatch, suffix: str) -> Path:
    """A project root whose prompts file has the S1 prompt with ``suffix`` appended."""
    root = tmp_path / "project"
    if not root.exists():
        shutil.copytree(paths.params_dir(), root / "params", ignore=shutil.ignore_patterns("runs", "grid_*"))
        (root / "pyproject.toml").write_text("")
    monkeypatch.setenv("EMOPREFER_ROOT", str(root))
    file = root / "params" / "prompts.yaml"
    texts = yaml.safe_load((Path(__file__).parents[1] / "params" / "prompts.yaml").read_text(encoding="utf-8"))
    texts["S1"] += suffix
    file.write_text(yaml.safe_dump(texts, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return file


def test_an_s1_prompt_edited_mid_run_is_refused_instead_of_mixing_old_and_new_rows(tmp_path, monkeypatch):
    """Observed: edit the S1 prompt mid-run -> 128 old-prompt rows and 2,168 new-prompt rows in
    one folder. Here the first session crashes after one batch, then the prompt is edited."""
    edited_prompts(tmp_path, monkeypatch, "")
    store = tmp_path / "store"
    with pytest.raises(RuntimeError, match="endpoint exploded"):
        fake_run(store, engine=lambda spec: CrashingBackend(spec, ok_batches=1))
    folder = store / "fake_mllm__S1__text__toy"
    kept = read_jsonl(folder / "predictions.jsonl")
    assert 0 < len(kept) < 6 * 2 * 2

    edited_prompts(tmp_path, monkeypatch, " Answer in one word.")
    with pytest.raises(IdentityError, match=r"other prompts.S1") as refused:
        fake_run(store)
    assert "prompts.S1:" in str(refused.value) and "->" in str(refused.value)
    assert read_jsonl(folder / "predictions.jsonl") == kept  # no new-prompt row beside the old ones

    edited_prompts(tmp_path, monkeypatch, "")  # the prompt the folder was made with: resumes
    summary = fake_run(store)
    assert summary.loc[0, "rows"] == 6 * 2 * 2 and summary.loc[0, "rows_new"] == 6 * 2 * 2 - len(kept)


ENGINE_SESSION = textwrap.dedent("""
    import sys
    import pandas as pd
    from helpers.run import engine
    n = int(sys.argv[2])
    pairs = pd.DataFrame({"name": [f"s{i:02d}" for i in range(8)], "a1": [f"angry {i}" for i in range(8)],
                          "a2": [f"calm and happy {i}" for i in range(8)], "preference": ["a1", "a2"] * 4})
    summary = engine.run("random", "-", pairs=pairs, rounds=2, limit=n, output_dir=sys.argv[1], progress=False,
                         dataset="toy")
    print("rows_new", int(summary.loc[0, "rows_new"]))
""")


def test_the_engines_seed_arithmetic_edited_between_two_sessions_is_refused_by_name(tmp_path):
    """Observed: editing ``engine._cpu_job``'s seed arithmetic between two sessions resumed
    silently (17 of 80 rows differed from a clean run): the identity hashed the judge's module,
    not the code that drives it. A copy of the package is run twice, edited in between."""
    src = tmp_path / "src"
    shutil.copytree(Path(engine.__file__).parents[2] / "helpers", src / "helpers",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = os.environ | {"PYTHONPATH": str(src), "EMOPREFER_ROOT": str(paths.project_root())}
    script = tmp_path / "session.py"
    script.write_text(ENGINE_SESSION)

    def session(limit: int) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(script), str(tmp_path / "store"), str(limit)], env=env,
                              capture_output=True, text=True, timeout=300)

    first = session(4)
    assert first.returncode == 0, first.stderr
    folder = tmp_path / "store" / "random__cpu__text__toy"
    kept = read_jsonl(folder / "predictions.jsonl")
    assert len(kept) == 4 * 2 * 2 and "helpers.run.engine" in manifest_in(folder)["identity"]["code"]
    code = src / "helpers" / "run" / "engine.py"
    text = code.read_text()
    assert "seed=seed + rnd)" in text
    code.write_text(text.replace("seed=seed + rnd)", "seed=seed + 2 * rnd)"))
    second = session(8)
    assert second.returncode != 0
    assert "IdentityError" in second.stderr and "code.helpers.run.engine" in second.stderr
    assert read_jsonl(folder / "predictions.jsonl") == kept  # nothing written beside the old rows


def test_every_part_of_the_identity_is_compared_and_named():
    base = dict(spec=FAKE_MLLM, strategy="S3", input_type="text", dataset="toy", seed=0,
                data_sha256={"pairs": "abc"}, llm_spec=FAKE_LLM)
    same = build_identity(**base)
    assert identity_changes(same, build_identity(**base)) == []
    variants = {
        "judge.generation.temperature": base | {"spec": dataclasses.replace(FAKE_MLLM, generation={"temperature": 1})},
        "judge.options.describe_prompt": base | {
            "spec": dataclasses.replace(FAKE_MLLM, options={"describe_prompt": "describe_input"})},
        "llm.checkpoint": base | {"llm_spec": dataclasses.replace(FAKE_LLM, checkpoint="v2")},
        "data_sha256.pairs": base | {"data_sha256": {"pairs": "def"}},
        "seed": base | {"seed": 1},
        "input_type": base | {"input_type": "audio"},
        "parameters.share_descriptions": base | {"parameters": {"share_descriptions": False}},
    }
    for field, changed in variants.items():
        names = [name for name, _, _ in identity_changes(same, build_identity(**changed))]
        assert field in names, (field, names)
    # what changes no answer is not part of it
    assert identity_changes(same, build_identity(**base | {"spec": dataclasses.replace(FAKE_MLLM, batch_size=9)})) == []
    s1 = build_identity(**base | {"strategy": "S1"})
    assert set(s1["prompts"]) == {"S1", "system_omni"} and s1["llm"] is None
    assert set(same["prompts"]) == {"describe_video", "S2_judge", "system_omni"}


def test_a_subset_run_still_grows_into_the_full_run_of_the_same_identity(tmp_path):
    """limit/names/rounds are the scope, not the identity: each row is keyed by order, round and
    sample, so a first look at 2 pairs and the full run share one folder."""
    fake_run(tmp_path, limit=2, rounds=1)
    summary = fake_run(tmp_path, rounds=2)
    assert summary.loc[0, "rows"] == 6 * 2 * 2 and summary.loc[0, "rows_new"] == 6 * 2 * 2 - 2 * 2
    manifest = manifest_in(summary.loc[0, "folder"])
    assert [s["scope"]["samples"] for s in manifest["sessions"]] == [2, 6]
    assert manifest["identity_sha256"] and manifest["identity"]["strategy"] == "S1"


def test_an_all_run_refuses_before_writing_when_a_later_strategy_folder_differs(tmp_path):
    fake_run(tmp_path, "S2", rounds=1)
    other_seed_folder = tmp_path / "fake_mllm__S2__text__toy"
    manifest = manifest_in(other_seed_folder)
    manifest["identity"]["seed"] = 99
    (other_seed_folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IdentityError, match="seed"):
        fake_run(tmp_path, "all", rounds=1)
    assert not (tmp_path / "fake_mllm__S1__text__toy").exists()  # S1 did not run first


def test_resuming_s2_with_the_other_description_sharing_is_refused_by_name(tmp_path):
    """Shared and per-order descriptions are two experiments (under sampling they change swap
    consistency): a folder of one is never resumed by the other; S1 never describes, so the
    switch is not part of its identity."""
    fake_run(tmp_path, "S2", rounds=1, share_descriptions=True)
    with pytest.raises(IdentityError, match="descriptions_shared"):
        fake_run(tmp_path, "S2", rounds=1, share_descriptions=False)
    fake_run(tmp_path, "S1", rounds=1, share_descriptions=True)
    again = fake_run(tmp_path, "S1", rounds=1, share_descriptions=False)
    assert again.loc[0, "rows_new"] == 0
    assert manifest_in(tmp_path / "fake_mllm__S2__text__toy")["identity"]["parameters"] == {"descriptions_shared": True}


# --------------------------------------------------------------------------- the grid


@needs_data
def test_the_grid_does_not_count_a_cell_finished_when_its_data_changed(tmp_path):
    old, new, store = copy_data(tmp_path / "old"), copy_data(tmp_path / "new", relabel=50), tmp_path / "store"
    parameters = {"model": "always_a1", "strategy": "-", "rounds": 1, "limit": 20, "output_dir": str(store),
                  "data_dir": str(old)}
    engine.run("always_a1", rounds=1, limit=20, output_dir=store, data_dir=old, progress=False)
    executed = tmp_path / "cell.ipynb"  # what papermill leaves for a cell that ran without error
    cell = launch.Cell("always_a1", parameters, executed)
    executed.write_text(json.dumps({"metadata": {"papermill": {
        "parameters": parameters, "end_time": "2026-01-01T00:00:00", "exception": None}}}))
    assert launch.finished(cell)
    assert list(launch.run_statuses(parameters).values()) == ["complete"]
    assert list(launch.run_statuses(parameters | {"data_dir": str(new)}).values()) == ["other identity"]
    assert list(launch.run_statuses(parameters | {"limit": 30}).values()) == ["incomplete"]
    relabelled = launch.Cell("always_a1", parameters | {"data_dir": str(new)}, executed)
    executed.write_text(json.dumps({"metadata": {"papermill": {
        "parameters": relabelled.parameters | {"overwrite": True}, "end_time": "x", "exception": None}}}))
    assert not launch.finished(relabelled)  # the executed copy's parameters match, the store does not


# --------------------------------------------------------------------------- crashes and kills


def test_a_crashing_run_is_marked_failed_with_the_error_and_resumes_to_complete(tmp_path):
    with pytest.raises(RuntimeError, match="endpoint exploded"):
        fake_run(tmp_path, engine=lambda spec: CrashingBackend(spec, ok_batches=2))
    manifest = manifest_in(tmp_path / "fake_mllm__S1__text__toy")
    assert manifest["status"] == "failed"
    assert manifest["error"]["type"] == "RuntimeError" and "502 Bad Gateway" in manifest["error"]["message"]
    session = manifest["sessions"][-1]
    assert session["error"] == manifest["error"] and session["ended"] is not None
    assert session["calls"] == {"S1": 2 * FAKE_MLLM.batch_size} and manifest["rows"] == 6
    assert session["in_flight"] == {"S1": FAKE_MLLM.batch_size}  # the batch that crashed had been sent
    summary = fake_run(tmp_path)
    manifest = manifest_in(summary.loc[0, "folder"])
    assert manifest["status"] == "complete" and "error" not in manifest
    assert manifest["calls_total"] == {"S1": 6 * 2 * 2 + FAKE_MLLM.batch_size}  # every request sent, as a server counts
    assert manifest["sessions"][0]["error"]["type"] == "RuntimeError"  # the history keeps it


KILL_SCRIPT = textwrap.dedent("""
    import sys
    from helpers.run import engine
    from helpers.judges.base import JudgeSpec
    spec = JudgeSpec(name="length", family="cpu", backend="cpu", input_type="text", strategies=("-",),
                     options={"judge_class": "crash_judges:KilledLengthJudge"})
    engine.run(spec, rounds=2, output_dir=sys.argv[1], progress=False)
""")


@pytest.mark.slow
@needs_data
def test_a_killed_cpu_run_resumed_reports_every_call_not_only_the_last_sessions(tmp_path):
    """Observed: a CPU judge killed and resumed reported 574 calls instead of 2,296."""
    store = tmp_path / "store"
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
                        "EMOPREFER_TEST_KILL_AT": "3"}
    victim = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(store)], env=env, timeout=300, check=False)
    assert victim.returncode == -signal.SIGKILL  # killed during its third batch
    folder = next(store.iterdir())
    killed = manifest_in(folder)
    assert killed["status"] == "running" and killed["sessions"][0]["calls"] == {"cpu": 574 * 2}
    spec = JudgeSpec(name="length", family="cpu", backend="cpu", input_type="text", strategies=("-",),
                     options={"judge_class": "crash_judges:KilledLengthJudge"})
    summary = engine.run(spec, rounds=2, output_dir=store, progress=False)
    assert summary.loc[0, "calls"] == {"cpu": 574 * 2}
    manifest = manifest_in(folder)
    assert manifest["calls_total"] == {"cpu": 574 * 4} and manifest["rows"] == 574 * 4
    assert manifest["status"] == "complete" and len(read_jsonl(folder / "predictions.jsonl")) == 574 * 4


# --------------------------------------------------------------------------- run ids


@pytest.mark.parametrize("bad", ["..", ".", "../escape", "a/../b", "x..y", ".replaced", "", "a" * 201])
def test_run_ids_cannot_leave_or_hide_in_the_store_root(tmp_path, bad):
    """Observed: RunStore("..", root) wrote into the parent of the store root."""
    root = tmp_path / "store"
    with pytest.raises(StoreError, match="run id"):
        RunStore(bad, root)
    if bad:  # an empty run_id means "the default one" to engine.run
        with pytest.raises(StoreError, match="run id"):
            fake_run(root, run_id=bad)
    assert not root.exists() or not any(root.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["store"])


# --------------------------------------------------------------------------- parse failures


def test_an_endpoint_answering_garbage_is_counted_as_unparsed_and_warned_about(tmp_path):
    """Observed: empty or garbage content scored swap consistency 100.0 with status complete."""
    with pytest.warns(engine.UnparsedAnswersWarning, match=r"100.0% of the 24 answers.*'<html>502</html>'"):
        summary = fake_run(tmp_path, engine=GarbageBackend)
    manifest = manifest_in(summary.loc[0, "folder"])
    assert manifest["parse"]["unparsed"] == 24 and manifest["parse"]["unparsed_pct"] == 100.0
    assert manifest["warnings"] and "matched no rule" in manifest["warnings"][0]
    assert summary.loc[0, "unparsed_pct"] == 100.0
    table = engine.load_run(summary, tmp_path)
    closing = engine.run_metrics(table)
    assert closing.loc[0, "unparsed_pct"] == 100.0
    assert closing.loc[0, "swap_consistency"] == 100.0  # the paper's rule is kept: all `same`
    cells = metrics.metrics_table(table, n_boot=10)
    assert cells.loc[0, "unparsed_pct"] == 100.0
    assert metrics.unparsed_flags(cells).iloc[0] == "⚠ 100.0% unparsed"
    assert "fake_mllm S1 text: 100.0%" in metrics.unparsed_note(cells)


def test_the_unparsed_warning_threshold_is_a_parameter(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", engine.UnparsedAnswersWarning)
        summary = fake_run(tmp_path, engine=GarbageBackend, unparsed_warn_pct=100)
    assert manifest_in(summary.loc[0, "folder"])["warnings"] == []
    ordinary = fake_run(tmp_path / "ordinary")  # the fake answers "no idea" 1 time in 6: below 50 %
    share = manifest_in(ordinary.loc[0, "folder"])["parse"]["unparsed_pct"]
    rows = read_predictions(tmp_path / "ordinary")
    assert share == pytest.approx(100 * (rows["parse_rule"] == "default_same").mean(), abs=0.01)


# --------------------------------------------------------------------------- secrets


def test_an_endpoint_echoing_the_api_key_leaves_no_trace_of_it_on_disk(tmp_path, monkeypatch):
    sentinel = "sk-SENTINEL-echoed-by-the-server-42"
    monkeypatch.setenv("EMOPREFER_TEST_API_KEY", sentinel)
    spec = dataclasses.replace(FAKE_MLLM, api_key_env="EMOPREFER_TEST_API_KEY")
    summary = fake_run(tmp_path, "all", engine=EchoingBackend, spec=spec, rounds=1)
    written = [f for f in tmp_path.rglob("*") if f.is_file()]
    assert {f.name for f in written} >= {"predictions.jsonl", "steps.jsonl", "manifest.json"}
    for file in written:
        assert sentinel not in file.read_text(), file
    table = engine.load_run(summary, tmp_path)
    assert table["raw"].str.contains(r"Bearer \[redacted:EMOPREFER_TEST_API_KEY\]").all()
    steps = [s for f in tmp_path.glob("*/steps.jsonl") for s in read_jsonl(f)]
    assert steps and all("[redacted:EMOPREFER_TEST_API_KEY]" in s["text"] for s in steps)


def test_a_folder_with_rows_but_no_recorded_identity_is_refused_then_replaced_on_request(tmp_path):
    """A folder written before identities were recorded (or whose manifest was deleted) cannot
    be checked, so it is not silently resumed."""
    fake_run(tmp_path, rounds=1)
    folder = tmp_path / "fake_mllm__S1__text__toy"
    (folder / "manifest.json").unlink()
    with pytest.raises(IdentityError, match="records no run identity"):
        fake_run(tmp_path, rounds=1)
    summary = fake_run(tmp_path, rounds=1, overwrite=True)
    assert summary.loc[0, "rows_new"] == 6 * 2 and len(list((tmp_path / ".replaced").iterdir())) == 1
    assert read_predictions(tmp_path)["run_id"].tolist() == ["fake_mllm__S1__text__toy"] * 12  # old rows unseen
