"""EmoPrefer annotation data: finding, downloading, validating and loading preference pairs.

Every rule that rejects data names the file, the 1-based CSV line, the column and the value,
because the people who hit these errors are holding a CSV in an editor. Sample names become
media paths, so they are checked here once and trusted everywhere else.

Files are UTF-8 (a byte-order mark is accepted); a field holds at most ``MAX_FIELD_CHARS``
(2**20 = 1,048,576) characters; a file with a header but no pairs is an error, not an empty study.
``python -m helpers.data check`` and :func:`load_pairs` run the same rules and report the same
message (the loader raises it as :class:`DataError`, the command prints it and exits 1).

Command line: ``python -m helpers.data check [DIR] [--dataset emoprefer]``.
"""

from __future__ import annotations

import argparse
import codecs
import csv
import os
import re
import shutil
import sys
import tempfile
import threading
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

import pandas as pd
import yaml

from helpers import paths
from helpers.digest import (  # sha256_file: the one file hash, used here and by importers
    sha256_file,
    sha256_hex,
)

LABELS = ("a1", "a2", "same")
FALLBACK_RULE = "default_same"  # the parse_rule of an answer that names no label (scored as same, as the paper does)
UNKNOWN_PARSE_RULES = ("official-release",)  # rows imported as labels only: whether an answer was parsed is unknown
ORDERS = ("normal", "reverse")
DATA_ENV = "EMOPREFER_DATA"
BASE_URL_ENV = "EMOPREFER_BASE_URL"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+$")
NAME_RULE = "name must match ^[A-Za-z0-9_.-]+$, without '..' and not '.'"
INPUT_TYPES = ("audio", "video", "audiovideo", "text")


def fallback_share(rules) -> float:
    """Share (0..1) of answers that matched no rule and became ``same`` by default: the paper
    scores them as ``same``, so the metrics count them to say when a number means nothing."""
    rules = list(rules)
    if any(r in UNKNOWN_PARSE_RULES for r in rules):
        return float("nan")  # the answers are not on record, so neither is which of them fell back
    return sum(r == FALLBACK_RULE for r in rules) / len(rules) if rules else float("nan")


class DataError(Exception):
    """Data the user supplied (or failed to supply) cannot be used; the message says why."""


@dataclass(frozen=True)
class Problem:
    """One violated rule, located precisely enough to fix by hand."""

    file: str
    line: int | None
    column: str | None
    value: str | None
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f", line {self.line}"
        if self.column is not None:
            where += f", column '{self.column}'"
        value = "" if self.value is None else f" (value {_short(self.value)!r})"
        return f"{where}: {self.message}{value}"


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset's files and pinned hashes, as listed in ``params/datasets.yaml``."""

    key: str
    description: str
    base_url: str | None
    files: dict[str, str]
    sha256: dict[str, str]
    data_env: str | None = None
    """The variable naming the folder of a user-supplied dataset (no cache, never downloaded)."""
    pair_file: bool = False
    """The dataset is one pair file (``files['normal']``, read by :func:`read_pair_file`): labels
    optional, reverse order by swapping, media in the same folder's ``video/`` and ``audio/``."""
    folder: str | None = None
    """For a dataset generated here (the probes): its folder under ``data/``; it is never
    downloaded and ``$EMOPREFER_DATA`` (the downloaded data) does not apply to it."""
    train_on: str | None = None
    """For pairs whose labels are a construction (the probes): the dataset whose human labels a
    judge that learns from labels fits on (``PairJudge.predict_trained``)."""


def _short(value: str, width: int = 60) -> str:
    return value if len(value) <= width else value[: width - 3] + "..."


@cache
def dataset_specs() -> dict[str, DatasetSpec]:
    path = paths.params_dir() / "datasets.yaml"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(f"{path}: cannot read the dataset list ({exc}); is EMOPREFER_ROOT the project folder?") from None
    return {
        key: DatasetSpec(
            key=key,
            description=entry.get("description", key),
            base_url=entry.get("base_url"),
            files=dict(entry["files"]),
            sha256=dict(entry.get("sha256") or {}),
            data_env=entry.get("data_env"),
            pair_file=bool(entry.get("pair_file", False)),
            folder=entry.get("folder"),
            train_on=entry.get("train_on"),
        )
        for key, entry in raw.items()
    }


def dataset_spec(dataset: str) -> DatasetSpec:
    specs = dataset_specs()
    if dataset not in specs:
        raise DataError(f"unknown dataset {dataset!r}; known: {', '.join(sorted(specs))}")
    return specs[dataset]


def swap_label(label: str) -> str:
    """The same verdict seen from the swapped pair: a1<->a2, same stays."""
    return {"a1": "a2", "a2": "a1"}.get(label, label)


def swap_pairs(pairs: pd.DataFrame) -> pd.DataFrame:
    """Pairs with a1/a2 (and model1/model2) swapped and labels mapped: the reversed order."""
    out = pairs.copy()
    out["a1"], out["a2"] = pairs["a2"].to_numpy(), pairs["a1"].to_numpy()
    if {"model1", "model2"} <= set(pairs.columns):
        out["model1"], out["model2"] = pairs["model2"].to_numpy(), pairs["model1"].to_numpy()
    if "preference" in pairs.columns:
        out["preference"] = pairs["preference"].map(swap_label)
    return out


# --------------------------------------------------------------------------- resolution


def _has_files(folder: Path, spec: DatasetSpec) -> bool:
    return (folder / spec.files["normal"]).is_file()


def cache_dir(dataset: str) -> Path:
    return paths.data_dir() / "raw" / dataset


def resolve_data_dir(dataset: str = "emoprefer", data_dir: str | Path | None = None) -> Path:
    """The folder holding ``dataset``'s CSVs, in this order: the ``data_dir`` argument, the
    ``EMOPREFER_DATA`` variable, the project cache ``data/raw/<dataset>/``, then a download from
    the official address into that cache. A generated dataset (``folder`` in its spec, the probes)
    lives in ``data/<folder>/`` and is generated there when its files are missing."""
    return local_data_dir(dataset, data_dir) or download(dataset, cache_dir(dataset))


def local_data_dir(dataset: str = "emoprefer", data_dir: str | Path | None = None) -> Path | None:
    """The folder :func:`resolve_data_dir` reads without downloading (the one lookup of a data
    folder), or None when only a download would find the files; a named folder without them is
    a :class:`DataError`."""
    spec = dataset_spec(dataset)
    if spec.data_env:
        return user_data_dir(spec, data_dir)
    if spec.folder:
        return generated_dir(spec)
    explicit = [(data_dir, "the data_dir argument"), (os.environ.get(DATA_ENV), f"${DATA_ENV}")]
    for folder, origin in explicit:
        if folder:
            folder = Path(folder).expanduser()
            if not _has_files(folder, spec):
                raise DataError(
                    f"{origin} points to {folder}, which has no {spec.files['normal']} "
                    f"(dataset {dataset!r}: {spec.description})"
                )
            return folder
    cached = cache_dir(dataset)
    return cached if _has_files(cached, spec) else None


def user_data_dir(spec: DatasetSpec, data_dir: str | Path | None = None) -> Path:
    """The folder of a dataset only its user can supply (MER2026's, under its agreement): the
    ``data_dir`` argument or ``$<data_env>``; a missing folder or file is an error that says
    where to point, never a download."""
    folder = data_dir or os.environ.get(spec.data_env or "")
    if not folder:
        raise DataError(f"dataset {spec.key!r} ({spec.description}) is not downloaded by this project: set "
                        f"{spec.data_env} to the folder that holds {spec.files['normal']} (e.g. your "
                        "mer2026-dataset/, with video/ and audio/), or pass data_dir")
    folder = Path(folder).expanduser()
    origin = "data_dir" if data_dir else f"${spec.data_env}"
    if not folder.is_dir():
        raise DataError(f"{origin} points to {folder}, which is not a folder (dataset {spec.key!r})")
    if not _has_files(folder, spec):
        raise DataError(f"{origin} points to {folder}, which has no {spec.files['normal']} (dataset {spec.key!r}: "
                        f"{spec.description})")
    return folder


def generated_dir(spec: DatasetSpec) -> Path:
    """The folder of a dataset generated from another one (``python -m helpers.stats.probes``
    writes it; it is run here when the files are missing, from the base data as they are now)."""
    folder = paths.data_dir() / spec.folder
    if not _has_files(folder, spec):
        # generated from the data: imported only when needed (probes reads this module)
        from helpers.stats.probes import write_probe_files

        write_probe_files(folder)
    if not _has_files(folder, spec):
        raise DataError(f"dataset {spec.key!r} ({spec.description}): {folder / spec.files['normal']} was not "
                        "generated; run python -m helpers.stats.probes")
    return folder


def download(dataset: str, target: Path) -> Path:
    """Fetch the dataset's CSVs from the official address (or ``$EMOPREFER_BASE_URL``)."""
    spec = dataset_spec(dataset)
    base = os.environ.get(BASE_URL_ENV, spec.base_url)
    if not base.endswith("/"):
        base += "/"
    target.mkdir(parents=True, exist_ok=True)
    for role, filename in spec.files.items():
        url = base + filename
        try:
            _fetch(url, target / filename)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            if role == "normal":
                if not any(target.iterdir()):
                    target.rmdir()  # leave no empty cache folder behind
                raise DataError(
                    f"could not find dataset {dataset!r} locally and could not download {url} ({exc}). "
                    f"Offline? Point {DATA_ENV} at a folder holding {spec.files['normal']}, e.g. "
                    f"{DATA_ENV}=../shared/data/emoprefer"
                ) from exc
            print(f"note: optional file {filename} not downloaded ({exc})", file=sys.stderr)
    return target


def _fetch(url: str, dest: Path) -> None:
    """Download to a temporary file then rename, so a killed download leaves no half file."""
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - official data address
        with tempfile.NamedTemporaryFile(dir=dest.parent, delete=False, suffix=".part") as tmp:
            shutil.copyfileobj(response, tmp)
    os.replace(tmp.name, dest)


# --------------------------------------------------------------------------- reading and rules

MAX_FIELD_CHARS = 1 << 20
"""Longest accepted field, in characters (1 MiB). EmoPrefer v1's longest description has 1,125
characters; a field a thousand times that is no description but a broken file (an unclosed quote
swallows the rest of it) or an accident, and every judge would have to read it. Python's csv module
stops at 131,072 characters with a bare ``_csv.Error``; this module lifts that limit while it
parses and applies its own cap with a located message instead."""

_PARSER_LIMIT = 2**31 - 1  # csv's own limit while we parse: effectively none, the cap above rules
_LIMIT_LOCK = threading.Lock()


@contextmanager
def _csv_field_limit(limit: int) -> Iterator[None]:
    """Raise csv's process-wide field limit for one parse, then put the caller's value back."""
    with _LIMIT_LOCK:
        previous = csv.field_size_limit(limit)
        try:
            yield
        finally:
            csv.field_size_limit(previous)


class _Unreadable(Exception):
    """Internal: a problem that ends the reading of one file (bytes or syntax the parser cannot pass)."""

    def __init__(self, problem: Problem):
        super().__init__(str(problem))
        self.problem = problem


def _field_index(lines: list[str]) -> int | None:
    """0-based index of the field in progress at the end of ``lines`` (a record's text so far)."""
    try:
        rows = list(csv.reader(lines))
    except csv.Error:
        return None
    return len(rows[-1]) - 1 if rows else 0


def _column_name(header: list[str] | None, index: int | None) -> str | None:
    if header is None or index is None:
        return None
    return header[index] if index < len(header) else f"#{index + 1} (beyond the header)"


class _Lines:
    """The file's physical lines decoded one at a time, so a bad byte is located by line.

    UTF-8 never uses the bytes 0x0A or 0x0D inside a multi-byte character, so decoding line by
    line is exact. Lines end at ``\n``, ``\r\n`` or a lone ``\r`` (old Excel for Mac), as with
    ``open(newline="")``. A UTF-8 byte-order mark (Excel's "CSV UTF-8") is dropped from line 1.
    ``pending`` holds the lines of the record the csv reader is assembling, to name its column.
    """

    def __init__(self, handle, file: str):
        self.handle, self.file = handle, file
        self.pending: list[str] = []
        self.header: list[str] | None = None

    def __iter__(self) -> Iterator[str]:
        pieces = (piece for chunk in self.handle for piece in chunk.splitlines(keepends=True))
        for number, raw in enumerate(pieces, 1):
            if number == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _Unreadable(self._not_utf8(number, raw, exc)) from None
            self.pending.append(text)
            yield text

    def _not_utf8(self, number: int, raw: bytes, exc: UnicodeDecodeError) -> Problem:
        prefix = raw[: exc.start].decode("utf-8")
        column = _column_name(self.header, _field_index([*self.pending, prefix])) if self.header else None
        bad = raw[exc.start : exc.start + 1].hex().upper()
        return Problem(
            self.file, number, column, None,
            f"is not UTF-8 text: byte 0x{bad} at character {len(prefix) + 1} of the line "
            "(a Latin-1 or Windows-1252 file? save it again as UTF-8)",
        )


def read_csv(path: Path, required: Iterable[str]) -> tuple[pd.DataFrame, list[Problem]]:
    """Read a pairs CSV as strings, with each record's 1-based starting line in ``csv_line``.

    Never raises for bad content: undecodable bytes, CSV syntax errors, fields over
    :data:`MAX_FIELD_CHARS`, a duplicate or missing header column and a file without pairs all
    come back as located :class:`Problem` s (reading stops at the first two kinds)."""
    try:
        with open(path, "rb") as handle, _csv_field_limit(_PARSER_LIMIT):
            return _parse(_Lines(handle, str(path)), required)
    except _Unreadable as stop:
        return pd.DataFrame(), [stop.problem]
    except OSError as exc:
        return pd.DataFrame(), [Problem(str(path), None, None, None, f"cannot be read ({exc.strerror or exc})")]


PARQUET_SUFFIXES = (".parquet", ".pq")


def scan_table(path: str | Path, required: Iterable[str] = ()) -> tuple[pd.DataFrame, list[Problem]]:
    """Read a user's table, CSV or Parquet by its suffix, and collect its problems instead of raising.

    A CSV goes through :func:`read_csv` (UTF-8, field size, syntax, duplicate or missing header
    columns, no rows; strings, each record's line in ``csv_line``). A Parquet file gets the rules
    that apply to it (readable as Parquet, each column once, required columns, at least one row,
    no text over :data:`MAX_FIELD_CHARS`); its values keep their Parquet types and rows are cited
    by number (1-based), as there are no lines."""
    path = Path(path)
    required = tuple(required)
    if not path.is_file():
        reason = "is a folder, not a table" if path.is_dir() else "file not found"
        return pd.DataFrame(), [Problem(str(path), None, None, None, reason)]
    if path.suffix.lower() not in PARQUET_SUFFIXES:
        return read_csv(path, required)
    return _scan_parquet(path, required)


def _scan_parquet(path: Path, required: tuple[str, ...]) -> tuple[pd.DataFrame, list[Problem]]:
    file = str(path)
    try:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ... for a non-Parquet file
        return pd.DataFrame(), [Problem(file, None, None, None,
                                        f"is not a readable Parquet file ({type(exc).__name__}: {str(exc)[:200]}); "
                                        "save the table as Parquet, or as CSV with a .csv name")]
    header_problems = _header_problems(file, None, list(table.column_names), required)
    if not header_problems and table.num_rows == 0:
        header_problems.append(Problem(file, None, None, None, "has columns but no rows"))
    if header_problems:
        return pd.DataFrame(), header_problems
    frame = table.to_pandas().astype(object).reset_index(drop=True)
    problems = []
    for column in frame.columns:
        for index, value in enumerate(frame[column]):
            if isinstance(value, str) and len(value) > MAX_FIELD_CHARS:
                problems.append(Problem(file, None, column, None,
                                        f"row {index + 1}: text has {len(value):,} characters, more than the "
                                        f"{MAX_FIELD_CHARS:,} accepted"))
    return frame, problems


def read_table(path: str | Path, required_columns: Iterable[str] = (), what: str = "table") -> pd.DataFrame:
    """A user's table (CSV or Parquet) that obeys :func:`scan_table`'s rules, or a
    :class:`DataError` listing every problem with file, line and column. ``what`` names the
    table in the message (``"human labels"``, ``"pair file"``)."""
    frame, problems = scan_table(path, required_columns)
    if problems:
        listing = "\n  ".join(str(p) for p in problems[:50])
        more = "" if len(problems) <= 50 else f"\n  … and {len(problems) - 50} more"
        raise DataError(f"{len(problems)} problem(s) in {what} {path}:\n  {listing}{more}")
    return frame


def _parse(lines: _Lines, required: Iterable[str]) -> tuple[pd.DataFrame, list[Problem]]:
    file, problems = lines.file, []
    reader = csv.reader(lines, strict=True)
    rows, starts, start = [], [], 1
    try:
        for record in reader:
            lines.pending.clear()
            if record and lines.header is None:
                lines.header, header_line = record, start
            elif record:
                problem = _record_problem(file, start, record, lines.header)
                if problem is None:
                    rows.append(record)
                    starts.append(start)
                else:
                    problems.append(problem)
            start = reader.line_num + 1
    except csv.Error as exc:
        raise _Unreadable(Problem(file, start, None, None, f"is not valid CSV from this line on ({exc})")) from None
    if lines.header is None:
        return pd.DataFrame(), [Problem(file, 1, None, None, "file is empty")]
    header_problems = _header_problems(file, header_line, lines.header, required)
    if not header_problems and not rows and not problems:
        header_problems.append(Problem(file, header_line, None, None, "has a header but no data rows"))
    if header_problems:
        return pd.DataFrame(), header_problems + problems
    frame = pd.DataFrame(rows, columns=lines.header)
    frame["csv_line"] = starts
    return frame, problems


def _record_problem(file: str, line: int, record: list[str], header: list[str]) -> Problem | None:
    """Why one record cannot be used (field count, an over-long field), or None."""
    if len(record) != len(header):
        return Problem(file, line, None, None, f"has {len(record)} fields, header has {len(header)}")
    for column, value in zip(header, record, strict=True):
        if len(value) > MAX_FIELD_CHARS:
            return Problem(
                file, line, column, None,
                f"field has {len(value):,} characters, more than the {MAX_FIELD_CHARS:,} accepted "
                "(an unclosed quote makes the rest of the file one field)",
            )
    return None


def _header_problems(file: str, line: int | None, header: list[str], required: Iterable[str]) -> list[Problem]:
    problems = []
    first: dict[str, int] = {}
    for index, column in enumerate(header, 1):
        if column in first:
            problems.append(Problem(file, line, column, None,
                                    f"column appears twice in the header (columns {first[column]} and {index})"))
        first.setdefault(column, index)
    missing = [col for col in required if col not in header]
    if missing:
        problems.append(Problem(file, line, None, None, f"missing required column(s) {', '.join(missing)}"))
    return problems


def check_pairs(frame: pd.DataFrame, file: str) -> list[Problem]:
    """Rules every pairs table obeys: labels, safe unique names, non-empty descriptions."""
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for row in frame.itertuples(index=False):
        line = row.csv_line
        name = row.name
        if not safe_name(name):
            problems.append(Problem(file, line, "name", name, f"{NAME_RULE} (it becomes a media path)"))
        elif name in seen:
            problems.append(Problem(file, line, "name", name, f"duplicate name (first on line {seen[name]})"))
        else:
            seen[name] = line
        if row.preference not in LABELS:
            problems.append(Problem(file, line, "preference", row.preference, "preference must be one of a1, a2, same"))
        for column in ("a1", "a2"):
            if not getattr(row, column).strip():
                problems.append(Problem(file, line, column, getattr(row, column), "description is empty"))
    return problems


def check_reverse(normal: pd.DataFrame, reverse: pd.DataFrame, file: str) -> list[Problem]:
    """The reverse file must be the normal file with a1/a2 swapped and labels mapped."""
    problems: list[Problem] = []
    by_name = normal.set_index("name")
    extra = sorted(set(reverse["name"]) - set(by_name.index))
    for row in reverse[reverse["name"].isin(extra)].itertuples(index=False):
        problems.append(Problem(file, row.csv_line, "name", row.name, "name not in the normal file"))
    for name in sorted(set(by_name.index) - set(reverse["name"])):
        problems.append(Problem(file, None, "name", name, "pair of the normal file missing from the reverse file"))
    for row in reverse[~reverse["name"].isin(extra)].itertuples(index=False):
        ref = by_name.loc[row.name]
        if isinstance(ref, pd.DataFrame):  # duplicate names are reported by check_pairs
            continue
        if row.a1 != ref["a2"]:
            problems.append(Problem(file, row.csv_line, "a1", row.a1, "reverse a1 is not the normal file's a2"))
        if row.a2 != ref["a1"]:
            problems.append(Problem(file, row.csv_line, "a2", row.a2, "reverse a2 is not the normal file's a1"))
        if row.preference != swap_label(ref["preference"]):
            problems.append(
                Problem(
                    file, row.csv_line, "preference", row.preference,
                    f"reverse label must be {swap_label(ref['preference'])!r} (normal label {ref['preference']!r})",
                )
            )
    return problems


def check_modelnames(normal: pd.DataFrame, named: pd.DataFrame, file: str) -> list[Problem]:
    """The with-modelnames file must hold the same pairs and labels as the plain file."""
    problems: list[Problem] = []
    by_name = normal.set_index("name")
    for row in named.itertuples(index=False):
        if row.name not in by_name.index:
            problems.append(Problem(file, row.csv_line, "name", row.name, "name not in the plain file"))
            continue
        ref = by_name.loc[row.name]
        if isinstance(ref, pd.DataFrame):
            continue
        for column in ("a1", "a2", "preference"):
            if getattr(row, column) != ref[column]:
                problems.append(Problem(file, row.csv_line, column, getattr(row, column), "differs from the plain file"))
        for column in ("model1", "model2"):
            if not getattr(row, column).strip():
                problems.append(Problem(file, row.csv_line, column, getattr(row, column), "model name is empty"))
    for name in sorted(set(by_name.index) - set(named["name"])):
        problems.append(Problem(file, None, "name", name, "pair of the plain file missing here"))
    return problems


@dataclass
class Checked:
    """A dataset folder after every rule has run."""

    dataset: str
    folder: Path
    normal: pd.DataFrame
    reverse: pd.DataFrame | None
    named: pd.DataFrame | None
    problems: list[Problem]
    sha256: dict[str, tuple[str, str | None]]  # file -> (actual, pinned)

    @property
    def sha_ok(self) -> bool | None:
        pinned = [(a, p) for a, p in self.sha256.values() if p]
        return None if not pinned else all(a == p for a, p in pinned)


def check_dataset(dataset: str = "emoprefer", data_dir: str | Path | None = None) -> Checked:
    """Read every file of a dataset and run every rule; collects problems instead of stopping."""
    spec = dataset_spec(dataset)
    folder = resolve_data_dir(dataset, data_dir)
    base_cols = ("name", "a1", "a2", "preference")
    problems: list[Problem] = []
    frames: dict[str, pd.DataFrame | None] = {}
    hashes: dict[str, tuple[str, str | None]] = {}
    for role, filename in spec.files.items():
        path = folder / filename
        if not path.is_file():
            frames[role] = None
            if role == "normal":
                problems.append(Problem(str(path), None, None, None, "file not found"))
            continue
        try:
            hashes[filename] = (sha256_file(path), spec.sha256.get(filename))
        except OSError:
            pass  # unreadable: read_csv below reports it with the reason
        required = base_cols + (("model1", "model2") if role == "modelnames" else ())
        frame, found = read_csv(path, required)
        problems += found
        if frame.empty and found:
            frames[role] = None
            continue
        problems += check_pairs(frame, str(path))
        frames[role] = frame
    normal = frames.get("normal")
    if normal is not None:
        if frames.get("reverse") is not None:
            problems += check_reverse(normal, frames["reverse"], str(folder / spec.files["reverse"]))
        if frames.get("modelnames") is not None:
            problems += check_modelnames(normal, frames["modelnames"], str(folder / spec.files["modelnames"]))
    return Checked(
        dataset, folder, normal if normal is not None else pd.DataFrame(),
        frames.get("reverse"), frames.get("modelnames"), problems, hashes,
    )


def _warn_sha(checked: Checked) -> None:
    for filename, (actual, pinned) in checked.sha256.items():
        if pinned and actual != pinned:
            warnings.warn(
                f"{checked.folder / filename}: sha256 {actual[:12]}… differs from the pinned {pinned[:12]}…; "
                "these data differ from the paper's, so results are not comparable with it",
                stacklevel=3,
            )


def problem_report(checked: Checked, limit: int = 50) -> str:
    """The one message for a dataset's problems, raised by the loader and printed by ``check``."""
    problems = checked.problems
    listing = "\n  ".join(str(p) for p in problems[:limit])
    more = "" if len(problems) <= limit else f"\n  … and {len(problems) - limit} more"
    return f"{len(problems)} problem(s) in dataset {checked.dataset!r}:\n  {listing}{more}"


def _file_stamps(dataset: str, folder: str) -> tuple:
    """Size and modification time of each file, so an edited file is read again, not served stale."""
    stamps = []
    for filename in dataset_spec(dataset).files.values():
        try:
            stat = os.stat(Path(folder) / filename)
        except OSError:
            stamps.append((filename, None))
        else:
            stamps.append((filename, stat.st_size, stat.st_mtime_ns))
    return tuple(stamps)


@lru_cache(maxsize=16)  # keyed by the files' stamps: an edit makes a new entry, old ones age out
def _load_checked(dataset: str, folder: str, stamps: tuple = ()) -> Checked:
    checked = check_dataset(dataset, folder)
    if checked.problems:
        raise DataError(problem_report(checked))
    _warn_sha(checked)
    return checked


def load_pairs(
    dataset: str = "emoprefer", order: str = "normal", data_dir: str | Path | None = None
) -> pd.DataFrame:
    """Validated pairs: ``name, a1, a2, preference`` plus ``model1, model2`` when the
    with-modelnames file exists. ``order='reverse'`` reads the official reverse file (checked
    against the normal one) or, without it, swaps a1/a2 and maps the labels."""
    if order not in ORDERS:
        raise DataError(f"order must be one of {ORDERS}, got {order!r}")
    folder = resolve_data_dir(dataset, data_dir)
    resolved = str(folder.resolve())
    checked = _load_checked(dataset, resolved, _file_stamps(dataset, resolved))
    pairs = checked.normal
    if checked.named is not None:
        models = checked.named.set_index("name")[["model1", "model2"]]
        pairs = pairs.join(models, on="name")
    pairs = pairs.drop(columns="csv_line").reset_index(drop=True)
    if order == "normal":
        return pairs.copy()
    reverse = swap_pairs(pairs)
    if checked.reverse is not None:
        official = checked.reverse.drop(columns="csv_line").set_index("name").loc[pairs["name"]].reset_index()
        reverse[["a1", "a2", "preference"]] = official[["a1", "a2", "preference"]].to_numpy()
    return reverse


def data_sha256(dataset: str = "emoprefer", data_dir: str | Path | None = None) -> dict[str, str]:
    """sha256 of every file of the dataset that is present, for run manifests."""
    spec = dataset_spec(dataset)
    folder = resolve_data_dir(dataset, data_dir)
    return {f: sha256_file(folder / f) for f in spec.files.values() if (folder / f).is_file()}


# --------------------------------------------------------------------------- pair files (any user's pairs)

PAIR_FILE_SUFFIXES = (".csv", *PARQUET_SUFFIXES)
PAIR_FILE_COLUMNS = ("name", "a1", "a2")
"""A pair file needs these; ``preference`` (a1/a2/same, or empty for an unlabelled file) and
``pair_id`` (the key of each pair where one video has several pairs) are optional."""
PAIR_ID_SEPARATOR = "."  # a repeated name's k-th pair gets the id <name>.<k> (k from 1, in file order)


def is_pair_file(dataset: object) -> bool:
    """Whether a run's ``dataset`` names a pair file (a path with a table suffix) rather than a
    key of ``params/datasets.yaml`` (keys never contain a suffix or a slash)."""
    text = str(dataset)
    return text.lower().endswith(PAIR_FILE_SUFFIXES) or "/" in text or os.sep in text


def pair_file_dataset(path: str | Path) -> str:
    """The dataset name a pair file's runs and rows carry: ``file-<stem>`` in the characters a
    run id allows. The file's sha256 (in the run identity) tells two files of one stem apart."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(path).stem).strip(".-") or "pairs"
    return f"file-{stem}"


def _cell(value: object) -> str:
    """A table cell as text: a missing value (NaN/None in Parquet) is the empty string."""
    return "" if value is None or (isinstance(value, float) and value != value) else str(value)


def _pair_problems(frame: pd.DataFrame, file: str) -> list[Problem]:
    """The rules of a pair file, each problem with its line (CSV) or row (Parquet) and column."""
    problems: list[Problem] = []
    labelled = "preference" in frame.columns and any(_cell(v).strip() for v in frame["preference"])
    for index, row in enumerate(frame.to_dict("records")):
        line = row.get("csv_line")
        where = "" if line is not None else f"row {index + 1}: "
        name = _cell(row["name"])
        if not safe_name(name):
            problems.append(Problem(file, line, "name", name, f"{where}{NAME_RULE} (it becomes a media path)"))
        for column in ("a1", "a2"):
            if not _cell(row[column]).strip():
                problems.append(Problem(file, line, column, _cell(row[column]), f"{where}description is empty"))
        if labelled and _cell(row["preference"]) not in LABELS:
            problems.append(Problem(file, line, "preference", _cell(row["preference"]),
                                    f"{where}preference must be one of a1, a2, same (a file is labelled on every "
                                    "row or on none: an empty label would be scored as if it were an answer)"))
        if "pair_id" in frame.columns and not safe_name(_cell(row["pair_id"])):
            problems.append(Problem(file, line, "pair_id", _cell(row["pair_id"]), f"{where}{NAME_RULE}"))
    return problems + _key_problems(frame, file)


def _key_problems(frame: pd.DataFrame, file: str) -> list[Problem]:
    """A pair file's keys are unique: its own ``pair_id`` column, else names (a repeated name
    gets generated ids, which must not collide with another row's name)."""
    keys = pair_keys(frame)
    lines = frame["csv_line"] if "csv_line" in frame.columns else pd.Series([None] * len(frame))
    column = "pair_id" if "pair_id" in frame.columns else "name"
    seen: dict[str, int] = {}
    problems = []
    for index, (key, line) in enumerate(zip(keys, lines, strict=True)):
        if key in seen:
            first = seen[key]
            why = ("duplicate pair_id" if column == "pair_id" else
                   "the id generated for a repeated name equals another row's name; add a pair_id column")
            problems.append(Problem(file, line, column, key, f"{'' if line else f'row {index + 1}: '}{why} "
                                    f"(first at row {first + 1})"))
        else:
            seen[key] = index
    return problems


def pair_keys(frame: pd.DataFrame) -> list[str]:
    """Each pair's key in the store: the file's ``pair_id`` column where it has one; else the
    name, and for a name that repeats ``<name>.<k>`` (its k-th pair in file order, from 1), so
    that no pair overwrites another."""
    if "pair_id" in frame.columns:
        return [_cell(v) for v in frame["pair_id"]]
    names = [_cell(v) for v in frame["name"]]
    repeated = {n for n, count in pd.Series(names).value_counts().items() if count > 1}
    seen: dict[str, int] = {}
    keys = []
    for name in names:
        if name in repeated:
            seen[name] = seen.get(name, 0) + 1
            keys.append(f"{name}{PAIR_ID_SEPARATOR}{seen[name]}")
        else:
            keys.append(name)
    return keys


@dataclass(frozen=True)
class PairFile:
    """A user's pair file, validated: ``pairs`` has ``name`` (the pair's key), ``media_name``
    (the video), ``a1``, ``a2`` and ``preference`` where the file is labelled; ``pair_id`` says
    whether the keys differ from the names (a submission then writes them)."""

    path: Path
    pairs: pd.DataFrame
    sha256: str
    labelled: bool
    keyed: bool
    name: str | None = None
    """The registered dataset the file belongs to (``track3_candidate``), if any."""

    @property
    def dataset(self) -> str:
        """The name its runs and rows carry: the registered key, else ``file-<stem>``."""
        return self.name or pair_file_dataset(self.path)


def read_pair_file(path: str | Path, dataset: str | None = None) -> PairFile:
    """Read and check a pair file (CSV or Parquet); every problem is listed with its file, line
    (or row) and column, raised as one :class:`DataError`."""
    path = Path(path).expanduser()
    frame, problems = scan_table(path, PAIR_FILE_COLUMNS)
    if not frame.empty:
        problems += _pair_problems(frame, str(path))
    if problems:
        listing = "\n  ".join(str(p) for p in problems[:50])
        more = "" if len(problems) <= 50 else f"\n  … and {len(problems) - 50} more"
        raise DataError(f"{len(problems)} problem(s) in pair file {path}:\n  {listing}{more}")
    labelled = "preference" in frame.columns and any(_cell(v).strip() for v in frame["preference"])
    keys = pair_keys(frame)
    names = [_cell(v) for v in frame["name"]]
    pairs = pd.DataFrame({"name": keys, "media_name": names,
                          "a1": [_cell(v) for v in frame["a1"]], "a2": [_cell(v) for v in frame["a2"]]})
    if labelled:
        pairs["preference"] = [_cell(v) for v in frame["preference"]]
    return PairFile(path=path, pairs=pairs, sha256=sha256_file(path), labelled=labelled, keyed=keys != names,
                    name=dataset)


def registered_pair_file(dataset: str, data_dir: str | Path | None = None) -> PairFile | None:
    """The pair file a run's ``dataset`` names: a path, or a registered pair-file dataset
    (``track3_*``: its file in the user's ``$MER2026_DATA``); None for the benchmark's datasets."""
    if is_pair_file(dataset):
        return read_pair_file(dataset)
    spec = dataset_spec(dataset)
    if not spec.pair_file:
        return None
    return read_pair_file(user_data_dir(spec, data_dir) / spec.files["normal"], dataset=dataset)


# --------------------------------------------------------------------------- media


@dataclass(frozen=True)
class MediaPaths:
    video: Path
    audio: Path


def safe_name(name: object) -> bool:
    """Whether a sample name can become a file name inside the media folder: the safe characters,
    no ``..`` anywhere, and not ``.`` (which names the folder itself)."""
    return isinstance(name, str) and bool(NAME_PATTERN.match(name)) and ".." not in name and name != "."


def check_name(name: str) -> str:
    """Refuse a sample name that could escape the media folder."""
    if not safe_name(name):
        raise DataError(f"unsafe sample name {name!r}: {NAME_RULE}")
    return name


def media_paths(name: str, media_dir: str | Path) -> MediaPaths:
    """``<media_dir>/<name>.mp4`` and ``.wav``; the MER2025 layout with ``video/`` and ``audio/``
    sub-folders is used where the flat file is absent."""
    check_name(name)
    root = Path(media_dir)
    video, audio = root / f"{name}.mp4", root / f"{name}.wav"
    if not video.exists() and (root / "video" / f"{name}.mp4").exists():
        video = root / "video" / f"{name}.mp4"
    if not audio.exists() and (root / "audio" / f"{name}.wav").exists():
        audio = root / "audio" / f"{name}.wav"
    return MediaPaths(video, audio)


def required_media(input_type: str) -> tuple[str, ...]:
    """Which media files an input type reads (audiovideo takes its audio from the mp4)."""
    if input_type not in INPUT_TYPES:
        raise DataError(f"input_type must be one of {INPUT_TYPES}, got {input_type!r}")
    return {"audio": ("audio",), "video": ("video",), "audiovideo": ("video",), "text": ()}[input_type]


def missing_media(names: Iterable[str], media_dir: str | Path | None, input_type: str) -> list[Path]:
    """Every media file the samples need and the folder lacks, so a run refuses to start with
    the complete list instead of failing at sample 300."""
    kinds = required_media(input_type)
    if not kinds:
        return []
    if media_dir is None:
        raise DataError(f"input_type {input_type!r} needs media: pass media_dir (a folder of <name>.mp4/.wav)")
    missing = []
    for name in names:
        found = media_paths(name, media_dir)
        missing += [getattr(found, kind) for kind in kinds if not getattr(found, kind).is_file()]
    return missing


# --------------------------------------------------------------------------- the pairs of a run


LABEL_FILE_ROLES = ("normal", "reverse")  # the files a prediction's texts and labels come from


@dataclass(frozen=True)
class RunPairs:
    """The pairs one run judges, read once before any model loads.

    ``full``: both orders of the whole set (a CPU judge fits on all of it, so a subset run gives
    the labels of the full run); ``tables``: the chosen pairs per order, in file order;
    ``data_sha256``: the hashes of the files (or of the caller's pairs) for the manifest, and
    ``identity_data`` the part of them that fixes a prediction (``label_files``)."""

    full: dict[str, pd.DataFrame]
    tables: dict[str, pd.DataFrame]
    data_sha256: dict[str, str]
    identity_data: dict[str, str]
    samples_sha256: str
    """sha256 of the chosen names, sorted (a run folder's scope records which samples a session asked for)."""
    dataset: str = ""
    """The name the run's folders and rows carry: the dataset key, or ``file-<stem>`` for a pair file."""
    pair_file: PairFile | None = None
    """The pair file the pairs came from (a submission re-reads it for its order and names)."""
    labelled: bool = True
    """Whether the pairs carry human labels (an unlabelled run stores predictions and no metrics)."""
    train: dict[str, pd.DataFrame] | None = None
    """Both orders of the dataset a learning judge fits on when these pairs' labels are a
    construction (a probe's ``train_on``); None for ordinary pairs, which judges fit on themselves."""

    @property
    def names(self) -> list[str]:
        """The chosen sample names, in file order."""
        return list(self.tables["normal"]["name"])

    @property
    def media_names(self) -> list[str]:
        """The media the chosen pairs show (several pairs may share one video)."""
        return list(self.tables["normal"]["media_name"])


def run_pairs(dataset: str, pairs: pd.DataFrame | None = None, data_dir: str | Path | None = None,
              names: Iterable[str] | None = None, limit: int | None = None) -> RunPairs:
    """The pairs of a run: the dataset's official files (or the caller's ``pairs`` and a swapped
    copy), the subset ``names``/``limit`` chose, and their hashes, in one place so that a run and a
    grid's plan of it read the same tables."""
    source = registered_pair_file(dataset, data_dir) if pairs is None else None
    if source is not None:
        pairs = source.pairs
    full = order_tables(dataset, pairs, data_dir)
    chosen = select_pairs(full["normal"], names, limit)
    tables = {o: t.set_index("name").loc[chosen["name"]].reset_index() for o, t in full.items()}
    train = None
    if source is not None:
        hashes = {source.path.name: source.sha256}  # the file's bytes fix the texts, labels and order
        identity_data = dict(hashes)
    elif pairs is None:
        hashes = data_sha256(dataset, data_dir)
        identity_data = label_files(hashes, dataset_spec(dataset).files)
        base = dataset_spec(dataset).train_on
        if base:  # a learning judge's verdicts depend on the labels it fits on: they enter the identity
            train = order_tables(base, None, data_dir)
            base_files = label_files(data_sha256(base, data_dir), dataset_spec(base).files)
            identity_data |= {f"{base}/{f}": h for f, h in base_files.items()}
    else:
        hashes = {"pairs": pairs_sha256(full)}  # a caller's pairs have no files: their content is hashed
        identity_data = dict(hashes)
    labelled = "preference" in full["normal"].columns and bool(full["normal"]["preference"].notna().any())
    return RunPairs(full=full, tables=tables, data_sha256=hashes, identity_data=identity_data,
                    samples_sha256=sha256_hex("\n".join(sorted(chosen["name"]))),
                    dataset=source.dataset if source is not None else str(dataset), pair_file=source,
                    labelled=labelled, train=train)


def select_pairs(pairs: pd.DataFrame, names: Iterable[str] | None = None, limit: int | None = None) -> pd.DataFrame:
    """The requested subset in file order: ``names`` first, then the first ``limit``."""
    out = pairs
    if names is not None:
        unknown = sorted(set(names) - set(pairs["name"]))
        if unknown:
            raise DataError(f"{len(unknown)} requested name(s) not in the pairs: {', '.join(unknown[:20])}")
        out = out[out["name"].isin(set(names))]
    if limit is not None:
        out = out.head(int(limit))
    return out.reset_index(drop=True)


def prepare_pairs(pairs: pd.DataFrame) -> pd.DataFrame:
    """Validate a caller's pairs table and add ``media_name`` (default: ``name``)."""
    missing = [c for c in ("name", "a1", "a2") if c not in pairs.columns]
    if missing:
        raise DataError(f"pairs table lacks column(s) {', '.join(missing)}")
    out = pairs.copy()
    if "media_name" not in out.columns:
        out["media_name"] = out["name"]
    if out["name"].duplicated().any():
        raise DataError(f"pairs table: duplicate name {out.loc[out['name'].duplicated(), 'name'].iloc[0]!r}")
    for column in ("name", "media_name"):
        out[column].map(check_name)
    return out


def order_tables(dataset: str, pairs: pd.DataFrame | None, data_dir: str | Path | None) -> dict[str, pd.DataFrame]:
    """Both orders: the official files for a dataset, or a swapped copy of the caller's pairs."""
    if pairs is None:
        normal = prepare_pairs(load_pairs(dataset, "normal", data_dir))
        reverse = prepare_pairs(load_pairs(dataset, "reverse", data_dir))
    else:
        normal = prepare_pairs(pairs)
        reverse = swap_pairs(normal)
    return {"normal": normal, "reverse": reverse}


def pairs_sha256(tables: dict[str, pd.DataFrame]) -> str:
    """Content hash of ALL caller-supplied pairs, labels included (no files to hash): a subset
    run and the full run of the same pairs share it; a relabelled or edited pair changes it."""
    columns = [c for c in ("name", "media_name", "a1", "a2", "preference") if c in tables["normal"].columns]
    return sha256_hex(tables["normal"][columns].to_csv(index=False))


def label_files(data_sha256: dict[str, str], dataset_files: dict[str, str] | None) -> dict[str, str]:
    """The part of a run's data hashes that fixes its predictions: the normal and reverse files
    (a writers file beside them changes no prediction), or the caller's pairs."""
    if not dataset_files:
        return dict(data_sha256)
    wanted = {dataset_files[r] for r in LABEL_FILE_ROLES if r in dataset_files}
    return {f: h for f, h in data_sha256.items() if f in wanted}


def check_media(names: Iterable[str], media_dir: str | Path | None, input_type: str) -> None:
    """Stop before any model loads if a needed media file is missing, listing all of them."""
    missing = missing_media(sorted(set(names)), media_dir, input_type)
    if missing:
        listing = "\n  ".join(str(p) for p in missing)
        raise DataError(
            f"{len(missing)} media file(s) missing for input_type {input_type!r} in {media_dir}:\n  {listing}\n"
            "Supply them, or restrict the run with limit/names to samples whose media are present."
        )


# --------------------------------------------------------------------------- command line


def summary(checked: Checked) -> str:
    counts = checked.normal["preference"].value_counts() if not checked.normal.empty else pd.Series(dtype=int)
    status = {True: "match the pinned values", False: "DIFFER from the pinned values", None: "no pinned values"}
    lines = [
        f"dataset: {checked.dataset} ({dataset_spec(checked.dataset).description})",
        f"folder: {checked.folder}",
        f"pairs: {len(checked.normal)}",
        "labels: " + ", ".join(f"{label} {int(counts.get(label, 0))}" for label in LABELS),
        f"reverse file: {'present' if checked.reverse is not None else 'absent (derived by swapping)'}",
        f"with-modelnames file: {'present' if checked.named is not None else 'absent'}",
        f"sha256: {status[checked.sha_ok]}",
    ]
    lines += [f"  {name}: {actual}" for name, (actual, _) in checked.sha256.items()]
    return "\n".join(lines)


def _check_pair_file(dataset: str, folder: str | None) -> int:
    """``check --dataset track3_*``: the pair file's rules and a summary, or every problem and exit 1."""
    try:
        source = registered_pair_file(dataset, folder)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    labels = source.pairs["preference"].value_counts() if source.labelled else None
    print(f"dataset: {dataset} ({dataset_spec(dataset).description})\nfile: {source.path}\n"
          f"pairs: {len(source.pairs)} ({source.pairs['media_name'].nunique()} videos)\n"
          + ("labels: none (predictions only, no metrics)" if labels is None else
             "labels: " + ", ".join(f"{label} {int(labels.get(label, 0))}" for label in LABELS))
          + f"\nsha256: {source.sha256}")
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        known = sorted(dataset_specs())
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    parser = argparse.ArgumentParser(prog="python -m helpers.data", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate a dataset folder and print a summary")
    check.add_argument("dir", nargs="?", default=None, help=f"folder with the CSVs (default: ${DATA_ENV}, cache, download)")
    check.add_argument("--dataset", default="emoprefer", choices=known)
    args = parser.parse_args(argv)
    if dataset_spec(args.dataset).pair_file:
        return _check_pair_file(args.dataset, args.dir)
    try:
        checked = check_dataset(args.dataset, args.dir)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if checked.problems:  # no summary: "pairs: 0" of a file that could not be read reads like a result
        print(f"error: {problem_report(checked)}", file=sys.stderr)
        return 1
    print(summary(checked))
    if checked.sha_ok is False:
        print("warning: sha256 differs from the paper's files; results are not comparable with the paper")
    return 0


if __name__ == "__main__":
    sys.exit(main())
