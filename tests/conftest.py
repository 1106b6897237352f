"""Fixtures shared by the backend tests: hub access off, and the tiny random checkpoints and
synthetic media (built once per session by ``tiny_models``; never downloaded). Below them, the
suite's time budget (read it before adding a test that runs a notebook or a subprocess)."""

from __future__ import annotations

import os
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


# --------------------------------------------------------------------------- the time budget
#
# `make test` must finish in <= 4 minutes on a 2-core machine (issue 28 item 8); it runs pytest
# with two workers (pytest-xdist, `--dist loadfile`: a module's tests and its module-scoped
# fixtures stay in one worker, so an expensive fixture is built once). The budget per test,
# measured unloaded, setup + call + teardown:
#   - a plain test (a function on small tables): <= BUDGET_S["plain"] seconds;
#   - an end-to-end test (papermill, a subprocess, a tiny model, Ray): marked `@pytest.mark.slow`,
#     <= BUDGET_S["slow"] seconds, and sharing its expensive inputs through a module- or
#     session-scoped fixture rather than building them again.
# Slow modules are handed out first, so the two workers do not end on one long test. Every test
# also has a hard limit (pytest-timeout, `timeout` in pyproject.toml) that ends a hung test. The
# summary at the end names the tests over their budget, scaled by the machine's load, so that a new
# slow test is seen the day it is added, not when the suite has become slow.

BUDGET_S = {"plain": 5.0, "slow": 60.0}


def _load() -> tuple[float, int]:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0]), os.cpu_count() or 1
    except (OSError, ValueError, IndexError):
        return 0.0, os.cpu_count() or 1


def pytest_report_header(config):
    load, cores = _load()
    return f"load average {load:.2f} on {cores} core(s) at the start (timings below scale with it)"


def pytest_collection_modifyitems(config, items):
    """Modules holding a slow test first (kept whole and in their order): the workers start on
    the long ones and finish on short ones."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    first = {}
    for index, item in enumerate(items):
        first.setdefault(item.path, index)
    items.sort(key=lambda item: (item.path not in slow, first[item.path]))


_spent: dict[str, list] = {}


def pytest_runtest_logreport(report):
    """Seconds per test (setup + call + teardown), and whether it is marked slow."""
    entry = _spent.setdefault(report.nodeid, [0.0, "slow" in report.keywords])
    entry[0] += report.duration


def pytest_terminal_summary(terminalreporter):
    load, cores = _load()
    scale = max(1.0, load / cores)
    over = sorted(((seconds, nodeid, "slow" if slow else "plain") for nodeid, (seconds, slow) in _spent.items()
                   if seconds > BUDGET_S["slow" if slow else "plain"] * scale), reverse=True)
    if not over:
        return
    terminalreporter.section("time budget")
    terminalreporter.write_line(
        f"{len(over)} test(s) over their budget ({BUDGET_S['plain']:g} s plain, {BUDGET_S['slow']:g} s slow, "
        f"x{scale:.1f} for the load {load:.2f} on {cores} core(s)); see tests/conftest.py:")
    for seconds, nodeid, kind in over[:15]:
        terminalreporter.write_line(f"  {seconds:7.1f} s  {kind:5}  {nodeid}")
