"""A deterministic stand-in for a model backend: answers depend only on the request, so two
runs (or a killed run and its resumption) must produce identical tables."""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Iterable

from helpers.judges.base import Backend, JudgeSpec, Request, Response

FAKE_MLLM = JudgeSpec(
    name="fake_mllm", family="fake", backend="local", checkpoint="none", input_type="text", batch_size=3,
    options={"describe_prompt": "describe_video", "system_prompt": "system_omni"},
)
FAKE_LLM = JudgeSpec(name="fake_llm", family="text", backend="local", checkpoint="none", batch_size=4)
ANSWERS = ("a1", "a2", "same", "Output: a2", "I think a1 is better than a2", "no idea")


def digest(*parts: object) -> int:
    return int(hashlib.sha256("\x00".join(map(str, parts)).encode()).hexdigest()[:8], 16)


class FakeBackend(Backend):
    """Records every request; describes with a text naming the sample, answers from a hash."""

    def __init__(self, spec: JudgeSpec, delay_s: float = 0.0):
        super().__init__(spec)
        self.requests: list[Request] = []
        self.delay_s = delay_s
        self.closed = False

    @property
    def info(self) -> dict:
        """What a real backend reports about itself (checkpoint, device, versions), in small."""
        return {"backend": "fake", "checkpoint": self.spec.checkpoint, "device": "none", "delay_s": self.delay_s}

    def generate(self, requests: list[Request]) -> list[Response]:
        self.calls += 1
        self.requests += requests
        if self.delay_s:
            time.sleep(self.delay_s)
        out = []
        for request in requests:
            h = digest(self.spec.name, request.prompt, request.seed)
            if request.prompt.startswith("Please provide a detailed description"):
                media = request.media.video or request.media.audio if request.media else None
                text = f"A person looks\nsad ({h % 97}) {getattr(media, 'stem', '')}"
            elif request.prompt.endswith("along with the reasoning process."):
                text = f"Reasoning {h % 13}:\n{ANSWERS[h % len(ANSWERS)]} fits the ground truth."
            else:
                text = ANSWERS[h % len(ANSWERS)]
            out.append(Response(request.key, text, 0.01))
        return out

    def close(self) -> None:
        self.closed = True


def expected_calls(n_pairs: int, rounds: int, orders: int, strategies: Iterable[str],
                   shared_descriptions: bool = True) -> Counter:
    """Model calls the sharing rules of ``helpers.run.strategies`` imply for a fresh run: one
    description per (sample, round), or per (sample, round, order) when not shared."""
    strategies = set(strategies)
    per_order = n_pairs * rounds * orders
    calls: Counter[str] = Counter()
    for strategy in strategies:
        calls[{"S1": "S1", "S2": "S2", "S3": "S3", "S4": "S4_extract"}[strategy]] += per_order
    if strategies & {"S2", "S3", "S4"}:
        calls["describe"] = n_pairs * rounds * (1 if shared_descriptions else orders)
    if "S4" in strategies:
        calls["S4_reason"] = per_order
    return calls
