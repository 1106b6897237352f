"""A stand-in ``vllm`` module for the engine-level tests of the main suite (no vLLM here).

It mirrors vLLM 0.33's contract where the project relies on it, and ``tests/vllm_contract``
checks that it still does against the real package (``make test-vllm``):

- ``SamplingParams`` takes only keyword arguments the real class has (an unknown one such as
  ``max_new_tokens`` is a TypeError), validates ranges and raises a temperature in (0, 0.01)
  to 0.01 as ``SamplingParams.__post_init__`` does;
- ``LLM`` has no ``shutdown`` of its own: the engine core process is stopped through
  ``llm.llm_engine.engine_core.shutdown()``;
- ``vllm.distributed.parallel_state`` offers ``destroy_model_parallel`` and
  ``destroy_distributed_environment``.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, fields

MAX_TEMP = 1e-2  # vllm/sampling_params.py: _MAX_TEMP
SAMPLING_EPS = 1e-5  # vllm/sampling_params.py: _SAMPLING_EPS


@dataclass
class SamplingParams:
    """The subset of vLLM's ``SamplingParams`` fields the project sends, with the real checks."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    max_tokens: int | None = 16
    seed: int | None = None

    def __post_init__(self) -> None:
        if 0 < self.temperature < MAX_TEMP:
            self.temperature = MAX_TEMP
        if self.temperature < 0:
            raise ValueError(f"temperature must be non-negative, got {self.temperature}.")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}.")
        if self.top_k < -1:
            raise ValueError(f"top_k must be 0 (disable), or at least 1, got {self.top_k}.")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be greater than zero, got {self.repetition_penalty}.")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}.")
        if self.temperature < SAMPLING_EPS:  # greedy: vLLM resets the sampling knobs
            self.top_p, self.top_k = 1.0, 0


FIELDS = tuple(f.name for f in fields(SamplingParams))


@dataclass
class Completion:
    """One generated text, shaped like vLLM's ``CompletionOutput``."""

    text: str


@dataclass
class Output:
    """One request's result, shaped like vLLM's ``RequestOutput``."""

    outputs: list


class EngineCore:
    def __init__(self):
        self.shut = False

    def shutdown(self):
        self.shut = True


class FakeVLLM:
    """A stand-in ``vllm`` module: an ``LLM`` that answers 'a1', records each generate call (and
    the ``SamplingParams`` it got) and can fail on a given call (a killed run)."""

    def __init__(self, fail_on_call: int | None = None):
        self.calls: list[int] = []
        self.engines: list[EngineCore] = []
        self.params: list[SamplingParams] = []
        self.torn_down: list[str] = []
        owner = self

        class LLM:
            def __init__(self, **kwargs):
                self.kwargs = kwargs
                self.llm_engine = types.SimpleNamespace(engine_core=EngineCore())
                owner.engines.append(self.llm_engine.engine_core)

            def generate(self, prompts, params, use_tqdm=False):
                assert all(isinstance(p, SamplingParams) for p in params)
                owner.calls.append(len(prompts))
                owner.params.extend(params)
                if fail_on_call is not None and len(owner.calls) == fail_on_call:
                    raise KeyboardInterrupt("killed")
                return [Output([Completion("a1")]) for _ in prompts]

        self.module = types.ModuleType("vllm")
        self.module.LLM, self.module.SamplingParams, self.module.__version__ = LLM, SamplingParams, "0-fake"
        distributed = types.ModuleType("vllm.distributed")
        state = types.ModuleType("vllm.distributed.parallel_state")
        state.destroy_model_parallel = lambda: owner.torn_down.append("destroy_model_parallel")
        state.destroy_distributed_environment = lambda: owner.torn_down.append("destroy_distributed_environment")
        distributed.parallel_state = state
        self.modules = {"vllm": self.module, "vllm.distributed": distributed, "vllm.distributed.parallel_state": state}

    def install(self, monkeypatch):
        for name, module in self.modules.items():
            monkeypatch.setitem(sys.modules, name, module)
        return self
