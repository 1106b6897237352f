"""The predictions store: resumable, kill-safe, one writer per run folder."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

from helpers.run.store import (
    COLUMNS,
    RunStore,
    StoreError,
    make_run_id,
    read_jsonl,
    read_predictions,
    repair_jsonl,
    row_key,
)

TESTS = Path(__file__).parent


def row(key: str, name: str = "s1", **extra) -> dict:
    return {"key": key, "judge": "j", "strategy": "S1", "input_type": "text", "order": "normal", "round": 0,
            "name": name, "gt": "a1", "pred": "a2", "parse_rule": "prefix", "raw": "a2", "latency_s": 0.1,
            "created_at": "2026-01-01T00:00:00+00:00", "run_id": "r"} | extra


def test_run_id_is_deterministic_and_readable():
    assert make_run_id("qwen25omni", "S3", "audiovideo", "emoprefer", "qwen25") == \
        "qwen25omni__S3__audiovideo__emoprefer__llm=qwen25"
    assert make_run_id("length", "-", "text", "emoprefer") == "length__cpu__text__emoprefer"
    assert make_run_id("length", "-", "text", "emoprefer", seed=3).endswith("__seed=3")


def test_rows_survive_reopening_and_known_keys_are_not_written_twice(tmp_path):
    with RunStore("r", tmp_path) as store:
        assert store.append_predictions([row("k1"), row("k2", "s2")]) == 2
    with RunStore("r", tmp_path) as store:
        assert store.done == {"k1", "k2"}
        assert store.append_predictions([row("k2", "s2"), row("k3", "s3")]) == 1
    assert [r["key"] for r in read_jsonl(tmp_path / "r" / "predictions.jsonl")] == ["k1", "k2", "k3"]


def test_a_torn_last_line_is_cut_so_the_row_is_written_again(tmp_path):
    with RunStore("r", tmp_path) as store:
        store.append_predictions([row("k1"), row("k2", "s2")])
    file = tmp_path / "r" / "predictions.jsonl"
    torn = json.dumps(row("k3", "s3"))[:25]
    with open(file, "a") as handle:
        handle.write(torn)  # what a SIGKILL in the middle of a write leaves
    assert [r["key"] for r in read_jsonl(file)] == ["k1", "k2"]  # readers ignore the tail
    with RunStore("r", tmp_path) as store:
        assert store.repaired_bytes == len(torn)
        assert store.done == {"k1", "k2"}
        store.append_predictions([row("k3", "s3")])
    assert [r["key"] for r in read_jsonl(file)] == ["k1", "k2", "k3"]


def test_corruption_in_the_middle_is_reported_not_dropped(tmp_path):
    file = tmp_path / "x.jsonl"
    file.write_text('{"key": "a"}\n{"key": \n{"key": "c"}\n')
    with pytest.raises(StoreError, match=r"x.jsonl, line 2"):
        repair_jsonl(file)


def test_a_second_process_on_the_same_run_folder_is_refused(tmp_path):
    with RunStore("r", tmp_path):
        with pytest.raises(StoreError, match=r"in use by process \d+") as error:
            RunStore("r", tmp_path).open()
        assert "lock" in str(error.value)
    with RunStore("r", tmp_path):  # released on exit
        pass


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    with RunStore("r", tmp_path) as store:
        assert json.loads(store.lock_path.read_text())["pid"] == os.getpid()


def forge_lock(tmp_path, heartbeat_age_s: float, host: str = "gpu-node-17.elsewhere", pid: int = 4242) -> Path:
    """The lock a worker on another machine (sharing this file system) would have left."""
    beat = (datetime.now(timezone.utc) - timedelta(seconds=heartbeat_age_s)).isoformat(timespec="seconds")
    (tmp_path / "r").mkdir(exist_ok=True)
    lock = tmp_path / "r" / "lock"
    lock.write_text(json.dumps({"pid": pid, "host": host, "since": beat, "heartbeat": beat, "token": "theirs"}))
    return lock


def test_a_lock_from_another_host_with_an_old_heartbeat_is_taken_over_with_a_note(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("EMOPREFER_LOCK_TIMEOUT_S", raising=False)
    lock = forge_lock(tmp_path, heartbeat_age_s=16 * 60)  # default timeout: 15 minutes
    with RunStore("r", tmp_path) as store:
        mine = json.loads(lock.read_text())
        assert (mine["pid"], mine["host"]) == (os.getpid(), socket.gethostname())
        store.append_predictions([row("k1")])
    note = capsys.readouterr().out
    assert "taking over the lock" in note and str(lock) in note and "gpu-node-17.elsewhere" in note
    assert not lock.exists()  # released on exit


def test_a_lock_from_another_host_with_a_fresh_heartbeat_is_refused_naming_the_lock_file(tmp_path, monkeypatch):
    monkeypatch.delenv("EMOPREFER_LOCK_TIMEOUT_S", raising=False)
    lock = forge_lock(tmp_path, heartbeat_age_s=60)
    with pytest.raises(StoreError, match=r"in use by process 4242 on gpu-node-17.elsewhere") as error:
        RunStore("r", tmp_path).open()
    assert f"lock file {lock}" in str(error.value)
    assert json.loads(lock.read_text())["token"] == "theirs"  # left alone
    monkeypatch.setenv("EMOPREFER_LOCK_TIMEOUT_S", "30")  # the timeout is configurable
    with RunStore("r", tmp_path):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    monkeypatch.setenv("EMOPREFER_LOCK_TIMEOUT_S", "soon")
    with pytest.raises(StoreError, match="EMOPREFER_LOCK_TIMEOUT_S must be a number of seconds"):
        RunStore("r", tmp_path).open()


def test_a_live_process_on_this_host_keeps_its_lock_however_old_its_heartbeat(tmp_path, monkeypatch):
    monkeypatch.setenv("EMOPREFER_LOCK_TIMEOUT_S", "1")
    forge_lock(tmp_path, heartbeat_age_s=3600, host=socket.gethostname(), pid=os.getpid())
    with pytest.raises(StoreError, match="in use by process"):
        RunStore("r", tmp_path).open()


def test_every_batch_append_refreshes_the_heartbeat(tmp_path):
    with RunStore("r", tmp_path) as store:
        old = (datetime.now(timezone.utc) - timedelta(hours=1)).isoformat(timespec="seconds")
        store.lock_path.write_text(json.dumps(json.loads(store.lock_path.read_text()) | {"heartbeat": old}))
        store.append_predictions([row("k1")])
        assert json.loads(store.lock_path.read_text())["heartbeat"] > old
        store.lock_path.write_text(json.dumps(json.loads(store.lock_path.read_text()) | {"heartbeat": old}))
        store.append_steps([{"key": "describe|x"}])
        assert json.loads(store.lock_path.read_text())["heartbeat"] > old


def test_a_writer_whose_lock_was_taken_over_stops_before_writing(tmp_path):
    store = RunStore("r", tmp_path).open()
    store.append_predictions([row("k1")])
    lock = forge_lock(tmp_path, heartbeat_age_s=0)  # a new owner took over while we were silent
    with pytest.raises(StoreError, match="was taken over by process 4242 on gpu-node-17.elsewhere"):
        store.append_predictions([row("k2", "s2")])
    store.close()
    assert [r["key"] for r in read_jsonl(tmp_path / "r" / "predictions.jsonl")] == ["k1"]
    assert json.loads(lock.read_text())["token"] == "theirs"  # the new owner's lock survives our close


def test_read_predictions_concatenates_runs_with_the_contract_columns(tmp_path):
    k1, k2 = row_key("S1", "normal", 0, "s1"), row_key("S1", "normal", 0, "s2")  # read_predictions checks keys
    with RunStore("a", tmp_path) as store:
        store.append_predictions([row(k1, run_id="a"), row(k2, "s2", run_id="a")])
    with RunStore("b", tmp_path) as store:
        store.append_predictions([row(k1, judge="other", run_id="b")])
    table = read_predictions(tmp_path)
    assert list(table.columns[: len(COLUMNS)]) == COLUMNS
    assert len(table) == 3 and set(table["run_id"]) == {"a", "b"}
    assert table["round"].dtype.kind == "i"
    assert read_predictions(tmp_path / "empty").columns.tolist() == COLUMNS


SCRIPT = textwrap.dedent("""
    import sys
    import pandas as pd
    from fake_backend import FAKE_LLM, FAKE_MLLM, FakeBackend
    from helpers.run import engine

    out, delay = sys.argv[1], float(sys.argv[2])
    pairs = pd.DataFrame({
        "name": [f"s{i:02d}" for i in range(12)],
        "a1": [f"a calm person {i}" for i in range(12)],
        "a2": [f"an angry person shouting {i}" for i in range(12)],
        "preference": ["a1", "a2", "same"] * 4,
    })
    engine.run(FAKE_MLLM, "all", pairs=pairs, rounds=2, output_dir=out, dataset="toy", judge_llm=FAKE_LLM,
               engine=lambda spec: FakeBackend(spec, delay_s=delay), progress=False)
""")


def run_script(out: Path, delay: float) -> subprocess.Popen:
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(out), str(delay)], env=env)


def comparable(root: Path) -> pd.DataFrame:
    table = read_predictions(root).drop(columns=["created_at", "latency_s"])
    return table.sort_values(["run_id", "key"]).reset_index(drop=True)


def rows_in(root: Path) -> int:
    return sum(len(read_jsonl(f)) for f in root.glob("*/predictions.jsonl"))


def s4_reasoning_in(root: Path) -> int:
    return sum(len(read_jsonl(f)) for f in root.glob("*__S4__*/steps.jsonl"))


def kill_when(root: Path, condition) -> None:
    """Start the run, SIGKILL it as soon as ``condition(root)`` holds."""
    victim = run_script(root, 0.1)
    deadline = time.time() + 120
    while time.time() < deadline and not condition(root) and victim.poll() is None:
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL  # killed, not finished


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_gives_exactly_the_uninterrupted_rows(tmp_path):
    reference = run_script(tmp_path / "reference", 0.0)
    assert reference.wait(timeout=120) == 0
    total = 4 * 12 * 2 * 2

    killed_root = tmp_path / "killed"
    kill_when(killed_root, lambda root: rows_in(root) >= 30)  # in the middle of S1
    assert 0 < rows_in(killed_root) < total
    assert any(killed_root.glob("*/lock"))  # it left its lock behind
    sessions = [json.loads(f.read_text())["sessions"][-1] for f in killed_root.glob("*/manifest.json")]
    assert any(s["ended"] is None and s["calls"] for s in sessions)  # the killed session's cost so far
    kill_when(killed_root, lambda root: s4_reasoning_in(root) >= 8)  # again, during S4's reasoning
    assert rows_in(killed_root) < total

    resumed = run_script(killed_root, 0.0)
    assert resumed.wait(timeout=120) == 0
    got, want = comparable(killed_root), comparable(tmp_path / "reference")
    assert not got.duplicated(["run_id", "key"]).any()
    pd.testing.assert_frame_equal(got, want)
    steps = [s["key"] for f in killed_root.glob("*/steps.jsonl") for s in read_jsonl(f)]
    assert len(steps) == len(set(steps)) == 12 * 2 + 12 * 2 * 2  # descriptions + reasoning, once each
    manifests = [json.loads(f.read_text()) for f in killed_root.glob("*/manifest.json")]
    assert {m["status"] for m in manifests} == {"complete"}
