"""Fixtures shared by the backend tests: hub access off, and the tiny random checkpoints and
synthetic media (built once per session by ``tiny_models``; never downloaded)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_models import build_omni_thinker, build_text_lm, write_mp4, write_wav


@pytest.fixture
def offline(monkeypatch):
    """The Hugging Face hub is never asked: a test that would download fails instead."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def text_lm(tmp_path_factory) -> Path:
    """A tiny random Qwen2 text LM with its tokenizer and chat template."""
    return build_text_lm(tmp_path_factory.mktemp("tiny_text_lm"))


@pytest.fixture(scope="session")
def omni(tmp_path_factory) -> Path:
    """A tiny random Qwen2.5-Omni thinker with its processor."""
    return build_omni_thinker(tmp_path_factory.mktemp("tiny_omni"))


@pytest.fixture(scope="session")
def sample_media(tmp_path_factory) -> dict[str, Path]:
    """One short synthetic clip as ``s1.mp4`` (with sound) and ``s1.wav``."""
    folder = tmp_path_factory.mktemp("tiny_media")
    return {"video": write_mp4(folder / "s1.mp4"), "audio": write_wav(folder / "s1.wav")}
