"""The resumable predictions store: one folder per run under ``predictions_dir()``.

``<root>/<run_id>/predictions.jsonl``  one row per strategy x order x round x sample
``<root>/<run_id>/steps.jsonl``        descriptions and reasoning (so S3/S4 reuse S2's texts)
``<root>/<run_id>/manifest.json``      parameters, versions, hashes, call counts (no secrets),
                                     written only by ``RunSession``

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

The record of a run is typed here too, so that one module owns a run folder. Three writers fill
the store -- the engine (model and CPU judges), the importer (``helpers.imports``) and the
tournament (its design folder) -- and all of them go through:

``PredictionRow`` / :func:`prediction_row`
    the one row schema (= ``COLUMNS`` of the store plus the bookkeeping fields); the only place a
    row dict is built, so a judged row and an imported one cannot differ by a forgotten key.
    Answers longer than ``RAW_MAX_BYTES`` are stored cut, with ``raw_truncated`` set.
``RunManifest``
    the versioned manifest (``schema_version``): identity, scope, status, provenance, errors.
``RunSession``
    opens a run folder (lock, identity check, ``overwrite`` = move the old folder aside, never
    delete), checkpoints it after every batch, marks it ``failed`` (``interrupted`` for Ctrl-C)
    and closes it. A full disk, a read-only folder or a refused permission ends in one
    :class:`StorageError` naming the folder and what to do; no temporary file is left behind.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import platform
import re
import socket
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from helpers import paths
from helpers.data import LABELS, ORDERS
from helpers.run.provenance import git_revision, package_versions
from helpers.secrets import redact

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


def read_predictions(root: str | Path | None = None) -> pd.DataFrame:
    """All runs under ``root`` (default ``predictions_dir()``) as one tidy table with at least
    the columns of ``COLUMNS``; extra columns (dataset, llm, media_name, seed, key, steps)
    follow. Raw, as stored: ``helpers.run.results.load_predictions`` checks them for analysis."""
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


# =========================================================================== the run record


MANIFEST_SCHEMA = 3
"""Version of the manifest layout: 2 adds ``schema_version`` and ``raw_truncated`` rows (1 had neither);
3 names the engine of each role ``engines`` (``{"judge": "vllm", "llm": "openai"}``), the run setting's
name, where 2 called it ``backends``."""
RAW_MAX_BYTES = 64 * 1024
"""Longest raw answer stored verbatim (UTF-8 bytes): a judge that rambles for megabytes would
otherwise fill the disk (a 5 MB answer, 8 rows: 40 MB); a verdict never needs more."""
STORAGE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT}


class StorageError(StoreError):
    """The run folder cannot be written (disk full, read-only, no permission); says what to do."""


# --------------------------------------------------------------------------- the row


@dataclasses.dataclass(frozen=True)
class PredictionRow:
    """One stored verdict: one judge's label for one pair in one order and round.

    The first fields are the analysis columns (``COLUMNS``); the rest say where it came from."""

    judge: str
    strategy: str
    input_type: str
    order: str
    round: int
    name: str
    gt: str | None
    pred: str
    parse_rule: str | None
    raw: str | None
    latency_s: float | None
    created_at: str
    run_id: str
    key: str
    dataset: str
    llm: str | None
    media_name: str
    seed: int
    steps: dict
    raw_truncated: bool = False


COLUMNS = [f.name for f in dataclasses.fields(PredictionRow)][:13]
"""The analysis columns every predictions table has (the store's contract with the metrics)."""
ROW_FIELDS = tuple(f.name for f in dataclasses.fields(PredictionRow))


def row_key(strategy: str, order: str, rnd: int, name: str) -> str:
    """Identity of a predictions row inside its run folder (judge/input/dataset are the run's)."""
    return f"{strategy}|{order}|r{rnd}|{name}"


def truncate_raw(raw: str | None, limit: int = RAW_MAX_BYTES) -> tuple[str | None, bool]:
    """``raw`` cut to at most ``limit`` UTF-8 bytes (never inside a character), and whether it was cut."""
    if raw is None:
        return None, False
    data = raw.encode("utf-8")
    if len(data) <= limit:
        return raw, False
    return data[:limit].decode("utf-8", errors="ignore"), True


def prediction_row(*, judge: str, strategy: str, input_type: str, order: str, round: int, name: str,
                   gt: str | None, pred: str, parse_rule: str | None, raw: str | None, run_id: str, dataset: str,
                   created_at: str, latency_s: float | None = None, llm: str | None = None,
                   media_name: str | None = None, seed: int | None = None, steps: dict | None = None) -> dict:
    """The one way to make a predictions row (as the dict the store appends). A label outside
    a1/a2/same or an unknown order is a bug of the writer and stops it before anything is stored."""
    if pred not in LABELS:
        raise ValueError(f"judge {judge!r} gave {pred!r} for {name!r} ({order}, round {round}); expected "
                         f"one of {', '.join(LABELS)}")
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
    raw, cut = truncate_raw(raw)
    row = PredictionRow(
        judge=judge, strategy=strategy, input_type=input_type, order=order, round=int(round), name=name, gt=gt,
        pred=pred, parse_rule=parse_rule, raw=raw, latency_s=latency_s, created_at=created_at, run_id=run_id,
        key=row_key(strategy, order, int(round), name), dataset=dataset, llm=llm,
        media_name=media_name if media_name is not None else name,
        seed=int(seed) if seed is not None else int(round), steps=dict(steps or {}), raw_truncated=cut)
    return dataclasses.asdict(row)


# --------------------------------------------------------------------------- the manifest


def provenance() -> dict[str, Any]:
    """Which code, packages and machine wrote a run (kept in every manifest)."""
    return {"git_revision": git_revision(), "packages": package_versions(), "platform": platform.platform(),
            "python_executable": sys.executable}


@dataclasses.dataclass
class RunManifest:
    """A run folder's ``manifest.json``, typed where the lifecycle reads it.

    ``details`` holds what the writer says about its run (judge, strategy, parameters, source,
    files...); on disk everything is one flat JSON object (readers look up ``identity``,
    ``status``, ``parameters``, ``source`` ... directly), tagged with ``schema_version``."""

    run_id: str
    status: str = "new"
    identity: dict | None = None
    identity_sha256: str | None = None
    scope: dict | None = None
    provenance: dict = dataclasses.field(default_factory=dict)
    error: dict | None = None
    sessions: list = dataclasses.field(default_factory=list)
    replaced: list = dataclasses.field(default_factory=list)
    created: str | None = None
    updated: str | None = None
    details: dict = dataclasses.field(default_factory=dict)
    schema_version: int = MANIFEST_SCHEMA

    TYPED = ("run_id", "status", "identity", "identity_sha256", "scope", "error", "sessions", "replaced",
             "created", "updated", "schema_version")

    @classmethod
    def from_json(cls, data: dict | None, run_id: str) -> RunManifest:
        data = dict(data or {})
        if data.get("schema_version", 1) < 3 and "backends" in data:  # read an older folder under today's name
            data["engines"] = data.pop("backends")
        typed = {k: data.pop(k) for k in cls.TYPED if k in data}
        typed["run_id"] = run_id
        prov = {k: data.pop(k) for k in ("git_revision", "packages", "platform", "python_executable") if k in data}
        return cls(**typed, provenance=prov, details=data)

    def to_json(self) -> dict:
        out = {**self.details, **self.provenance}
        for name in self.TYPED:
            value = getattr(self, name)
            if value is not None and value != [] or name in ("run_id", "status", "schema_version"):
                out[name] = value
        return out

    def calls_total(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for past in self.sessions:
            total.update(past.get("calls", {}))
        return dict(total)


# --------------------------------------------------------------------------- writing safely


def storage_message(folder: Path, exc: OSError, action: str) -> str:
    why = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exhausted",
           errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
           errno.EPERM: "permission denied"}.get(exc.errno, exc.strerror or str(exc))
    return (f"cannot {action} in {folder}: {why} ({exc.strerror or exc}). Free space there or make the folder "
            "writable, or choose another store (output_dir / --output-dir), then run the same command again: the "
            "rows already stored are kept and the run resumes where it stopped.")


def write_atomic(path: Path, data: bytes, durable: bool = False) -> None:
    """Write ``data`` to a temporary file then rename it over ``path``, so a kill never leaves half
    a file; on any error the temporary file is removed and a storage problem becomes a
    :class:`StorageError`. ``durable``: flush to disk before the rename (a file whose hash another
    file records, such as a tournament's design)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        if exc.errno in STORAGE_ERRNOS:
            raise StorageError(storage_message(path.parent, exc, f"write {path.name}")) from exc
        raise


def write_json_atomic(path: Path, data: dict, secrets: dict[str, str] | None = None) -> None:
    """``data`` as indented JSON, secrets redacted, written by :func:`write_atomic`."""
    text = json.dumps(redact(json.loads(json.dumps(data, default=str)), secrets or {}), indent=2, ensure_ascii=False)
    write_atomic(path, (text + "\n").encode("utf-8"))


# --------------------------------------------------------------------------- the lifecycle


Refusal = Callable[[Path, dict, dict, set], None]
"""``(folder, stored manifest, identity now, stored row keys)``: raise to refuse resuming."""


class RunSession:
    """The lifecycle of one run folder; use as a context manager.

    ``open`` locks the folder and checks the identity (``refuse``; with ``overwrite`` a refused
    folder is moved aside to ``.replaced/``); ``start`` records a new session (status
    ``running``); ``append``/``append_steps`` store rows; ``checkpoint`` keeps the call counts
    on disk after every batch (a kill -9 loses nothing of the record); ``close`` ends it
    ``complete`` or ``incomplete``. An exception inside the ``with`` marks it ``failed``."""

    def __init__(self, run_id: str, root: str | Path | None, *, identity: dict | None,
                 identity_sha256: str | None = None, scope: dict | None = None, secrets: dict | None = None,
                 overwrite: bool = False, refuse: Refusal | None = None):
        self.store = RunStore(run_id, root, secrets=secrets)
        self.identity, self.identity_sha256, self.scope = identity, identity_sha256, scope
        self.overwrite, self.refuse = overwrite, refuse
        self.manifest = RunManifest(run_id)
        self.moved: Path | None = None
        self.written = 0
        self.calls: Counter[str] = Counter()
        self.started = False

    # ------------------------------------------------------------------ context

    @property
    def folder(self) -> Path:
        return self.store.folder

    @property
    def done(self) -> set[str]:
        return self.store.done

    def __enter__(self) -> RunSession:
        return self if self.store.locked else self.open()

    def __exit__(self, kind, exc, tb) -> None:
        try:
            if exc is not None and self.started:
                self.fail(exc)
        finally:
            self.store.close()
        if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
            raise StorageError(storage_message(self.folder, exc, "store the run")) from exc

    def open(self) -> RunSession:
        """Lock the folder, read its manifest and check the identity (moving it aside on overwrite)."""
        try:
            self.store.open()
        except OSError as exc:
            if exc.errno in STORAGE_ERRNOS:
                raise StorageError(storage_message(self.store.folder, exc, "open the run folder")) from exc
            raise
        try:
            stored = self.store.read_manifest()
            if self.refuse is not None:
                try:
                    self.refuse(self.folder, stored, self.identity or {}, set(self.store.done))
                except StoreError:
                    if not self.overwrite:
                        raise
                    self.moved = self.store.replace()
                    stored = {"replaced": [*stored.get("replaced", []), {"folder": str(self.moved), "at": now()}]}
        except BaseException:
            self.store.close()
            raise
        self.manifest = RunManifest.from_json(stored, self.store.run_id)
        return self

    def start(self, details: dict, session: dict | None = None) -> None:
        """Record a new session: status ``running``, this run's identity, scope and provenance."""
        m = self.manifest
        m.details = {k: v for k, v in {**m.details, **details}.items() if k not in ("warnings",)}
        m.error = None  # a past session's error stays in that session's record
        m.identity, m.identity_sha256, m.scope = self.identity, self.identity_sha256, self.scope
        m.provenance, m.status, m.schema_version = provenance(), "running", MANIFEST_SCHEMA
        m.sessions = [*m.sessions, {"started": now(), "ended": None, "rows_written": 0, "calls": {},
                                    "scope": self.scope, **(session or {})}]
        m.created = m.created or now()
        self.started = True
        self.write()

    def write(self) -> None:
        write_json_atomic(self.store.manifest_path, self.manifest.to_json(), self.store.secrets)

    # ------------------------------------------------------------------ data

    def append(self, rows: Iterable[dict]) -> int:
        """Store rows whose key is new (``prediction_row`` dicts); returns how many were new."""
        new = self.store.append_predictions(list(rows))
        self.written += new
        return new

    def append_steps(self, records: list[dict]) -> int:
        return self.store.append_steps(records)

    def checkpoint(self, calls: Counter | dict | None = None, backend_info: dict | None = None) -> None:
        """Keep the session's call and row counts (and the backends' own descriptions) on disk
        after every batch, so a killed session still tells its cost on resume."""
        if calls is not None:
            self.calls = Counter(calls)
        m = self.manifest
        m.sessions[-1].update(calls=dict(self.calls), rows_written=self.written)
        if backend_info:
            m.sessions[-1]["backend_info"] = backend_info
            m.details["backend_info"] = {**m.details.get("backend_info", {}), **backend_info}
        m.details["calls_total"] = m.calls_total()
        self.write()

    # ------------------------------------------------------------------ endings

    def fail(self, exc: BaseException) -> None:
        """Mark the run ``failed`` (``interrupted`` for Ctrl-C) with the error's type and message."""
        if not self.store.locked:  # the lock was taken over: the folder's manifest belongs to the new owner
            return
        message = str(exc)
        if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
            message = storage_message(self.folder, exc, "store the run")
        error = {"type": type(exc).__name__, "message": self.store.redact(message)[:2000], "at": now()}
        m = self.manifest
        m.sessions[-1].update(ended=now(), rows_written=self.written, calls=dict(self.calls), error=error)
        m.status, m.error, m.updated = ("interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"), error, now()
        m.details.update(calls_total=m.calls_total(), rows=len(self.store.done))
        try:
            self.write()
        except OSError:
            pass  # disk full or read-only: the original error, which says so, matters more than its record

    def close(self, expected: frozenset[str] | None = None, **details: Any) -> str:
        """End the session: ``complete`` when every ``expected`` key is stored (all keys given
        when ``expected`` is None), else ``incomplete``; ``details`` join the manifest."""
        m = self.manifest
        m.sessions[-1].update(ended=now(), rows_written=self.written, calls=dict(self.calls),
                              repaired_bytes=self.store.repaired_bytes)
        missing = 0 if expected is None else len(expected - self.store.done)
        m.status = "complete" if not missing else "incomplete"
        m.updated = now()
        m.details.update(calls_total=m.calls_total(), rows=len(self.store.done), **details)
        self.write()
        return m.status


def read_run_manifest(folder: str | Path) -> RunManifest | None:
    """A folder's manifest, typed (None when there is none)."""
    data = read_manifest(folder)
    return None if data is None else RunManifest.from_json(data, Path(folder).name)
