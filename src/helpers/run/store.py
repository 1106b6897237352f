"""The resumable predictions store: one folder per run under ``predictions_dir()``.

``<root>/<run_id>/predictions.jsonl``  one row per strategy x order x round x sample
``<root>/<run_id>/steps.jsonl``        descriptions and reasoning (so S3/S4 reuse S2's texts)
``<root>/<run_id>/manifest.json``      parameters, versions, hashes, call counts (no secrets),
                                     written only by ``helpers.run.session.RunSession``

Runs on a GPU take hours and get killed, so every batch is appended with flush + fsync and a
re-run skips the keys already present. A SIGKILL can leave at most a torn last line; opening
the run cuts it off, so that row is generated again: no loss and no duplicates. A lock file
keeps a second process out of the same run folder.

The lock records host, pid and a heartbeat refreshed on every batch append. A lock is stale,
and taken over with a printed note, when its holder on this host is no longer running, or when
its holder is on another host and its heartbeat is older than ``EMOPREFER_LOCK_TIMEOUT_S``
seconds (default 15 minutes): a worker on another machine of a shared file system cannot be
probed, only heard from. A writer whose lock was taken over notices at its next append and
stops instead of writing beside the new owner.
"""

from __future__ import annotations

import json
import os
import re
import socket
import uuid
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from helpers import paths
from helpers.secrets import redact, secrets_from_env  # noqa: F401 - secrets_from_env re-exported for run.engine

RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.=-]+$")
RUN_ID_MAX = 200  # a folder name, far below the 255 bytes file systems allow
REPLACED_DIR = ".replaced"  # where overwrite=True moves a run folder of another identity
MANIFEST_NAME = "manifest.json"
LOCK_TIMEOUT_ENV = "EMOPREFER_LOCK_TIMEOUT_S"
DEFAULT_LOCK_TIMEOUT_S = 15 * 60.0


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
    return check_run_id("__".join(parts))


def check_run_id(run_id: object) -> str:
    """Refuse a run id that could leave the store root or hide: like sample names, only
    ``[A-Za-z0-9_.=-]``, no ``..`` anywhere, no leading dot (``.``, ``.replaced``)."""
    if not isinstance(run_id, str) or not RUN_ID_PATTERN.match(run_id):
        raise StoreError(f"run id {run_id!r} has characters outside [A-Za-z0-9_.=-] (or is empty)")
    if ".." in run_id or run_id.startswith("."):
        raise StoreError(f"unsafe run id {run_id!r}: it may not contain '..' or start with '.'")
    if len(run_id) > RUN_ID_MAX:
        raise StoreError(f"run id {run_id[:40]!r}... is {len(run_id)} characters long; at most {RUN_ID_MAX}")
    return run_id


def read_manifest(folder: str | Path) -> dict | None:
    """A run folder's manifest (None when it has none), read without taking the folder's lock:
    every reader of the store (resume checks, scoring, the report) goes through here."""
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise StoreError(f"{path}: not readable JSON ({exc})") from exc


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


def lock_timeout_s() -> float:
    """Seconds without a heartbeat after which a lock counts as abandoned (env override)."""
    raw = os.environ.get(LOCK_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_LOCK_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        raise StoreError(f"{LOCK_TIMEOUT_ENV} must be a number of seconds, got {raw!r}") from None
    if value <= 0:
        raise StoreError(f"{LOCK_TIMEOUT_ENV} must be positive, got {raw!r}")
    return value


def _age_s(stamp: object) -> float | None:
    """Seconds since an ISO timestamp (None when absent or unreadable: never presumed old)."""
    try:
        when = datetime.fromisoformat(str(stamp))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return (datetime.now(timezone.utc) - when).total_seconds()


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

    def __init__(self, run_id: str, root: str | Path | None = None, lock_timeout_s: float | None = None,
                 secrets: dict[str, str] | None = None):
        self.run_id = check_run_id(run_id)
        self.secrets = dict(secrets or {})  # redacted from every row, step and manifest written
        self.root = Path(root) if root is not None else paths.predictions_dir()
        self.folder = self.root / run_id
        self.predictions_path = self.folder / "predictions.jsonl"
        self.steps_path = self.folder / "steps.jsonl"
        self.manifest_path = self.folder / MANIFEST_NAME
        self.lock_path = self.folder / "lock"
        self._locked = False
        self._lock: dict = {}
        self.lock_timeout_s = lock_timeout_s
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
            if self._holder().get("token") == self._lock["token"]:  # never remove a new owner's lock
                self.lock_path.unlink(missing_ok=True)
            self._locked = False

    def __enter__(self) -> RunStore:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def _acquire(self) -> None:
        """Create the lock file atomically; take over a stale lock (see the module docstring)."""
        stamp = now()
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": stamp, "heartbeat": stamp,
              "token": uuid.uuid4().hex}
        timeout = self.lock_timeout_s if self.lock_timeout_s is not None else lock_timeout_s()
        for _ in range(2):
            try:
                fd = os.open(self.lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                why = self._stale(holder, me["host"], timeout)
                if why:
                    print(f"note: taking over the lock {self.lock_path} of process {holder.get('pid')} on "
                          f"{holder.get('host')}: {why}")
                    self.lock_path.unlink(missing_ok=True)
                    continue
                raise StoreError(
                    f"run folder {self.folder} is in use by process {holder.get('pid')} on "
                    f"{holder.get('host')} since {holder.get('since')}, last heartbeat {holder.get('heartbeat')} "
                    f"(lock file {self.lock_path}). Wait for it to finish; the lock is taken over by itself once "
                    f"its heartbeat is {timeout:g} s old ({LOCK_TIMEOUT_ENV}), or delete the lock file if that "
                    "process is surely gone."
                ) from None
            with os.fdopen(fd, "w") as handle:
                json.dump(me, handle)
            self._locked, self._lock = True, me
            return
        raise StoreError(f"could not take the lock {self.lock_path}")

    @staticmethod
    def _stale(holder: dict, host: str, timeout: float) -> str | None:
        """Why ``holder``'s lock may be taken over, or None while it may still be alive."""
        pid = holder.get("pid")
        if holder.get("host") == host and isinstance(pid, int):  # this machine: ask the process table
            return None if _pid_alive(pid) else "its process is gone"
        age = _age_s(holder.get("heartbeat") or holder.get("since"))
        if age is not None and age > timeout:
            return f"no heartbeat for {age:.0f} s (more than {timeout:g} s, {LOCK_TIMEOUT_ENV})"
        return None

    def heartbeat(self) -> None:
        """Refresh the lock's heartbeat, after checking it is still ours: a writer that was
        presumed dead and replaced must stop rather than write beside the new owner."""
        if not self._locked:
            raise StoreError(f"run folder {self.folder} is not open (use RunStore as a context manager)")
        holder = self._holder()
        if holder.get("token") != self._lock["token"]:
            self._locked = False
            raise StoreError(
                f"the lock {self.lock_path} was taken over by process {holder.get('pid')} on {holder.get('host')} "
                f"or removed (this process was presumed dead); stopping so that two writers never share a run"
            )
        self._lock["heartbeat"] = now()
        tmp = self.lock_path.with_name(f"lock.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self._lock))
        os.replace(tmp, self.lock_path)

    def _holder(self) -> dict:
        try:
            return json.loads(self.lock_path.read_text())
        except (OSError, json.JSONDecodeError):
            return {}  # lock being written right now, or emptied: treat as held by unknown

    # ------------------------------------------------------------------ data

    def append_predictions(self, rows: list[dict]) -> int:
        """Append rows whose key is new (a key already stored is never written twice)."""
        fresh = [redact(row, self.secrets) for row in rows if row["key"] not in self.done]
        self.heartbeat()
        append_jsonl(self.predictions_path, fresh)
        self.done.update(row["key"] for row in fresh)
        return len(fresh)

    def append_steps(self, rows: list[dict]) -> int:
        self.heartbeat()
        return append_jsonl(self.steps_path, [redact(row, self.secrets) for row in rows])

    def read_manifest(self) -> dict:
        return read_manifest(self.folder) or {}

    @property
    def locked(self) -> bool:
        """Whether this process still holds the folder's lock."""
        return self._locked

    def redact(self, text: str) -> str:
        """``text`` with this store's secrets redacted (for messages that quote stored answers)."""
        return redact(text, self.secrets)

    def rows(self) -> list[dict]:
        """The rows stored so far (read back, so they are what is on disk)."""
        return read_jsonl(self.predictions_path)

    def replace(self) -> Path:
        """Move this (open, locked) folder aside to ``<root>/.replaced/<run_id>__<time>`` and
        start an empty one under a fresh lock: ``overwrite=True`` keeps the old rows on disk
        (nothing is deleted) but out of every reader's sight (readers look one level down)."""
        if not self._locked:
            raise StoreError(f"run folder {self.folder} is not open (use RunStore as a context manager)")
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        target = self.root / REPLACED_DIR / f"{self.run_id}__{stamp}"
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.folder, target)  # the lock travels with it: nobody can slip in meanwhile
        (target / "lock").unlink(missing_ok=True)
        self._locked = False
        self.open()
        return target


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
    follow. Raw, as stored: ``helpers.run.results.load_predictions`` checks them for analysis."""
    from helpers.run.session import COLUMNS  # the row schema lives with the writers that build rows

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


def __getattr__(name: str):
    """``COLUMNS`` is the row schema's (``helpers.run.session.PredictionRow``), read from there."""
    if name == "COLUMNS":
        from helpers.run.session import COLUMNS

        return COLUMNS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
