"""The systems table of a tournament: one description per (sample, system), validated.

A tournament starts from a long table ``name, system, description`` (CSV or Parquet). Sample
names become media paths and comparison ids, so they must be safe names. Systems are display
names as a challenge publishes them (``videochat(emb)``, ``Qwen/Qwen2.5-Omni-7B``,
``GPT-4o (2024-08-06)``): any non-empty text is accepted, and :func:`system_id` derives the safe
id that comparison ids and paths use, while every leaderboard keeps the display name. This module
refuses every row that would make an unsafe path, an ambiguous id, an empty text or a second
description of the same system, and lists every problem with file, line (CSV) or row (Parquet),
column and value at once.
"""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path

import pandas as pd

from helpers.data import NAME_RULE, DataError, safe_name, scan_table
from helpers.digest import SYSTEM_ID_LEN, sha256_hex

COLUMNS = ("name", "system", "description")
SEPARATOR = "__"
LINE_COLUMNS = ("csv_line", "_line")  # where helpers.data.read_csv keeps each record's line
SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def system_id(system: str) -> str:
    """The id of a system in comparison ids and paths: the display name itself when it is
    already safe (letters, digits, ``_ . -``, no ``__``, no ``..``), else a readable slug plus 8
    hex digits of the name's SHA-256, so ``GPT-4o (2024-08-06)`` and ``GPT-4o 2024-08-06`` get
    different ids and the same name always gets the same one."""
    if SAFE_ID.fullmatch(system) and SEPARATOR not in system and ".." not in system:
        return system
    slug = re.sub(r"[^A-Za-z0-9.-]+", "-", system).replace("..", ".").strip("-.")[:40] or "system"
    return f"{slug}-{sha256_hex(system, SYSTEM_ID_LEN)}"


ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"))


def display_key(system: str) -> str:
    """How a reader tells display names apart: Unicode NFC, zero-width characters and soft
    hyphens removed, whitespace collapsed and trimmed. ``gpt``, ``gpt `` and ``g\u200bpt`` print
    alike, so they share a key and a table holding two of them is refused."""
    return " ".join(unicodedata.normalize("NFC", system).translate(ZERO_WIDTH).split())


def _where(frame: pd.DataFrame, i: int) -> str:
    """``line N`` of a CSV (as ``helpers.data.read_csv`` numbered it) or ``row N`` of a Parquet table."""
    for column in LINE_COLUMNS:
        if column in frame.columns:
            return f"line {frame[column].iat[i]}"
    return f"row {i + 1}"


def _problem(file: str, where: str, column: str | None, value: object, message: str) -> str:
    text = f"{file}, {where}"
    if column:
        text += f", column '{column}'"
    text += f": {message}"
    if value is not None:
        shown = str(value)
        text += f" (value {shown if len(shown) <= 60 else shown[:57] + '...'!r})"
    return text


def read_entries(path: str | Path) -> tuple[pd.DataFrame, list[str]]:
    """Read a CSV (with 1-based line numbers) or Parquet (rows numbered from 1) long table."""
    frame, problems = scan_table(path, COLUMNS)  # the one reader of a user's table
    return frame, [str(p) for p in problems]


def check_entries(frame: pd.DataFrame, file: str) -> list[str]:
    """Every rule a tournament table obeys, as messages naming file, line/row, column, value.

    Names become comparison ids and media paths, so they must be safe for paths; a system is any
    non-empty display name (its :func:`system_id` goes into ids), and two display names may not
    share an id. Each (name, system) has exactly one non-empty description, and a tournament
    needs at least two systems and at least one sample that two of them describe (else no
    comparison can be drawn).
    """
    problems: list[str] = []
    seen: dict[tuple[str, str], str] = {}
    ids: dict[str, str] = {}
    shown: dict[str, str] = {}
    for i, (name, system, text) in enumerate(zip(frame["name"], frame["system"], frame["description"], strict=True)):
        where = _where(frame, i)
        if not safe_name(name):  # the one sample-name rule of helpers.data
            problems.append(_problem(file, where, "name", name, f"{NAME_RULE} (it becomes a path and an id)"))
        if not isinstance(system, str) or not system.strip():
            problems.append(_problem(file, where, "system", system, "system name is empty (any non-empty name is fine)"))
        elif shown.setdefault(display_key(system), system) != system:
            problems.append(_problem(file, where, "system", system, f"prints like system {shown[display_key(system)]!r} "
                                     "(names are compared after Unicode NFC and with whitespace and zero-width "
                                     "characters trimmed); rename one of them"))
        elif ids.setdefault(system_id(system), system) != system:
            problems.append(_problem(file, where, "system", system, f"its id {system_id(system)!r} is also the id of "
                                     f"system {ids[system_id(system)]!r}; rename one of them"))
        if not isinstance(text, str) or not text.strip():
            problems.append(_problem(file, where, "description", text, "description is empty"))
        key = (name, system)
        if key in seen:
            problems.append(_problem(file, where, "system", system, f"second description of system {system!r} for sample {name!r} (first on {seen[key]})"))
        else:
            seen[key] = where
    if frame["system"].nunique() < 2:
        problems.append(f"{file}: a tournament needs at least 2 systems, found {frame['system'].nunique()}")
    elif not (frame.groupby("name")["system"].nunique() >= 2).any():
        problems.append(f"{file}: no sample has descriptions from two systems, so no comparison can be drawn "
                        f"({frame['name'].nunique()} samples, each described by one system only)")
    return problems


def coverage(entries: pd.DataFrame) -> pd.DataFrame:
    """Per system: on how many samples it has a description and which samples it lacks."""
    names = sorted(entries["name"].unique())
    rows = []
    for system, group in entries.groupby("system", sort=True):
        lacking = sorted(set(names) - set(group["name"]))
        rows.append({"system": system, "n_samples": group["name"].nunique(), "n_missing": len(lacking),
                     "missing_examples": ", ".join(lacking[:5]) + (" ..." if len(lacking) > 5 else "")})
    return pd.DataFrame(rows)


def missing_report(entries: pd.DataFrame) -> str:
    """One line per system that lacks some samples; empty when every system covers every sample.
    Missing descriptions are not an error (those comparisons are simply not drawn), but a system
    judged on fewer samples gets wider intervals, and the user should know which samples."""
    cov = coverage(entries)
    lacking = cov[cov["n_missing"] > 0]
    total = entries["name"].nunique()
    return "\n".join(
        f"system {r.system!r} has no description for {r.n_missing} of {total} samples (e.g. {r.missing_examples})"
        for r in lacking.itertuples()
    )


def load_entries(path: str | Path) -> pd.DataFrame:
    """The validated long table ``name, system, description``; raises DataError listing every problem."""
    frame, problems = read_entries(path)
    if not problems:
        problems = check_entries(frame, str(path))
    if problems:
        listing = "\n  ".join(problems[:50])
        more = "" if len(problems) <= 50 else f"\n  ... and {len(problems) - 50} more"
        raise DataError(f"{len(problems)} problem(s) in tournament table {path}:\n  {listing}{more}")
    return frame[list(COLUMNS)].astype(str).reset_index(drop=True)


def entries_sha256(entries: pd.DataFrame) -> str:
    """Content hash of the table (order-independent): a design records it, so judging or ranking
    with a changed table (a new system, an edited text) is refused instead of silently using a
    design drawn from the old one."""
    rows = sorted(zip(entries["name"], entries["system"], entries["description"], strict=True))
    return sha256_hex(json.dumps(rows))
