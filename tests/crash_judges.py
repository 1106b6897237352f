"""CPU judges and backends that fail on purpose, for the kill/crash tests of the engine."""

from __future__ import annotations

import os
import signal

from fake_backend import FakeBackend

from helpers.judges.base import Request, Response
from helpers.judges.cpu import LengthJudge

KILL_AT_ENV = "EMOPREFER_TEST_KILL_AT"


class KilledLengthJudge(LengthJudge):
    """The length judge, whose process SIGKILLs itself on the ``$EMOPREFER_TEST_KILL_AT``-th
    batch (a deterministic stand-in for ``kill -9`` mid-run); without the variable it is the
    length judge."""

    batches = 0

    def predict(self, pairs, *, seed: int = 0):
        type(self).batches += 1
        if os.environ.get(KILL_AT_ENV) == str(type(self).batches):
            os.kill(os.getpid(), signal.SIGKILL)
        return super().predict(pairs, seed=seed)


class CrashingBackend(FakeBackend):
    """Answers ``ok_batches`` batches, then raises as a dropped endpoint would."""

    def __init__(self, spec, ok_batches: int = 1):
        super().__init__(spec)
        self.ok_batches = ok_batches

    def generate(self, requests: list[Request]) -> list[Response]:
        if self.calls >= self.ok_batches:
            raise RuntimeError("endpoint exploded: 502 Bad Gateway")
        return super().generate(requests)


class GarbageBackend(FakeBackend):
    """An endpoint that returns empty or meaningless content: no answer names a label."""

    def generate(self, requests: list[Request]) -> list[Response]:
        self.calls += 1
        self.requests += requests
        return [Response(r.key, "" if i % 2 else "<html>502</html>") for i, r in enumerate(requests)]


class EchoingBackend(FakeBackend):
    """A careless server that echoes the Authorization header into every answer (the key of
    ``$EMOPREFER_TEST_API_KEY``, whichever role it serves)."""

    def generate(self, requests: list[Request]) -> list[Response]:
        key = os.environ["EMOPREFER_TEST_API_KEY"]
        return [Response(r.key, f"{r.text} (request had Authorization: Bearer {key})")
                for r in super().generate(requests)]
