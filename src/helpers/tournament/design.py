"""Which comparisons a tournament judges: a seeded pair design, stored with its identity.

A design is drawn from one table with one budget and one seed, and its ``manifest.json`` records
all three (the table as a content hash). Judging and ranking check that identity before they use
a stored design (:func:`check_design`): a table with a new system or an edited text, or another
``--budget``/``--seed``, would otherwise reuse the old ``design.csv`` silently and leave the new
system out of the leaderboard.

``design.csv`` is written first and atomically (a temporary file renamed into place), then the
manifest, which records the design file's SHA-256: the manifest is the commit of a draw. A
design file cut short, edited by hand, or left without its manifest by a killed draw is refused
by :func:`read_design` with the command that redraws it, never judged or ranked silently.
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
from helpers.digest import sha256_hex
from helpers.run.store import STORAGE_ERRNOS, StorageError, storage_message, write_atomic, write_json_atomic
from helpers.tournament.table import SEPARATOR, entries_sha256, system_id

DESIGN_FILE = "design.csv"
MANIFEST_FILE = "manifest.json"
DESIGN_COLUMNS = ("comparison", "name", "system_a", "system_b")


DESIGN_KINDS = ("round_robin", "budget", "adaptive")
STOPS = (None, "separated", "futile", "budget", "exhausted")


@dataclass(frozen=True)
class DesignManifest:
    """The typed record of a design's ``manifest.json``: how it was drawn (kind, budget, seed; an
    adaptive design also its batch size, limit, level, the judging that drives it, its batches
    and why it stopped) and what it was drawn from (the table's hash, systems, samples), with
    the design file's SHA-256 that commits the draw. Not a run manifest (a design folder is no
    run): its own record, read by :meth:`from_json` (every field checked, a clear DataError
    naming the field otherwise) and written by :func:`write_design`."""

    design: str
    seed: int
    systems: list
    n_samples: int
    entries_sha256: str
    n_comparisons: int | None = None
    budget: int | None = None
    orders: list = field(default_factory=lambda: ["normal", "reverse"])
    design_sha256: str | None = None
    comparisons_per_pair_min: int | None = None
    comparisons_per_pair_max: int | None = None
    batch_size: int | None = None
    max_comparisons: int | None = None
    level: float | None = None
    judge: str | None = None
    strategy: str | None = None
    rounds: int | None = None
    input_type: str | None = None
    judge_llm: str | None = None
    training: str | None = None
    batches: list | None = None
    stopped: str | None = None
    given: tuple = ()  # the keys the manifest holds, in its order (written back as given)

    TYPES = {"design": str, "seed": int, "systems": list, "n_samples": int, "entries_sha256": str,
             "n_comparisons": int, "budget": int, "orders": list, "design_sha256": str,
             "comparisons_per_pair_min": int, "comparisons_per_pair_max": int, "batch_size": int,
             "max_comparisons": int, "level": float, "judge": str, "strategy": str, "rounds": int,
             "input_type": str, "judge_llm": str, "training": str, "batches": list, "stopped": str}
    REQUIRED = ("design", "seed", "systems", "n_samples", "entries_sha256")

    @classmethod
    def from_json(cls, data: dict, where: str | Path) -> DesignManifest:
        """The record of ``data``; an unknown key, a missing required one or a value of the wrong
        type is a DataError naming the file and the field (a hand-edited or foreign manifest)."""
        problems = [f"field {key!r} is missing" for key in cls.REQUIRED if key not in data]
        for key, value in data.items():
            kind = cls.TYPES.get(key)
            if kind is None:
                problems.append(f"unknown field {key!r}")
            elif value is not None and not (isinstance(value, kind) and not isinstance(value, bool)
                                            or kind is float and isinstance(value, int) and not isinstance(value, bool)):
                problems.append(f"field {key!r} is {value!r}, not a {kind.__name__}")
        if data.get("design") not in DESIGN_KINDS:
            problems.append(f"field 'design' is {data.get('design')!r}, not one of {', '.join(DESIGN_KINDS)}")
        if data.get("stopped") not in STOPS:
            problems.append(f"field 'stopped' is {data.get('stopped')!r}, not one of {', '.join(map(str, STOPS[1:]))}")
        if problems:
            raise DataError(f"{where}: not a design manifest this version can read: " + "; ".join(problems))
        return cls(**data, given=tuple(data))

    def to_json(self) -> dict:
        return {key: getattr(self, key) for key in self.given}


@dataclass
class Design:
    """Which comparisons to judge (one row each: ``comparison, name, system_a, system_b``) and how
    they were drawn (``manifest``: kind, budget, seed, counts, table hash)."""

    pairs: pd.DataFrame
    manifest: dict = field(default_factory=dict)


def comparison_id(name: str, system_a: str, system_b: str) -> str:
    """The id of one comparison (a safe name: it names store rows), from the sample and the
    two systems' display names (through :func:`~helpers.tournament.table.system_id`)."""
    return f"{name}{SEPARATOR}{system_id(system_a)}{SEPARATOR}vs{SEPARATOR}{system_id(system_b)}"


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


def design_bytes(pairs: pd.DataFrame) -> bytes:
    """``design.csv`` as written (and hashed): the same pairs give the same bytes."""
    return pairs.to_csv(index=False, lineterminator="\n").encode("utf-8")


def write_design(design: Design, folder: str | Path) -> Path:
    """``design.csv`` then ``manifest.json`` (recording the design's SHA-256) in ``folder``, each
    atomically; the folder must not be a file."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DataError(f"--out {folder} is a file, not a folder: name a folder for the tournament")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if exc.errno in STORAGE_ERRNOS:
            raise StorageError(storage_message(folder, exc, "create the folder")) from exc
        raise
    data = design_bytes(design.pairs)
    design.manifest["design_sha256"] = sha256_hex(data)
    record = DesignManifest.from_json(design.manifest, folder / MANIFEST_FILE)  # only what the record allows
    write_atomic(folder / DESIGN_FILE, data, durable=True)  # whole or not at all, on disk before its manifest
    write_json_atomic(folder / MANIFEST_FILE, record.to_json())  # after the design, whose hash it commits
    return folder


def has_design(folder: str | Path) -> bool:
    return (Path(folder) / DESIGN_FILE).is_file()


def _redraw(folder: Path) -> str:
    return (f"redraw it with 'python -m helpers.tournament design TABLE --out {folder} --overwrite' "
            "(add the --budget/--seed it was drawn with)")


def read_manifest_file(folder: Path) -> dict:
    """The design's manifest; missing, unreadable or not a JSON object is a DataError naming it."""
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise DataError(f"{folder}: {DESIGN_FILE} has no {MANIFEST_FILE} (a draw was interrupted, or the file was "
                        f"deleted), so it cannot be trusted; {_redraw(folder)}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); {_redraw(folder)}") from None
    if not isinstance(manifest, dict):
        raise DataError(f"{path}: expected a JSON object, found {type(manifest).__name__}; {_redraw(folder)}")
    try:
        return DesignManifest.from_json(manifest, path).to_json()
    except DataError as exc:
        raise DataError(f"{exc}; {_redraw(folder)}") from None


def read_design(folder: str | Path) -> Design:
    """The stored design, verified: a folder without one is a clear error that says how to draw
    it; a design whose bytes do not hash to what its manifest recorded (cut short, edited) or
    that does not parse is refused with the command that redraws it."""
    folder = Path(folder)
    if not has_design(folder):
        raise DataError(f"{folder}: no {DESIGN_FILE} (no design drawn here yet); draw one first with "
                        f"'python -m helpers.tournament design TABLE --out {folder}'")
    manifest = read_manifest_file(folder)
    data = (folder / DESIGN_FILE).read_bytes()
    recorded = manifest.get("design_sha256")
    if recorded is None:
        raise DataError(f"{folder / MANIFEST_FILE} records no design_sha256 (drawn by an older version), so "
                        f"{DESIGN_FILE} cannot be verified; {_redraw(folder)}")
    if sha256_hex(data) != recorded:
        rows = data.count(b"\n") - 1
        raise DataError(f"{folder / DESIGN_FILE} was changed after it was drawn (truncated or edited: {rows} rows, "
                        f"the manifest records {manifest.get('n_comparisons')}; its SHA-256 differs from the "
                        f"manifest's); {_redraw(folder)}")
    pairs = pd.read_csv(folder / DESIGN_FILE, dtype=str, keep_default_na=False)
    missing = [c for c in DESIGN_COLUMNS if c not in pairs.columns]
    if missing:
        raise DataError(f"{folder / DESIGN_FILE} lacks column(s) {', '.join(missing)}; {_redraw(folder)}")
    if "batch" in pairs.columns:
        pairs["batch"] = pairs["batch"].astype(int)
    return Design(pairs, manifest)


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
    """The ways out of a design mismatch, as commands the user can paste. A budget or
    round-robin design is redrawn by ``design`` (keeping the stored budget and seed except where
    the user asked for others); an adaptive design is drawn by ``judge --adaptive`` as it
    judges, so its way out is a new folder."""
    if manifest.get("design") == "adaptive" or (asked or {}).get("design") == "adaptive":
        return (f"An adaptive design is drawn while it is judged: continue it with the settings it records "
                f"(see {Path(folder) / MANIFEST_FILE}), or start a new one with the same judge command and a new "
                f"--out folder (or move {folder} aside).")
    settings = {"budget": manifest.get("budget"), "seed": manifest.get("seed")}
    settings.update({key: value for key, value in (asked or {}).items() if key in settings})
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
    if "batch" in design.columns:
        out["batch"] = design["batch"].to_numpy()
    if human is not None:
        verdict = human.set_index("comparison")["winner"].map({"a": "a1", "b": "a2", "tie": "same"})
        out["preference"] = pd.Series(out["name"].map(verdict).to_numpy(), dtype=object).where(
            out["name"].isin(verdict.index), None)
    return out


# --------------------------------------------------------------------------- adaptive designs


def candidates(entries: pd.DataFrame) -> pd.DataFrame:
    """Every comparison a design could draw: each sample's pairs of systems that both describe it."""
    rows = [(comparison_id(name, a, b), name, a, b)
            for name, systems in _systems_by_sample(entries).items() for a, b in combinations(systems, 2)]
    return pd.DataFrame(rows, columns=list(DESIGN_COLUMNS))


def adaptive_manifest(entries: pd.DataFrame, batch_size: int, max_comparisons: int, seed: int, level: float,
                      judging: dict | None = None) -> dict:
    """What an adaptive design is drawn from, including the judging that drives it (``judging``:
    judge, strategy, rounds, ... : another judge's verdicts would draw other batches, so a
    design is continued only with the same judging); its ``batches`` list grows by one entry per batch."""
    return {"design": "adaptive", "budget": None, "seed": seed, "batch_size": batch_size,
            "max_comparisons": max_comparisons, "level": level, **(judging or {}),
            "n_samples": int(entries["name"].nunique()),
            "systems": sorted(entries["system"].unique()), "entries_sha256": entries_sha256(entries),
            "orders": ["normal", "reverse"], "batches": [], "stopped": None}


def next_batch(design: Design, entries: pd.DataFrame, weights: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
               systems: list[str], reason: str) -> Design:
    """The design with one more batch of ``batch_size`` comparisons (fewer only when the budget
    or the table runs out), drawn without replacement among the comparisons not yet in the
    design: uniformly for the first batch (``weights`` None), later with each comparison weighted
    by its system pair's weight (:func:`helpers.stats.bt.pair_weights`: ``(i, j, weight)``,
    indices into ``systems``) shared among that pair's remaining comparisons, so a pair whose
    comparisons run out passes its share on instead of shrinking the batch. Seeded by the
    design's seed and the batch's number, so the same verdicts give the same batches."""
    manifest = dict(design.manifest)
    k = len(manifest["batches"])
    rng = np.random.default_rng([manifest["seed"], k])
    pool = candidates(entries)
    pool = pool[~pool["comparison"].isin(set(design.pairs["comparison"]))] if len(design.pairs) else pool
    pool = pool.reset_index(drop=True)
    size = min(manifest["batch_size"], manifest["max_comparisons"] - len(design.pairs), len(pool))
    if weights is None or not len(pool):
        p = None
    else:
        m, index = len(systems), {s: n for n, s in enumerate(systems)}
        i, j, w = weights
        matrix = np.zeros((m, m))
        matrix[i, j] = w
        a, b = pool["system_a"].map(index).to_numpy(), pool["system_b"].map(index).to_numpy()
        code = np.minimum(a, b) * m + np.maximum(a, b)
        p = matrix.ravel()[code] / np.bincount(code, minlength=m * m)[code]  # a pair's weight shared by its comparisons
        p = p / p.sum()
    chosen = pool.iloc[np.sort(rng.choice(len(pool), size=size, replace=False, p=p))] if size > 0 else pool.iloc[:0]
    chosen = chosen.assign(batch=k)
    pairs = pd.concat([design.pairs, chosen], ignore_index=True) if len(design.pairs) else chosen.reset_index(drop=True)
    manifest["batches"] = [*manifest["batches"], {"batch": k, "rule": reason, "n_comparisons": len(chosen)}]
    manifest["n_comparisons"] = len(pairs)
    return Design(pairs.reset_index(drop=True), manifest)


def remaining_by_pair(design: Design, entries: pd.DataFrame, systems: list[str]) -> np.ndarray:
    """Comparisons not yet in the design per system pair ``i < j`` (order of ``np.triu_indices``):
    what the next batch could still spend on each pair."""
    pool = candidates(entries)
    pool = pool[~pool["comparison"].isin(set(design.pairs["comparison"]))]
    index = {s: n for n, s in enumerate(systems)}
    a, b = pool["system_a"].map(index).to_numpy(), pool["system_b"].map(index).to_numpy()
    m = len(systems)
    counts = np.zeros((m, m))
    np.add.at(counts, (np.minimum(a, b), np.maximum(a, b)), 1)
    return counts[np.triu_indices(m, k=1)]
