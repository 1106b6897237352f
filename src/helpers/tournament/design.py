"""Which comparisons a tournament judges: a seeded pair design, stored with its identity.

A design is drawn from one table with one budget and one seed, and its ``manifest.json`` records
all three (the table as a content hash). Judging and ranking check that identity before they use
a stored design (:func:`check_design`): a table with a new system or an edited text, or another
``--budget``/``--seed``, would otherwise reuse the old ``design.csv`` silently and leave the new
system out of the leaderboard.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.data import DataError
from helpers.run.session import RunSession
from helpers.tournament.table import SEPARATOR, entries_sha256

DESIGN_FILE = "design.csv"
MANIFEST_FILE = "manifest.json"


@dataclass
class Design:
    """Which comparisons to judge (one row each: ``comparison, name, system_a, system_b``) and how
    they were drawn (``manifest``: kind, budget, seed, counts, table hash)."""

    pairs: pd.DataFrame
    manifest: dict = field(default_factory=dict)


def comparison_id(name: str, system_a: str, system_b: str) -> str:
    return f"{name}{SEPARATOR}{system_a}{SEPARATOR}vs{SEPARATOR}{system_b}"


def _systems_by_sample(entries: pd.DataFrame) -> dict[str, list[str]]:
    return {name: sorted(group) for name, group in entries.groupby("name", sort=True)["system"]}


def design_pairs(entries: pd.DataFrame, budget: int | None = None, seed: int = 0) -> Design:
    """Full round-robin per sample (``budget=None``) or ``budget`` comparisons per sample.

    With a budget, samples are visited in a seeded random order and each takes the ``budget``
    pairs of its systems that have been compared least often so far (seeded random tie-break),
    so every pair of systems ends up compared about equally often overall (within one comparison
    when every system describes every sample). Pairs are canonical (system_a < system_b): both
    orders are judged anyway, so orientation carries no information.
    """
    if budget is not None and budget < 1:
        raise ValueError(f"budget must be a positive number of comparisons per sample, got {budget}")
    rng = np.random.default_rng(seed)
    by_sample = _systems_by_sample(entries)
    names = list(by_sample)
    counts: Counter = Counter()
    rows = []
    for i in rng.permutation(len(names)) if budget else range(len(names)):
        name = names[i]
        options = list(combinations(by_sample[name], 2))
        if budget and budget < len(options):
            tiebreak = rng.random(len(options))
            ranked = sorted(range(len(options)), key=lambda j: (counts[options[j]], tiebreak[j]))
            options = [options[j] for j in sorted(ranked[:budget])]
        counts.update(options)
        rows += [(comparison_id(name, a, b), name, a, b) for a, b in options]
    pairs = pd.DataFrame(rows, columns=["comparison", "name", "system_a", "system_b"])
    if pairs.empty:
        raise DataError(f"no sample of the table has descriptions from two systems ({len(names)} samples): "
                        "there is nothing to compare")
    pairs = pairs.sort_values("comparison", kind="mergesort").reset_index(drop=True)
    if pairs["comparison"].duplicated().any():
        raise DataError(f"comparison ids collide, e.g. {pairs.loc[pairs['comparison'].duplicated(), 'comparison'].iloc[0]!r}")
    per_pair = pairs.groupby(["system_a", "system_b"]).size()
    manifest = {
        "design": "round_robin" if budget is None else "budget", "budget": budget, "seed": seed,
        "n_samples": len(names), "systems": sorted(entries["system"].unique()),
        "n_comparisons": len(pairs), "comparisons_per_pair_min": int(per_pair.min()),
        "comparisons_per_pair_max": int(per_pair.max()), "entries_sha256": entries_sha256(entries),
        "orders": ["normal", "reverse"],
    }
    return Design(pairs, manifest)


def write_design(design: Design, folder: str | Path) -> Path:
    """``design.csv`` and ``manifest.json`` in ``folder`` (the tournament's own folder)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    design.pairs.to_csv(folder / DESIGN_FILE, index=False)
    RunSession.record(folder, design.manifest)  # the store's one manifest writer (atomic, clear disk errors)
    return folder


def has_design(folder: str | Path) -> bool:
    return (Path(folder) / DESIGN_FILE).is_file()


def read_design(folder: str | Path) -> Design:
    """The stored design; a folder without one is a clear error that says how to draw it."""
    folder = Path(folder)
    if not has_design(folder):
        raise DataError(f"{folder}: no {DESIGN_FILE} (no design drawn here yet); draw one first with "
                        f"'python -m helpers.tournament design TABLE --out {folder}'")
    manifest = json.loads((folder / MANIFEST_FILE).read_text()) if (folder / MANIFEST_FILE).is_file() else {}
    return Design(pd.read_csv(folder / DESIGN_FILE, dtype=str), manifest)


def design_differences(manifest: dict, entries: pd.DataFrame, asked: dict | None = None) -> list[str]:
    """What differs between a stored design's manifest and the table / draw asked for now, one
    phrase each (empty: the same design). ``asked`` holds the draw settings the user gave
    (``budget``: None for round-robin, ``seed``); a setting left out is not compared (``rank``
    has no budget; ``judge`` without ``--budget`` takes the stored design as drawn)."""
    changed = []
    stored_hash = manifest.get("entries_sha256")
    if stored_hash is None:
        changed.append(f"its {MANIFEST_FILE} records no table hash, so it cannot be matched to this table")
    elif stored_hash != entries_sha256(entries):
        added = sorted(set(entries["system"]) - set(manifest.get("systems", [])))
        dropped = sorted(set(manifest.get("systems", [])) - set(entries["system"]))
        detail = "; ".join(part for part in (
            f"new system(s) {', '.join(added)}" if added else "",
            f"system(s) no longer in the table {', '.join(dropped)}" if dropped else "",
        ) if part) or "same systems, but descriptions or samples differ"
        changed.append(f"the table changed since the design was drawn ({detail})")
    shown = {None: "none (round-robin)"}
    for key, value in (asked or {}).items():
        stored = manifest.get(key)
        if stored != value:
            changed.append(f"{key} {shown.get(stored, stored)} in the design, {shown.get(value, value)} asked for")
    return changed


def redraw_hint(table: str | Path, folder: str | Path, manifest: dict, asked: dict | None = None) -> str:
    """The two ways out of a design mismatch, as commands the user can paste: the redraw keeps
    the stored design's budget and seed except where the user asked for others."""
    settings = {"budget": manifest.get("budget"), "seed": manifest.get("seed"), **(asked or {})}
    flags = "".join(f" --{key} {value}" for key, value in settings.items() if value is not None)
    return (f"Redraw it with 'python -m helpers.tournament design {table} --out {folder}{flags} --overwrite' "
            "(predictions of the old design stay in their own run folders), or use a new --out folder.")


def check_design(folder: str | Path, entries: pd.DataFrame, table: str | Path, asked: dict | None = None) -> Design:
    """The stored design of ``folder`` if it was drawn from ``entries`` with the draw settings in
    ``asked``; else a DataError naming what changed and the two ways out."""
    design = read_design(folder)
    changed = design_differences(design.manifest, entries, asked)
    if changed:
        raise DataError(f"the design in {folder} does not match: " + "; ".join(changed) + ". "
                        + redraw_hint(table, folder, design.manifest, asked))
    return design


def to_pairs(design: pd.DataFrame, entries: pd.DataFrame, human: pd.DataFrame | None = None) -> pd.DataFrame:
    """The engine's pairs table: ``name`` = comparison id, ``media_name`` = the sample (whose
    video a multimodal judge watches), ``a1``/``a2`` the two systems' texts. ``model1``/``model2``
    carry the systems so that swapping the order keeps track of who wrote what. With ``human``
    (:func:`helpers.tournament.rank.load_human`), ``preference`` holds the human verdict in the
    a1/a2 frame where there is one and None elsewhere, so the store records it as ``gt`` and
    judges that learn from labels can use the labelled comparisons."""
    text = entries.set_index(["name", "system"])["description"]
    a1 = text.reindex(pd.MultiIndex.from_arrays([design["name"], design["system_a"]])).to_numpy()
    a2 = text.reindex(pd.MultiIndex.from_arrays([design["name"], design["system_b"]])).to_numpy()
    if pd.isna(a1).any() or pd.isna(a2).any():
        raise DataError("the design names descriptions the table does not have: was it drawn from another table?")
    out = pd.DataFrame({
        "name": design["comparison"].to_numpy(), "media_name": design["name"].to_numpy(),
        "a1": a1, "a2": a2,
        "system_a": design["system_a"].to_numpy(), "system_b": design["system_b"].to_numpy(),
        "model1": design["system_a"].to_numpy(), "model2": design["system_b"].to_numpy(),
    })
    if human is not None:
        verdict = human.set_index("comparison")["winner"].map({"a": "a1", "b": "a2", "tie": "same"})
        out["preference"] = pd.Series(out["name"].map(verdict).to_numpy(), dtype=object).where(
            out["name"].isin(verdict.index), None)
    return out
