"""Provenance: which code and which packages produced a result, recorded in every run manifest
(``helpers.run.engine``), every imported prediction file (``helpers.imports``) and the report's
reproducibility appendix (``helpers.report.summary``)."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from pathlib import Path

import pandas as pd

from helpers import paths

# The packages whose versions can change a prediction or a number of the report.
PACKAGES = (
    "emoprefer-study", "numpy", "pandas", "scipy", "scikit-learn", "statsmodels", "matplotlib", "seaborn",
    "papermill", "nbformat", "markdown", "torch", "torchvision", "transformers", "sentence-transformers",
    "qwen-omni-utils", "av", "vllm", "openai",
)


def _git(root: Path, *args: str) -> str:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10,
                              check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def git_revision(root: Path | None = None) -> str | None:
    """The commit checked out at ``root`` (the project by default); None outside a git checkout."""
    return _git(root or paths.project_root(), "rev-parse", "HEAD") or None


def revision_note(root: Path | None = None) -> str:
    """The commit as a reader should see it: marked when the working tree had uncommitted changes,
    or a sentence saying there is no commit."""
    root = root or paths.project_root()
    revision = git_revision(root)
    if not revision:
        return "no git commit (not a git checkout, or no commit yet)"
    dirty = _git(root, "status", "--porcelain", "--untracked-files=no")
    return revision + (" with uncommitted changes" if dirty else "")


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Python's version and each package's (None when it is not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def package_table(names: tuple[str, ...] = PACKAGES) -> pd.DataFrame:
    """:func:`package_versions` as a table for the report ("not installed" spelled out)."""
    rows = [{"package": name, "version": version or "not installed"}
            for name, version in package_versions(names).items()]
    return pd.DataFrame(rows, columns=["package", "version"])
