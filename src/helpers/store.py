"""The resumable predictions store: one folder per run under ``predictions_dir()``.

``<root>/<run_id>/predictions.jsonl``  one row per strategy x order x round x sample
``<root>/<run_id>/steps.jsonl``        descriptions and reasoning (so S3/S4 reuse S2's texts)
``<root>/<run_id>/manifest.json``      parameters, versions, hashes, call counts (no secrets)

Runs on a GPU take hours and get killed, so every batch is appended with flush + fsync and a
re-run skips the keys already present. A SIGKILL can leave at most a torn last line; opening
the run cuts it off, so that row is generated again: no loss and no duplicates. A lock file
keeps a second process out of the same run folder.
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from helpers import paths

COLUMNS = [
    "judge", "strategy", "input_type", "order", "round", "name", "gt", "pred", "parse_rule",
    "raw", "latency_s", "created_at", "run_id",
]
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.=-]+$")


class StoreError(RuntimeError):
    """The store cannot be used as asked (locked run, malformed file); the message says why."""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def make_run_id(judge: str, strategy: str, input_type: str, dataset: str, llm: str | None = None,
                seed: int = 0) -> str:
    """A readable, deterministic run id, so the same command resumes the same run."""
    parts = [judge, "cpu" if strategy == "-" else strategy, input_type, dataset]
    if llm:
        parts.append(f"llm={llm}")
    if seed:
        parts.append(f"seed={seed}")
    run_id = "__".join(parts)
    if not RUN_ID_PATTERN.match(run_id):
        raise StoreError(f"run id {run_id!r} has characters outside [A-Za-z0-9_.=-]")
    return run_id


def repair_jsonl(path: Path) -> int:
    """Cut a torn last line (a write interrupted by a kill) and return how many bytes went.

    Only the tail can be torn because lines are appended whole and fsynced; a bad line in the
    middle is real corruption and is reported instead of silently dropped.
    """
    if not path.exists():
        return 0
    data = path.read_bytes()
    keep = data.rfind(b"\n") + 1
    tail = data[keep:]
    for number, line in enumerate(data[:keep].splitlines(), start=1):
        try:
            json.loads(line)
        except json.JSONDecodeError as exc:
            raise StoreError(f"{path}, line {number}: not valid JSON ({exc}); the file is corrupt") from exc
    if tail:
        with open(path, "r+b") as handle:
            handle.truncate(keep)
            handle.flush()
            os.fsync(handle.fileno())
    return len(tail)


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSONL file, ignoring a torn last line (readers never modify files)."""
    if not path.exists():
        return []
    rows = []
    lines = path.read_bytes().split(b"\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if number == len(lines):  # torn tail of a run in progress or killed
                break
            raise StoreError(f"{path}, line {number}: not valid JSON ({exc})") from exc
    return rows


def append_jsonl(path: Path, rows: Iterable[dict]) -> int:
    """Append whole lines in one write, then flush and fsync: durable before we go on."""
    payload = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    if not payload:
        return 0
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())
    return payload.count("\n")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunStore:
    """One run folder, held under a lock while open (use as a context manager)."""

    def __init__(self, run_id: str, root: str | Path | None = None):
        if not RUN_ID_PATTERN.match(run_id):
            raise StoreError(f"run id {run_id!r} has characters outside [A-Za-z0-9_.=-]")
        self.run_id = run_id
        self.root = Path(root) if root is not None else paths.predictions_dir()
        self.folder = self.root / run_id
        self.predictions_path = self.folder / "predictions.jsonl"
        self.steps_path = self.folder / "steps.jsonl"
        self.manifest_path = self.folder / "manifest.json"
        self.lock_path = self.folder / "lock"
        self._locked = False
        self.done: set[str] = set()
        self.repaired_bytes = 0

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> RunStore:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._acquire()
        self.repaired_bytes = repair_jsonl(self.predictions_path) + repair_jsonl(self.steps_path)
        self.done = {row["key"] for row in read_jsonl(self.predictions_path)}
        return self

    def close(self) -> None:
        if self._locked:
            self.lock_path.unlink(missing_ok=True)
            self._locked = False

    def __enter__(self) -> RunStore:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def _acquire(self) -> None:
        """Create the lock file atomically; take over a lock whose process is gone."""
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": now()}
        for _ in range(2):
            try:
                fd = os.open(self.lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                same_host = holder.get("host") == me["host"]
                if same_host and isinstance(holder.get("pid"), int) and not _pid_alive(holder["pid"]):
                    self.lock_path.unlink(missing_ok=True)  # stale: its process died (e.g. SIGKILL)
                    continue
                raise StoreError(
                    f"run folder {self.folder} is in use by process {holder.get('pid')} on "
                    f"{holder.get('host')} since {holder.get('since')} (lock file {self.lock_path}). "
                    "Wait for it to finish; if that process is gone, delete the lock file."
                ) from None
            with os.fdopen(fd, "w") as handle:
                json.dump(me, handle)
            self._locked = True
            return
        raise StoreError(f"could not take the lock {self.lock_path}")

    def _holder(self) -> dict:
        try:
            return json.loads(self.lock_path.read_text())
        except (OSError, json.JSONDecodeError):
            return {}  # lock being written right now, or emptied: treat as held by unknown

    # ------------------------------------------------------------------ data

    def append_predictions(self, rows: list[dict]) -> int:
        """Append rows whose key is new (a key already stored is never written twice)."""
        fresh = [row for row in rows if row["key"] not in self.done]
        append_jsonl(self.predictions_path, fresh)
        self.done.update(row["key"] for row in fresh)
        return len(fresh)

    def append_steps(self, rows: list[dict]) -> int:
        return append_jsonl(self.steps_path, rows)

    def read_manifest(self) -> dict:
        if not self.manifest_path.exists():
            return {}
        return json.loads(self.manifest_path.read_text())

    def write_manifest(self, manifest: dict) -> None:
        """Write to a temporary file then rename, so a kill never leaves half a manifest."""
        tmp = self.manifest_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False, default=str))
        os.replace(tmp, self.manifest_path)


def load_steps(root: str | Path | None = None) -> list[dict]:
    """Every stored step (descriptions, reasoning) of every run under ``root``."""
    root = Path(root) if root is not None else paths.predictions_dir()
    rows: list[dict] = []
    for file in sorted(root.glob("*/steps.jsonl")):
        rows += read_jsonl(file)
    return rows


def load_predictions(root: str | Path | None = None) -> pd.DataFrame:
    """All runs under ``root`` (default ``predictions_dir()``) as one tidy table with at least
    the columns of ``COLUMNS``; extra columns (dataset, llm, media_name, seed, key, steps)
    follow."""
    root = Path(root) if root is not None else paths.predictions_dir()
    rows: list[dict] = []
    for file in sorted(root.glob("*/predictions.jsonl")):
        rows += read_jsonl(file)
    if not rows:
        return pd.DataFrame(columns=COLUMNS)
    table = pd.DataFrame(rows)
    extra = [c for c in table.columns if c not in COLUMNS]
    table = table.reindex(columns=COLUMNS + extra)
    return table.astype({"round": int, "name": str, "strategy": str})
