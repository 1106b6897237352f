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

import pandas as pd


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


class Backend(ABC):
    """Generates text for batches of requests; counts its calls."""

    def __init__(self, spec: JudgeSpec):
        self.spec = spec
        self.calls = 0

    @abstractmethod
    def generate(self, requests: list[Request]) -> list[Response]:
        """One response per request, in order."""

    def close(self) -> None:
        """Release models or connections (nothing to release by default)."""
        return None


class PairJudge(ABC):
    """A judge that reads the pair's texts itself (length, random, reward models).

    ``pairs`` holds the whole dataset in one order (``name, a1, a2`` and, where available,
    ``preference, model1, model2``) so that cross-fitted judges can fit on other folds; the
    result is one label in {a1, a2, same} per row, in the pair's own a1/a2 frame.
    """

    def __init__(self, spec: JudgeSpec):
        self.spec = spec

    @abstractmethod
    def predict(self, pairs: pd.DataFrame, *, seed: int = 0) -> pd.Series:
        """Labels indexed like ``pairs``."""
