"""The contract between the judging engine and model backends.

Strategies build ``Request``s (a prompt plus optional media); a ``Backend`` turns a batch of
requests into ``Response``s. Backends know nothing about EmoPrefer; strategies know nothing
about transformers, vLLM or HTTP. CPU baselines that read the pair directly implement
``PairJudge`` instead.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from helpers.digest import module_sha256


class BackendError(RuntimeError):
    """A judge cannot run as configured; the message names the judge and what to change."""


@dataclass(frozen=True)
class Media:
    """The media of one sample, as the judge's input type asks for it."""

    input_type: str  # audio | video | audiovideo | text
    video: Path | None = None
    audio: Path | None = None


@dataclass(frozen=True)
class Request:
    """One generation: a user prompt (sent byte for byte), optional media, a seed."""

    key: str
    prompt: str
    media: Media | None = None
    system: str | None = None
    seed: int = 0


@dataclass(frozen=True)
class Response:
    key: str
    text: str
    latency_s: float = 0.0


STRATEGIES = ("S1", "S2", "S3", "S4")
"""The study's judging strategies (S1 direct; S2 describe then judge; S3 an external text LLM judges the
description; S4 S3 with explicit reasoning): what a judge's ``strategies`` list is drawn from."""


@dataclass(frozen=True)
class Strategy:
    """What one strategy is, read by the registry (which judges a run needs), the pipeline and the run
    identity alike: one record, so no module tests strategy names itself.

    ``describes``: the MLLM first describes the media (S2-S4); ``reasons``: the text LLM reasons
    before a second call extracts the label (S4); ``verdict_role``: who gives the verdict
    (``mllm``, ``llm`` or ``cpu``) and ``verdict_step`` the call count it is counted under;
    ``prompts``: the templates of ``params/prompts.yaml`` it sends besides the judge's own
    describe/system prompts."""

    name: str
    describes: bool
    reasons: bool
    verdict_role: str
    verdict_step: str
    prompts: tuple[str, ...]

    @property
    def uses_llm(self) -> bool:
        """Whether the run needs the external text LLM (S3, S4)."""
        return self.verdict_role == "llm"


STRATEGY_RECORDS: dict[str, Strategy] = {
    "S1": Strategy("S1", describes=False, reasons=False, verdict_role="mllm", verdict_step="S1", prompts=("S1",)),
    "S2": Strategy("S2", describes=True, reasons=False, verdict_role="mllm", verdict_step="S2",
                   prompts=("S2_judge",)),
    "S3": Strategy("S3", describes=True, reasons=False, verdict_role="llm", verdict_step="S3", prompts=("S2_judge",)),
    "S4": Strategy("S4", describes=True, reasons=True, verdict_role="llm", verdict_step="S4_extract",
                   prompts=("S4_reason", "S4_extract")),
    "-": Strategy("-", describes=False, reasons=False, verdict_role="cpu", verdict_step="cpu", prompts=()),
}
"""Every strategy a run folder can hold: the paper's S1-S4 and ``-`` (a CPU judge reads the pair)."""


def strategy_record(name: str) -> Strategy:
    """The record of ``name``; an unknown strategy is a ValueError naming the choices."""
    if name not in STRATEGY_RECORDS:
        raise ValueError(f"strategy must be one of {tuple(STRATEGY_RECORDS)}, got {name!r}")
    return STRATEGY_RECORDS[name]


@dataclass(frozen=True)
class JudgeSpec:
    """One judge, as one YAML file in ``params/models/`` describes it."""

    name: str
    family: str
    backend: str
    checkpoint: str | None = None
    input_type: str = "text"
    batch_size: int = 1
    generation: dict = field(default_factory=dict)
    api_base: str | None = None
    api_key_env: str | None = None
    strategies: tuple[str, ...] = STRATEGIES
    options: dict = field(default_factory=dict)
    shape: dict = field(default_factory=dict)
    """The checkpoint's memory-relevant shape (layers, KV heads, head dim, parameters; with its source), read
    by :mod:`helpers.judges.fit`. A fact about the weights, not a setting: not part of the run identity."""


ENGINES = ("auto", "transformers", "vllm", "openai")
"""The one name for a run's choice of engine (the run's ``engine`` setting): ``auto`` takes the engine
the judge's YAML names (``options.engine``; transformers, with a warning, where a vLLM judge finds no
vLLM or GPU) and ``openai`` for API judges. A spec's own ``backend`` (``local``,
``openai``, ``cpu``) says what KIND of judge it is, not which engine serves it."""


class Backend(ABC):
    """Generates text for batches of requests; counts its calls.

    Everything the engine reads of a backend is declared here, so no caller probes for it:
    ``kind`` (the engine, one of :data:`ENGINES` but ``auto``; ``custom`` for test doubles),
    ``chunk_size`` (how many pending requests one call should receive: an engine that batches
    continuously, like vLLM, wants large chunks; 0 means the spec's batch size) and ``info``
    (what the backend says about itself for the run manifest: checkpoint, device, versions,
    endpoint -- never a key)."""

    kind: ClassVar[str] = "custom"
    chunk_size: ClassVar[int] = 0

    def __init__(self, spec: JudgeSpec):
        self.spec = spec
        self.calls = 0
        self._info: dict[str, Any] = {}

    @property
    def info(self) -> dict[str, Any]:
        """The backend's own description (filled as it loads: lazy loaders complete it late)."""
        return self._info

    @info.setter
    def info(self, value: dict[str, Any]) -> None:
        self._info = dict(value)

    def requests_per_call(self, batch_size: int | None = None) -> int:
        """How many requests the engine hands over per :meth:`generate` call: the run's batch
        size, else the spec's, raised to :attr:`chunk_size` for continuously batching engines."""
        return max(int(batch_size or self.spec.batch_size or 1), int(self.chunk_size))

    @abstractmethod
    def generate(self, requests: list[Request]) -> list[Response]:
        """One response per request, in order."""

    def close(self) -> None:
        """Release models or connections (nothing to release by default)."""
        return None

    def after_out_of_memory(self) -> None:
        """Called after :meth:`generate` ran out of GPU memory, before the engine retries a smaller
        batch (``helpers.run.strategies.Pipeline``): hand cached blocks back (nothing by default)."""
        return None


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a CUDA out-of-memory error: torch's ``OutOfMemoryError`` (a RuntimeError
    subclass) or a RuntimeError whose message says so (CUDA, cuBLAS and vLLM's own wording)."""
    if type(exc).__name__ == "OutOfMemoryError":
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


class PairJudge(ABC):
    """A judge that reads the pair's texts itself (length, random, reward models).

    ``pairs`` holds the whole dataset in one order (``name, a1, a2`` and, where available,
    ``preference, model1, model2``) so that cross-fitted judges can fit on other folds; the
    result is one label in {a1, a2, same} per row, in the pair's own a1/a2 frame.
    """

    implementation_modules: ClassVar[tuple[str, ...]] = ()
    """Further modules whose code shapes the labels (beyond the class's own and its bases')."""

    def __init__(self, spec: JudgeSpec):
        self.spec = spec

    @classmethod
    def implementation(cls, spec: JudgeSpec) -> dict[str, Any]:
        """What of the CODE decides this judge's labels, for the run identity: sha256 of the
        source of every module that defines the class or one of its bases (and of
        :attr:`implementation_modules`), plus :meth:`artefacts`. Editing the rule (``>`` to
        ``<``) then refuses a resume by name instead of mixing old and new labels."""
        modules = [c.__module__ for c in cls.__mro__ if issubclass(c, PairJudge) and c is not PairJudge]
        modules = sorted(dict.fromkeys([*modules, *cls.implementation_modules]))
        return {"class": f"{cls.__module__}:{cls.__qualname__}",
                "source_sha256": {m: module_sha256(m) for m in modules}, "artefacts": cls.artefacts(spec)}

    @classmethod
    def artefacts(cls, spec: JudgeSpec) -> dict[str, str]:
        """sha256 of any fitted or bundled artefact the labels depend on (none by default)."""
        return {}

    @abstractmethod
    def predict(self, pairs: pd.DataFrame, *, seed: int = 0) -> pd.Series:
        """Labels indexed like ``pairs``."""

    def predict_trained(self, pairs: pd.DataFrame, train: pd.DataFrame, *, seed: int = 0) -> pd.Series:
        """Labels for ``pairs`` whose own labels are a construction (a probe: "the original text"),
        for a judge that learns from labels to fit on ``train`` (the human-labelled pairs, same
        order) instead. A judge that learns nothing ignores ``train``; learning judges override."""
        return self.predict(pairs, seed=seed)
