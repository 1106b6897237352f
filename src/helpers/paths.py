"""Where the project keeps things.

Notebooks run with papermill from ``notebooks/`` and tests from a temporary directory, so
paths are resolved from the project root (the folder holding ``pyproject.toml`` and
``params/``), never from the current directory.
"""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """The project root: ``$EMOPREFER_ROOT`` if set, else the first parent of the cwd or of
    this package that holds both ``pyproject.toml`` and ``params/``."""
    env = os.environ.get("EMOPREFER_ROOT")
    if env:
        return Path(env).resolve()
    for start in (Path.cwd(), Path(__file__).resolve()):
        for folder in (start, *start.parents):
            if (folder / "pyproject.toml").is_file() and (folder / "params").is_dir():
                return folder
    return Path(__file__).resolve().parents[2]


def params_dir() -> Path:
    return project_root() / "params"


def data_dir() -> Path:
    return project_root() / "data"


def predictions_dir() -> Path:
    """Root of the predictions store (one sub-folder per run)."""
    return Path(os.environ.get("EMOPREFER_PREDICTIONS", data_dir() / "predictions"))


def reports_dir() -> Path:
    return project_root() / "reports"
