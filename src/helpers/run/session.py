"""One typed record of a run: the row every writer stores, the manifest and its lifecycle.

Three writers fill the predictions store -- the engine (model and CPU judges), the importer
(``helpers.imports``) and the tournament (its design folder) -- and all of them go through here:

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
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from helpers.data import LABELS, ORDERS
from helpers.run.provenance import git_revision, package_versions
from helpers.run.store import (
    MANIFEST_NAME,
    RunStore,
    StoreError,
    now,
    read_manifest,
    redact,
)

MANIFEST_SCHEMA = 2
"""Version of the manifest layout: 2 adds ``schema_version`` and ``raw_truncated`` rows (1 had neither)."""
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

    @staticmethod
    def record(folder: str | Path, manifest: dict) -> Path:
        """A one-shot manifest for a folder that is not a run (a tournament's design): written
        atomically, with the same clear storage errors."""
        folder = Path(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if exc.errno in STORAGE_ERRNOS:
                raise StorageError(storage_message(folder, exc, "create the folder")) from exc
            raise
        path = folder / MANIFEST_NAME
        write_json_atomic(path, manifest)  # its own schema (the design's), written as given
        return path


def read_run_manifest(folder: str | Path) -> RunManifest | None:
    """A folder's manifest, typed (None when there is none)."""
    data = read_manifest(folder)
    return None if data is None else RunManifest.from_json(data, Path(folder).name)


__all__ = ["PredictionRow", "prediction_row", "COLUMNS", "ROW_FIELDS", "RAW_MAX_BYTES", "MANIFEST_SCHEMA",
           "RunManifest", "RunSession", "StorageError", "row_key", "truncate_raw", "write_atomic", "write_json_atomic",
           "read_run_manifest"]
