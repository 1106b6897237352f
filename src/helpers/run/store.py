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
from helpers.data import LABELS, ORDERS, DataError
from helpers.run.provenance import git_revision, package_versions
from helpers.secrets import redact, redact_exception

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
                seed: int = 0, media: str = "real") -> str:
    """A readable, deterministic run id, so the same command resumes the same run."""
    parts = [judge, "cpu" if strategy == "-" else strategy, input_type, dataset]
    if llm:
        parts.append(f"llm={llm}")
    if seed:
        parts.append(f"seed={seed}")
    if media != "real":
        parts.append(f"media={media}")
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


def read_manifest(folder: str | Path) -> RunManifest | None:
    """A run folder's manifest, typed and checked (None when it has none), read without taking the
    folder's lock: the one way any module reads a run manifest (resume checks, scoring, imports,
    the report), so a schema migration or a malformed field is handled once, here."""
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StoreError(f"{path}: not readable JSON ({exc})") from exc
    return RunManifest.from_json(data, Path(folder).name, where=str(path))


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
    return [row for _, row in numbered_jsonl(path)]


def numbered_jsonl(path: Path) -> list[tuple[int, Any]]:
    """``(line number, parsed value)`` of each line of a JSONL file, ignoring a torn last line."""
    if not path.exists():
        return []
    rows = []
    lines = path.read_bytes().split(b"\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append((number, json.loads(line)))
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
        self.retried = 0

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> RunStore:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._acquire()
        self.repaired_bytes = repair_jsonl(self.predictions_path) + repair_jsonl(self.steps_path)
        self.done = {row["key"] for row in read_jsonl(self.predictions_path)}
        return self

    def set_aside_errors(self) -> int:
        """``retry_errors``: move the error rows (``status`` other than ok) out of predictions.jsonl into
        ``retried_errors.jsonl`` (kept, never deleted), so their pairs are judged again; returns how many."""
        rows = read_jsonl(self.predictions_path)
        errors = [r for r in rows if r.get("status", "ok") != "ok"]
        if errors:
            append_jsonl(self.folder / "retried_errors.jsonl", [{**r, "retried_at": now()} for r in errors])
            kept = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows if r.get("status", "ok") == "ok")
            write_atomic(self.predictions_path, kept.encode("utf-8"), durable=True)
            self.done = {row["key"] for row in read_jsonl(self.predictions_path)}
        self.retried = len(errors)
        return len(errors)

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

    def read_manifest(self) -> RunManifest | None:
        return read_manifest(self.folder)

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
    follow. Each row is checked by :func:`checked_rows` (a tampered row is a ``DataError``);
    ``helpers.run.results.load_predictions`` scores them against the data for analysis."""
    root = Path(root) if root is not None else paths.predictions_dir()
    rows: list[dict] = []
    for file in sorted(root.glob("*/predictions.jsonl")):
        rows += checked_rows(file.parent)
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
    pred: str | None
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
    status: str = "ok"
    error: str | None = None
    media: str = "real"  # what the judge was shown: its clip, none, or another pair's (helpers.run.engine)


COLUMNS = [f.name for f in dataclasses.fields(PredictionRow)][:13]
"""The analysis columns every predictions table has (the store's contract with the metrics)."""
MEDIA_ERROR = "media_error"
"""``status`` of a row whose media could not be decoded as the judge needs (``error`` says why): no verdict
(``pred`` None), excluded from every metric, counted as ``media_error_n``; a resume does not retry it unless
asked (``retry_errors``)."""
ROW_STATUSES = ("ok", MEDIA_ERROR)
ROW_FIELDS = tuple(f.name for f in dataclasses.fields(PredictionRow))


def row_key(strategy: str, order: str, rnd: int, name: str) -> str:
    """Identity of a predictions row inside its run folder (judge/input/dataset are the run's)."""
    return f"{strategy}|{order}|r{rnd}|{name}"


_ROW_TYPES: dict[str, tuple[type, ...]] = {
    "judge": (str,), "strategy": (str,), "input_type": (str,), "order": (str,), "round": (int,), "name": (str,),
    "pred": (str,), "key": (str,), "run_id": (str,), "dataset": (str,),
}
_KEY_FIELDS = ("strategy", "order", "round", "name")  # what row_key is made of, in its order


def row_problems(row: object, run: RunManifest | None = None) -> list[tuple[str | None, str]]:
    """Why one predictions row cannot be scored, as ``(field, problem)`` pairs (empty: it can).

    The one set of rules for a row, applied by the writer (:func:`prediction_row`) and by every
    reader (:func:`checked_rows`): the analysis fields present and typed, ``pred`` one of
    a1/a2/same, a known ``order``, ``key`` made of the row's own strategy, order, round and name
    and, given the run folder's ``run`` manifest, ``judge``, ``strategy`` and ``dataset`` as the
    manifest records them and ``round`` within the rounds its sessions asked for. A hand-edited
    field therefore never scores as another round, judge or strategy."""
    if not isinstance(row, dict):
        return [(None, f"the line holds {_kind(row)}, not a row object")]
    required = [*COLUMNS, "key"] if run is not None else COLUMNS  # a hand-written table may lack keys
    missing = [(f, f"field {f!r} is missing") for f in required if f not in row]
    if missing:
        return missing
    problems: list[tuple[str | None, str]] = []
    status = row.get("status", "ok")
    if status not in ROW_STATUSES:
        return [("status", f"status {status!r} is not one of {', '.join(map(str, ROW_STATUSES))}")]
    if status == MEDIA_ERROR and (row["pred"] is not None or not isinstance(row.get("error"), str) or not row["error"]):
        problems.append(("pred", f"a {MEDIA_ERROR} row holds no label (pred {row['pred']!r}) and says why (error)"))
    for field, types in _ROW_TYPES.items():
        value = row.get(field)
        if field == "pred" and status == MEDIA_ERROR:
            continue
        if field in row and (not isinstance(value, types) or isinstance(value, bool)) and not (
                value is None and field in ("dataset", "run_id")):
            problems.append((field, f"{field} is {_kind(value)} ({str(value)[:40]!r}), not {_kind(types[0]())}"))
    if problems:
        return problems
    if row["pred"] not in LABELS and status != MEDIA_ERROR:
        problems.append(("pred", f"pred {row['pred']!r} is not one of {', '.join(LABELS)}"))
    if row["order"] not in ORDERS:
        problems.append(("order", f"order {row['order']!r} is not one of {', '.join(ORDERS)}"))
    if row["round"] < 0:
        problems.append(("round", f"round {row['round']} is negative"))
    if "key" in row:
        problems += _key_problems(row)
    if run is not None:
        problems += _run_problems(row, run)
    return problems


def _key_problems(row: dict) -> list[tuple[str, str]]:
    parts = row["key"].split("|")
    if len(parts) != 4 or not parts[2].startswith("r"):
        return [("key", f"key {row['key']!r} is not strategy|order|r<round>|name")]
    stored = dict(zip(_KEY_FIELDS, [parts[0], parts[1], parts[2][1:], parts[3]], strict=True))
    return [(field, f"{field} {row[field]!r} differs from the row's key {row['key']!r} (which says {stored[field]!r})")
            for field in _KEY_FIELDS if str(row[field]) != stored[field]]


def _run_problems(row: dict, run: RunManifest) -> list[tuple[str, str]]:
    problems = []
    for field in ("judge", "strategy", "dataset"):
        recorded = getattr(run, field)
        if recorded is not None and row.get(field) != recorded:
            problems.append((field, f"{field} {row.get(field)!r} differs from the {recorded!r} its run folder's "
                                    "manifest records"))
    rounds = run.rounds_asked()
    if rounds is not None and row["round"] >= rounds:
        problems.append(("round", f"round {row['round']} is beyond the {rounds} round(s) the run was asked for "
                                  f"(0 to {rounds - 1})"))
    return problems


def checked_rows(folder: str | Path) -> list[dict]:
    """The rows of a run folder's ``predictions.jsonl``, each checked by :func:`row_problems`
    against the folder's manifest, and no key twice: the one reader the analyses use (01_infer's
    closing table and the report alike). A tampered row is a :class:`DataError` naming file,
    line and field, never scored."""
    folder = Path(folder)
    path = folder / "predictions.jsonl"
    run = read_manifest(folder)
    rows, problems, first = [], [], {}
    for number, row in numbered_jsonl(path):
        found = row_problems(row, run)
        where = f"{path}, line {number}" + (f" (key {row['key']!r})" if isinstance(row, dict) and "key" in row else "")
        problems += [f"{where}: {message}" for _, message in found]
        if found:
            continue
        key = row.get("key")
        if key is not None and key in first:
            problems.append(f"{path}, line {number} (key {key!r}): stored twice (first on line {first[key]}; "
                            "a duplicated line)")
            continue
        first.setdefault(key, number)
        rows.append(row)
    if problems:
        listing = "\n  ".join(problems[:20]) + (f"\n  … and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise DataError(f"{len(problems)} stored row problem(s): the rows were edited by hand or written by other "
                        "code; restore the run folder, or re-run it into a new one (overwrite=True moves it aside), "
                        f"never scored:\n  {listing}")
    return rows


def truncate_raw(raw: str | None, limit: int = RAW_MAX_BYTES) -> tuple[str | None, bool]:
    """``raw`` cut to at most ``limit`` UTF-8 bytes (never inside a character), and whether it was cut."""
    if raw is None:
        return None, False
    data = raw.encode("utf-8")
    if len(data) <= limit:
        return raw, False
    return data[:limit].decode("utf-8", errors="ignore"), True


def prediction_row(*, judge: str, strategy: str, input_type: str, order: str, round: int, name: str,
                   gt: str | None, pred: str | None, parse_rule: str | None, raw: str | None, run_id: str, dataset: str,
                   created_at: str, latency_s: float | None = None, llm: str | None = None,
                   media_name: str | None = None, seed: int | None = None, steps: dict | None = None,
                   status: str = "ok", error: str | None = None, media: str = "real") -> dict:
    """The one way to make a predictions row (as the dict the store appends). A row that breaks
    :func:`row_problems` (a label outside a1/a2/same, an unknown order) is a bug of the writer
    and stops it before anything is stored. A ``media_error`` row carries no label (``pred``
    None) and says why (``error``)."""
    raw, cut = truncate_raw(raw)
    row = PredictionRow(
        judge=judge, strategy=strategy, input_type=input_type, order=order, round=int(round), name=name, gt=gt,
        pred=pred, parse_rule=parse_rule, raw=raw, latency_s=latency_s, created_at=created_at, run_id=run_id,
        key=row_key(strategy, order, int(round), name), dataset=dataset, llm=llm,
        media_name=media_name if media_name is not None else name,
        seed=int(seed) if seed is not None else int(round), steps=dict(steps or {}), raw_truncated=cut,
        status=status, error=error, media=media)
    out = dataclasses.asdict(row)
    problems = row_problems(out)  # the readers' rules, so nothing is written that a reader would refuse
    if problems:
        raise ValueError(f"judge {judge!r}, row {out['key']!r} of run {run_id!r}: "
                         + "; ".join(message for _, message in problems))
    return out


# --------------------------------------------------------------------------- the manifest


def provenance() -> dict[str, Any]:
    """Which code, packages and machine wrote a run (kept in every manifest)."""
    return {"git_revision": git_revision(), "packages": package_versions(), "platform": platform.platform(),
            "python_executable": sys.executable}


_TYPED_FIELDS: dict[str, tuple[type, ...]] = {
    "status": (str,), "identity": (dict,), "identity_sha256": (str,), "scope": (dict,), "error": (dict,),
    "sessions": (list,), "replaced": (list,), "created": (str,), "updated": (str,),
}
_DETAIL_FIELDS: dict[str, tuple[type, ...]] = {
    "judge": (str,), "strategy": (str,), "input_type": (str,), "dataset": (str,), "source": (str,),
    "source_label": (str,), "parameters": (dict,), "rounds": (int,), "calls_total": (dict,), "parse": (dict,),
    "data_sha256": (dict,), "engines": (dict,), "git_revision": (str,), "pair_file": (str,),
}
"""The fields other modules read, with the JSON types they may hold (null is always allowed)."""


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "text", bool: "true/false", int: "a whole number",
            float: "a number"}.get(type(value), type(value).__name__)


def _check_field(where: str, name: str, value: object, types: tuple[type, ...]) -> None:
    if value is None or (isinstance(value, types) and not (isinstance(value, bool) and bool not in types)):
        return
    expected = " or ".join(_kind(t()) for t in types)
    raise StoreError(f"{where}: field {name!r} must be {expected}, not {_kind(value)} ({str(value)[:60]!r}); "
                     "the manifest was edited or damaged: restore it, or move the run folder aside")


def _detail(name: str, empty: Callable[[], Any] | None = None, doc: str | None = None) -> property:
    """A read-only view of the manifest detail ``name`` (``empty()`` where it is absent)."""
    def read(self: RunManifest) -> Any:
        value = self.details.get(name)
        return empty() if value is None and empty is not None else value

    return property(read, doc=doc or f"The manifest's {name!r}, as checked by ``RunManifest.from_json``.")


@dataclasses.dataclass
class RunManifest:
    """A run folder's ``manifest.json``, typed: the one record every reader goes through.

    ``details`` holds what the writer says about its run (judge, strategy, parameters, source,
    files...); on disk everything is one flat JSON object, tagged with ``schema_version``.
    :meth:`from_json` migrates older layouts and refuses a malformed field or a schema newer than
    this code with a :class:`StoreError`; the properties below are the details other modules read."""

    run_id: str
    status: str | None = "new"
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
    def from_json(cls, data: object, run_id: str, where: str | None = None) -> RunManifest:
        """The typed manifest of ``data`` (parsed JSON) for the folder ``run_id``; ``where`` names
        the file in errors. A missing ``status`` stays None (shown as absent, never guessed)."""
        where = where or f"manifest of run {run_id}"
        if not isinstance(data, dict):
            raise StoreError(f"{where}: a run manifest is a JSON object, not {_kind(data)}; the file was edited or "
                             "damaged: restore it, or move the run folder aside")
        data = dict(data)
        version = data.pop("schema_version", 1)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise StoreError(f"{where}: schema_version must be a whole number from 1 to {MANIFEST_SCHEMA}, not "
                             f"{version!r}; the manifest was edited or damaged")
        if version > MANIFEST_SCHEMA:
            raise StoreError(f"{where}: schema_version {version} is newer than this code reads ({MANIFEST_SCHEMA}); "
                             "the run was written by a newer version of the project: update this checkout")
        if version < 3 and "backends" in data:  # read an older folder under today's name
            data["engines"] = data.pop("backends")
        for name, types in _TYPED_FIELDS.items():
            _check_field(where, name, data.get(name), types)
        for name, types in _DETAIL_FIELDS.items():
            _check_field(where, name, data.get(name), types)
        for name in ("sessions", "replaced"):
            for index, item in enumerate(data.get(name) or []):
                if not isinstance(item, dict):
                    raise StoreError(f"{where}: {name}[{index}] must be an object, not {_kind(item)}")
        data.pop("run_id", None)  # the folder's name is the run id
        typed = {k: data.pop(k) for k in cls.TYPED if k in data}
        typed.setdefault("status", None)
        typed = {k: v for k, v in typed.items() if v is not None or k == "status"}
        prov = {k: data.pop(k) for k in ("git_revision", "packages", "platform", "python_executable") if k in data}
        return cls(run_id=run_id, **typed, provenance=prov, details=data, schema_version=version)

    # ------------------------------------------------------------------ the details other modules read
    # (each checked by from_json against _DETAIL_FIELDS; None when the writer did not record it)

    judge = _detail("judge")
    strategy = _detail("strategy")
    input_type = _detail("input_type")
    dataset = _detail("dataset")
    source = _detail("source", doc="Where an imported run came from (``helpers.imports``); None for a run judged here.")
    source_label = _detail("source_label")
    pair_file = _detail("pair_file", doc="The pair file the run judged (``-p dataset PATH.csv``, ``track3_*``); "
                                         "None for a benchmark's files.")
    rounds = _detail("rounds")
    recorded_calls = _detail("calls_total", doc="The model calls the last checkpoint recorded; None when absent.")
    parameters = _detail("parameters", empty=dict)
    parse = _detail("parse", empty=dict, doc="The closing parse report (``unparsed_pct`` ...); empty before a run closes.")

    @property
    def data_sha256(self) -> dict | None:
        """The data hashes the run was made on: its identity's, else the older top-level key."""
        return (self.identity or {}).get("data_sha256") or self.details.get("data_sha256")

    @property
    def git_revision(self) -> str | None:
        return self.provenance.get("git_revision")

    def rounds_asked(self) -> int | None:
        """The most rounds any session of the run asked for (its ``scope``), None when no scope
        records them (an imported run)."""
        scopes = [self.scope, *(s.get("scope") for s in self.sessions)]
        counts = [s["rounds"] for s in scopes if isinstance(s, dict) and isinstance(s.get("rounds"), int)]
        return max(counts) if counts else None

    def to_json(self) -> dict:
        out = {**self.details, **self.provenance}
        for name in self.TYPED:
            value = getattr(self, name)
            if value is not None and value != [] or name in ("run_id", "status", "schema_version"):
                out[name] = value
        return out

    def calls_total(self) -> dict[str, int]:
        """Model calls of every session, counting those in flight when a session stopped (sent;
        whether answered is unknown, but the server counted them)."""
        total: Counter[str] = Counter()
        for past in self.sessions:
            total.update(past.get("calls", {}))
            total.update(past.get("in_flight") or {})
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


Refusal = Callable[[Path, "RunManifest | None", dict, set], None]
"""``(folder, stored manifest or None, identity now, stored row keys)``: raise to refuse resuming."""


class RunSession:
    """The lifecycle of one run folder; use as a context manager.

    ``open`` locks the folder and checks the identity (``refuse``; with ``overwrite`` a refused
    folder is moved aside to ``.replaced/``); ``start`` records a new session (status
    ``running``); ``append``/``append_steps`` store rows; ``checkpoint`` keeps the call counts
    on disk after every batch (a kill -9 loses nothing of the record); ``close`` ends it
    ``complete`` or ``incomplete``. An exception inside the ``with`` marks it ``failed``."""

    def __init__(self, run_id: str, root: str | Path | None, *, identity: dict | None,
                 identity_sha256: str | None = None, scope: dict | None = None, secrets: dict | None = None,
                 overwrite: bool = False, refuse: Refusal | None = None, retry_errors: bool = False):
        self.store = RunStore(run_id, root, secrets=secrets)
        self.retry_errors = retry_errors
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
        if exc is not None:  # the traceback a notebook shows must not quote a key either
            redact_exception(exc, self.store.secrets)
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
        stored = None
        try:
            try:  # a malformed manifest is refused like another identity (moved aside under overwrite)
                stored = self.store.read_manifest()
                if self.refuse is not None:
                    self.refuse(self.folder, stored, self.identity or {}, set(self.store.done))
            except StoreError:
                if not self.overwrite:
                    raise
                self.moved = self.store.replace()
                before = stored.replaced if stored is not None else []
                stored = RunManifest(self.store.run_id, replaced=[*before, {"folder": str(self.moved), "at": now()}])
            if self.retry_errors:
                self.store.set_aside_errors()
        except BaseException:
            self.store.close()
            raise
        self.manifest = stored if stored is not None else RunManifest(self.store.run_id)
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

    def sending(self, step: str, n: int) -> None:
        """Record ``n`` requests of ``step`` as in flight before they go out: a session killed
        before their answers are stored still counts them (``calls_total``), as the server did."""
        self.manifest.sessions[-1]["in_flight"] = {step: n}
        self.manifest.details["calls_total"] = self.manifest.calls_total()
        self.write()

    def checkpoint(self, calls: Counter | dict | None = None, backend_info: dict | None = None,
                   backoffs: list[dict] | None = None, media_errors: dict[str, str] | None = None,
                   answered: bool = True) -> None:
        """Keep the session's call and row counts (and the backends' own descriptions) on disk
        after every batch, so a killed session still tells its cost on resume; ``answered``: the
        batch that was in flight came back and is now counted among the calls (False when it
        failed: it stays in flight); ``backoffs``: each out-of-memory halving of this session's
        batches, ``media_errors``: the files found undecodable."""
        if calls is not None:
            self.calls = Counter(calls)
        m = self.manifest
        if answered:
            m.sessions[-1].pop("in_flight", None)
        m.sessions[-1].update(calls=dict(self.calls), rows_written=self.written)
        if backoffs:
            m.sessions[-1]["oom_backoffs"] = list(backoffs)
        if media_errors:
            m.sessions[-1]["media_errors"] = dict(media_errors)
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

