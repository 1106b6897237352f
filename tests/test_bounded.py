"""Issue 28, bounded inputs: a step output is stored cut like an answer (``raw_truncated``), an
HTTP reply is read up to a byte limit, and requests in flight when a run is killed are counted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
from fake_backend import FAKE_MLLM, FakeBackend
from local_server import LocalServer, QuietHandler

from helpers.judges.base import JudgeSpec, Request, Response
from helpers.judges.openai import OpenAIBackend, OpenAIError
from helpers.run import engine
from helpers.run.store import RAW_MAX_BYTES, read_jsonl

TESTS = Path(__file__).parent


def toy_pairs(n: int = 4) -> pd.DataFrame:
    return pd.DataFrame({"name": [f"s{i:02d}" for i in range(n)], "a1": [f"calm {i}" for i in range(n)],
                         "a2": [f"angry and loud {i}" for i in range(n)], "preference": ["a1", "a2"] * (n // 2)})


class RamblingBackend(FakeBackend):
    """Describes each video in 5 MB; every prompt it is sent is kept, to see what S2 judged on."""

    def generate(self, requests: list[Request]) -> list[Response]:
        out = super().generate(requests)
        return [Response(r.key, "sad " * (5 * 2**20 // 4), r.latency_s)
                if q.prompt.startswith("Please provide a detailed description") else r
                for q, r in zip(requests, out, strict=True)]


def test_a_5_mb_description_is_stored_cut_with_a_flag_and_judged_as_stored(tmp_path):
    """Before: S2 descriptions were stored whole (steps.jsonl 21 MB for 4 rows of 5 MB answers)."""
    backends: list[RamblingBackend] = []

    def make(spec):
        backends.append(RamblingBackend(spec))
        return backends[-1]

    summary = engine.run(FAKE_MLLM, "S2", pairs=toy_pairs(), rounds=1, order="normal", output_dir=tmp_path,
                         progress=False, dataset="toy", engine=make)
    steps = read_jsonl(tmp_path / summary.loc[0, "run_id"] / "steps.jsonl")
    assert len(steps) == 4 and all(s["raw_truncated"] for s in steps)
    assert all(len(s["text"].encode()) <= RAW_MAX_BYTES for s in steps)
    assert (tmp_path / summary.loc[0, "run_id"] / "steps.jsonl").stat().st_size < 4 * RAW_MAX_BYTES + 20_000
    judged = [r.prompt for r in backends[0].requests if not r.prompt.startswith("Please provide")]
    assert judged and all(steps[0]["text"] in p and "sad " * (RAW_MAX_BYTES // 4 + 1) not in p for p in judged)


def huge_reply_server(size: int, declare: bool) -> tuple[LocalServer, list[int]]:
    seen: list[int] = []

    class Handler(QuietHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(1)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            if declare:
                self.send_header("Content-Length", str(size))
            self.end_headers()
            try:
                chunk = b" " * 2**16
                for _ in range(size // len(chunk)):
                    self.wfile.write(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client stopped reading: what the limit is for

    return LocalServer(Handler), seen


@pytest.mark.parametrize("declare", [True, False])
def test_a_reply_beyond_the_byte_limit_is_refused_not_read_whole_nor_retried(monkeypatch, declare):
    monkeypatch.setenv("EMOPREFER_TEST_BOUND_KEY", "sk-bounded-test-key-123")
    server, seen = huge_reply_server(16 * 2**20, declare)
    try:
        spec = JudgeSpec(name="big", family="openai", backend="openai", checkpoint="m", input_type="text",
                         batch_size=1, api_base=server.url, api_key_env="EMOPREFER_TEST_BOUND_KEY",
                         options={"max_retries": 2, "backoff_s": 0.01, "timeout_s": 10, "max_reply_bytes": 2**20})
        with pytest.raises(OpenAIError, match=r"sent a reply larger than the 1,048,576 bytes read"):
            OpenAIBackend(spec).generate([Request("k", "which?", None, None, 0)])
    finally:
        server.close()
    assert len(seen) == 1  # not retried: the same server would send it again


KILLED = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from fake_backend import FAKE_MLLM, FakeBackend
    from helpers.run import engine
    import pandas as pd

    out, log = sys.argv[1], Path(sys.argv[2])

    class Hanging(FakeBackend):
        def generate(self, requests):
            with open(log, "a") as f:
                f.write(f"{len(requests)}\\n")  # what the server saw, before it answers
            if len(log.read_text().splitlines()) == 3:
                time.sleep(600)  # the third batch never comes back: killed meanwhile
            return super().generate(requests)

    pairs = pd.DataFrame({"name": [f"s{i:02d}" for i in range(12)], "a1": ["calm"] * 12,
                          "a2": ["angry and loud"] * 12, "preference": ["a1", "a2"] * 6})
    engine.run(FAKE_MLLM, "S1", pairs=pairs, rounds=1, order="normal", output_dir=out, dataset="toy",
               engine=Hanging, progress=False)
""")


@pytest.mark.slow
def test_requests_in_flight_at_a_kill_are_counted_in_the_manifest(tmp_path):
    """Before: the server answered 1,172 requests, the manifest of the killed run said 1,148."""
    log = tmp_path / "server.log"
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    victim = subprocess.Popen([sys.executable, "-c", KILLED, str(tmp_path / "store"), str(log)], env=env)
    deadline = time.time() + 180
    while time.time() < deadline and victim.poll() is None and not (
            log.is_file() and len(log.read_text().splitlines()) == 3):
        time.sleep(0.1)
    time.sleep(0.5)  # the third batch is out
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    sent = sum(int(n) for n in log.read_text().splitlines())
    manifest = json.loads(next((tmp_path / "store").glob("*/manifest.json")).read_text())
    assert sent == 9 and manifest["calls_total"] == {"S1": sent}
    assert manifest["sessions"][-1]["in_flight"] == {"S1": 3} and manifest["sessions"][-1]["calls"] == {"S1": 6}
