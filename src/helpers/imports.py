"""Bring predictions made elsewhere into the predictions store, as ordinary run folders.

Two sources:

``official``  the authors' released intermediate outputs (``EmoPrefer/output-matching/``), one
              ``.npz`` per judge x input type x strategy x order x round, written by their
              ``main_dpo_batch.py`` as ``np.savez_compressed(gt_labels=[...], pred_labels=[...])``:
              label strings in the **row order of the dataset CSV**, no names. The file name
              ``{model}-{input_type}-{kind}-{basefile}[reverse][-{llm}]-round{r}.npz`` says the
              rest (``kind``: ``normal`` S1, ``cot-answer`` S2, ``cot-answer2`` S3,
              ``cot-answer3`` S4; a ``reverse`` suffix on the dataset key marks the swapped order).
``table``     any predictions table (CSV, Parquet, JSONL) with ``name, order, round, strategy,
              pred`` and optionally ``raw``, for judges run with other code.

Since the files carry no sample names, the only link between a label and a pair is its row
number, so an official file is refused unless its ``gt_labels`` equal the dataset's labels row
for row (a file of another dataset, of the other order, with shuffled rows or from a truncated
debug run would otherwise be scored against the wrong pairs without a word). Files are read
with ``allow_pickle=False``: unpickling can run code, and answer files do not need it. The
description files (``...-cot-description-...``, ``...-cot-reasoning-...``) hold a Python dict and
are skipped unless the user passes ``allow_pickle=True`` for files they trust.

Rows have the columns of judged runs, so every analysis reads them; the manifest says where
they came from (``source``; the report labels cells by it and checks imported judges against the
paper's table in ``helpers.report.chapters``), which files (sha256) and against which data. Importing the same
files again changes nothing; other files into an existing run folder are refused unless
``overwrite``. Command line::

    python -m helpers.imports official DIR [--dataset emoprefer] [--output-dir DIR] [--overwrite] [--allow-pickle]
    python -m helpers.imports table FILE --judge NAME [--input-type TYPE] [--dataset emoprefer]
"""

from __future__ import annotations

import argparse
import re
import sys
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from helpers import paths
from helpers.data import (
    INPUT_TYPES,
    LABELS,
    ORDERS,
    PARQUET_SUFFIXES,
    DataError,
    data_sha256,
    dataset_spec,
    load_pairs,
    read_table,
    resolve_data_dir,
    scan_table,
    sha256_file,
)
from helpers.judges.registry import RegistryError, list_judges, load_spec
from helpers.run.identity import IdentityError, identity_changes, identity_sha256
from helpers.run.store import (
    RunManifest,
    RunSession,
    make_run_id,
    now,
    prediction_row,
    read_jsonl,
    read_manifest,
)
from helpers.run.strategies import STRATEGIES

OFFICIAL = "official-release"
TABLE = "imported-table"
JUDGED = "this study"
SOURCE_LABELS = {
    OFFICIAL: "computed here from the authors' released outputs",
    TABLE: "computed here from an imported predictions table",
    JUDGED: "this study",
}
KIND_STRATEGY = {"normal": "S1", "cot-answer": "S2", "cot-answer2": "S3", "cot-answer3": "S4"}
PICKLED_KINDS = ("cot-description", "cot-reasoning")  # name2description / name2reason dicts
FILE_PATTERN = re.compile(
    r"^(?P<model>[A-Za-z0-9_.]+?)-(?P<input_type>audiovideo|audio|video)-"
    r"(?P<kind>normal|cot-answer[23]?|cot-description|cot-reasoning)-(?P<basefile>[A-Za-z0-9_]+?)"
    r"(?:-(?P<llm>[A-Za-z0-9_.]+))?-round(?P<round>\d+)\.npz$"
)
TABLE_COLUMNS = ("name", "order", "round", "strategy", "pred")
UNPARSED_UNKNOWN = ("unknown: the released files hold the labels after the authors' parser, not the answers, so "
                    "which answers matched no rule (and fell to 'same') cannot be told; unparsed_pct is left empty")
TABLE_STRATEGIES = (*STRATEGIES, "-")
MAX_LISTED = 20
# What one input file may make the importer allocate: the dataset has a few thousand rows, so a
# label array or table 100x larger is a damaged or hostile file, refused from its header.
MAX_LABELS = 1_000_000  # labels per answer-file array
MAX_ARRAY_BYTES = 256 * 2**20  # decoded size of one answer-file array
MAX_TABLE_BYTES = 1 * 2**30  # size of a predictions table file
MAX_TABLE_ROWS = 5_000_000  # rows of a Parquet predictions table (read from its footer)
SAFE_JUDGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class ImportsError(ValueError):
    """Files that cannot be imported as asked; the message names file, row and problem."""


# --------------------------------------------------------------------------- official names


@dataclass(frozen=True)
class OfficialFile:
    """What an official file name says about its contents."""

    path: Path
    model: str
    input_type: str
    kind: str
    basefile: str
    llm: str | None
    round: int

    @property
    def order(self) -> str:
        return "reverse" if self.basefile.endswith("reverse") else "normal"

    @property
    def dataset(self) -> str:
        return self.basefile[: -len("reverse")] if self.order == "reverse" else self.basefile

    @property
    def strategy(self) -> str | None:
        return KIND_STRATEGY.get(self.kind)


def parse_official_name(path: str | Path) -> OfficialFile | None:
    """The parts of an official output file name, or None for a name the release never writes."""
    path = Path(path)
    match = FILE_PATTERN.match(path.name)
    if not match:
        return None
    parts = match.groupdict()
    return OfficialFile(path, parts["model"], parts["input_type"], parts["kind"], parts["basefile"],
                        parts["llm"], int(parts["round"]))


def official_models(path: str | Path | None = None) -> dict[str, dict]:
    """``params/official_models.yaml``: official model name -> ``{judge, paper}``, checked
    against the registry so a mapping never files answers under a judge that does not exist."""
    path = Path(path) if path else paths.params_dir() / "official_models.yaml"
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else {}
    known = set(list_judges())
    out = {}
    for model, entry in (raw or {}).items():
        entry = dict(entry or {})
        if entry.get("judge") and entry["judge"] not in known:
            raise ImportsError(f"{path}: {model!r} maps to judge {entry['judge']!r}, which has no params/models/ YAML")
        out[str(model)] = entry
    return out


def judge_name(model: str, mapping: dict[str, dict]) -> str:
    """The registry's name for an official model; an unknown model keeps its file name."""
    return mapping.get(model, {}).get("judge") or model


# --------------------------------------------------------------------------- reading files


def _label_list(array: np.ndarray, path: Path, key: str) -> list[str]:
    """A 1-D array of label strings as a list; anything else is refused, naming the row."""
    if array.ndim != 1:
        raise ImportsError(f"{path}: {key!r} has shape {array.shape}; expected one label per dataset row")
    if array.dtype.kind == "S":
        for row, value in enumerate(array.tolist()):
            try:
                value.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ImportsError(f"{path}: {key!r}, row {row}: {value[:20]!r} is not UTF-8 text (byte "
                                   f"0x{value[exc.start:exc.start + 1].hex().upper()}); the release writes the "
                                   f"strings {', '.join(LABELS)}") from None
        array = np.char.decode(array, "utf-8")
    if array.dtype.kind not in "UO":
        raise ImportsError(f"{path}: {key!r} holds {array.dtype} values; the release writes the strings "
                           f"{', '.join(LABELS)}")
    labels = [str(v) for v in array.tolist()]
    for row, value in enumerate(labels):
        if value not in LABELS:
            raise ImportsError(f"{path}: {key!r}, row {row}: {value!r} is not one of {', '.join(LABELS)}")
    return labels


def _array_header(archive: np.lib.npyio.NpzFile, key: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of one array of an .npz archive, read from its .npy header without
    decompressing the data (a small compressed file can hold gigabytes of labels)."""
    with archive.zip.open(f"{key}.npy") as handle:
        version = np.lib.format.read_magic(handle)
        shape, _, dtype = (np.lib.format.read_array_header_1_0(handle) if version == (1, 0)
                           else np.lib.format.read_array_header_2_0(handle))
    return shape, dtype


def _check_size(archive: np.lib.npyio.NpzFile, path: Path, key: str) -> None:
    """Refuse, before loading, an array with more labels or bytes than any answer file holds."""
    try:
        shape, dtype = _array_header(archive, key)
    except (KeyError, ValueError, OSError, zipfile.BadZipFile) as exc:
        raise ImportsError(f"{path}: {key!r} has no readable array header ({exc})") from None
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    size = count * max(dtype.itemsize, 1)
    if count > MAX_LABELS or size > MAX_ARRAY_BYTES:
        raise ImportsError(f"{path}: {key!r} holds {count:,} values ({size / 2**20:,.0f} MiB decoded); an answer file "
                           f"holds one label per dataset row (at most {MAX_LABELS:,} accepted): refused before loading")


def read_answer_file(path: str | Path, allow_pickle: bool = False) -> tuple[list[str], list[str]]:
    """``(gt_labels, pred_labels)`` of an official answer file, loaded without pickle unless
    the user explicitly allowed it."""
    path = Path(path)
    try:
        archive = np.load(path, allow_pickle=allow_pickle)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ImportsError(f"{path}: not a readable .npz file ({exc})") from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ImportsError(f"{path}: a single array, not the .npz archive of gt_labels and pred_labels the release writes")
    with archive:
        missing = [k for k in ("gt_labels", "pred_labels") if k not in archive.files]
        if missing:
            raise ImportsError(f"{path}: lacks {', '.join(missing)} (holds {', '.join(archive.files) or 'nothing'}); "
                               "an answer file holds gt_labels and pred_labels")
        arrays = {}
        for key in ("gt_labels", "pred_labels"):
            _check_size(archive, path, key)
            try:
                arrays[key] = archive[key]
            except ValueError as exc:  # numpy refuses object arrays when allow_pickle is False
                raise ImportsError(
                    f"{path}: {key!r} is an object array that loads only with pickle; refused, because "
                    "unpickling a file can run arbitrary code. The authors' answer files hold plain string "
                    "arrays; pass --allow-pickle only for a file you trust."
                ) from exc
    return _label_list(arrays["gt_labels"], path, "gt_labels"), _label_list(arrays["pred_labels"], path, "pred_labels")


def read_description_file(path: str | Path) -> dict[str, str]:
    """``name2description`` (or ``name2reason``) of a description file: needs pickle, so only
    called when the user passed ``allow_pickle``."""
    path = Path(path)
    with np.load(path, allow_pickle=True) as archive:
        key = next((k for k in ("name2description", "name2reason") if k in archive.files), None)
        if key is None:
            raise ImportsError(f"{path}: holds neither name2description nor name2reason ({', '.join(archive.files)})")
        mapping = archive[key].item()
    if not isinstance(mapping, dict):
        raise ImportsError(f"{path}: {key!r} is a {type(mapping).__name__}, not a dict of name -> text")
    return {str(k): str(v) for k, v in mapping.items()}


# --------------------------------------------------------------------------- the dataset's rows


def dataset_rows(dataset: str, order: str, data_dir: str | Path | None = None) -> pd.DataFrame:
    """``name, preference`` in the row order of the CSV the authors' code read for ``order``
    (the reverse file's own order, where it exists), validated by ``load_pairs``."""
    pairs = load_pairs(dataset, order, data_dir)[["name", "preference"]]
    spec = dataset_spec(dataset)
    role = "reverse" if order == "reverse" and "reverse" in spec.files else "normal"
    file = resolve_data_dir(dataset, data_dir) / spec.files[role]
    if file.is_file():
        names = read_table(file, ("name",), "data file")["name"]
        pairs = pairs.set_index("name").loc[names].reset_index()
    return pairs.assign(csv=file.name).reset_index(drop=True)


def check_alignment(path: Path, gt: list[str], pred: list[str], rows: pd.DataFrame) -> None:
    """Refuse a file whose ``gt_labels`` are not the dataset's labels in the dataset's row order,
    naming the first row that differs (or the first row missing)."""
    expected = rows["preference"].tolist()
    csv = rows["csv"].iloc[0] if len(rows) else "the dataset"
    common = min(len(gt), len(expected))
    differ = [i for i in range(common) if gt[i] != expected[i]]
    if differ:
        i = differ[0]
        raise ImportsError(
            f"{path}: gt_labels differ from {csv} at row {i} (sample {rows['name'].iloc[i]!r}, data record {i + 1}): "
            f"the file says {gt[i]!r}, the dataset {expected[i]!r}; {len(differ)} of {common} rows differ. "
            "A file of another dataset or order, or with reordered rows: refused, as its labels cannot be "
            "matched to pairs."
        )
    if len(gt) < len(expected):
        raise ImportsError(
            f"{path}: holds {len(gt)} gt_labels but {csv} has {len(expected)} rows; first missing row {len(gt)} "
            f"(sample {rows['name'].iloc[len(gt)]!r}). A truncated (debug or interrupted) run: refused."
        )
    if len(gt) > len(expected):
        raise ImportsError(f"{path}: holds {len(gt)} gt_labels but {csv} has only {len(expected)} rows "
                           f"(first extra row {len(expected)}): another dataset?")
    if len(pred) != len(gt):
        raise ImportsError(f"{path}: {len(gt)} gt_labels but {len(pred)} pred_labels; row {min(len(gt), len(pred))} "
                           "is the first without a partner (a truncated run?)")


# --------------------------------------------------------------------------- identity and writing


def run_identity(source: str, data_hashes: dict, judge: str, strategy: str, input_type: str,
                 files_sha256: dict[str, str]) -> dict:
    """What makes an imported run what it is: the same identity means the same rows. Kept in
    one place; compared with :func:`helpers.run.identity.identity_changes`, as judged runs are."""
    return {"source": source, "data_sha256": dict(sorted(data_hashes.items())), "judge": judge,
            "strategy": strategy, "input_type": input_type, "files_sha256": dict(sorted(files_sha256.items()))}


def _stored_cells(folder: Path) -> tuple[set[tuple], str]:
    """The judge cells a run folder holds (from its manifest, else its rows) and its source."""
    manifest = read_manifest(folder)
    if manifest is not None and manifest.judge:
        return {(manifest.judge, manifest.strategy, manifest.input_type)}, manifest.source or "judged here"
    rows = read_jsonl(folder / "predictions.jsonl")
    return {(r.get("judge"), r.get("strategy"), r.get("input_type")) for r in rows}, "judged here"


def check_no_clash(root: Path, cells: list[tuple[str, str, str, str]]) -> None:
    """Refuse an import whose judge cell (judge, strategy, input type) another run folder of the
    store already holds: the analyses key cells that way, so both would answer every row."""
    wanted: dict[tuple, str] = {}  # (judge, strategy, input_type) -> run id
    for run_id, *cell in cells:
        if tuple(cell) in wanted:
            raise ImportsError(f"{wanted[tuple(cell)]} and {run_id} would both hold {' '.join(cell)} (answers of two "
                               "text LLMs?); import them into separate stores (--output-dir); nothing imported.")
        wanted[tuple(cell)] = run_id
    for predictions in sorted(Path(root).glob("*/predictions.jsonl")):
        folder = predictions.parent
        held, source = _stored_cells(folder)
        for cell in sorted(c for c in held if c in wanted and wanted[c] != folder.name):
            raise ImportsError(
                f"{folder} already holds {' '.join(cell)} predictions ({source}); the analyses would see "
                "two answers for every pair. Import into another store (--output-dir) or move that folder "
                "away; nothing imported."
            )


def write_run(run_id: str, rows: list[dict], manifest: dict, root: Path, overwrite: bool = False) -> str:
    """One run folder from ``rows``, through the store's one lifecycle (``RunSession``):
    ``unchanged`` when the same import is already there (nothing is written), ``written`` for a
    new one, ``resumed`` for the same import interrupted, ``overwritten`` (only with
    ``overwrite``) for a changed one, whose old folder is moved aside to ``.replaced/``, never deleted."""
    manifest = dict(manifest)
    identity, keys, steps = manifest.pop("identity"), {r["key"] for r in rows}, manifest.pop("steps", None) or []

    def refuse(folder: Path, stored: RunManifest | None, now_identity: dict, done: set) -> None:
        if stored is None and not done:
            return
        changes = list(dict.fromkeys(field.split(".")[0] for field, _, _ in
                                     identity_changes(stored.identity if stored else None, now_identity)))
        if changes or done - keys:
            raise IdentityError(
                f"run folder {folder} already holds other predictions (different {', '.join(changes) or 'stored rows'}); "
                "importing would mix two sets of answers under one judge. Pass --overwrite to replace them (the "
                "old folder is moved to .replaced/), or --output-dir for another store.")

    try:
        session = RunSession(run_id, root, identity=identity, identity_sha256=identity_sha256(identity),
                             overwrite=overwrite, refuse=refuse).open()
    except IdentityError as exc:
        raise ImportsError(str(exc)) from None
    with session:
        if session.moved is not None:
            status = "overwritten"
        elif session.done == keys:
            return "unchanged"
        else:
            status = "resumed" if session.done else "written"
        session.start(manifest)
        session.append(rows)
        if steps and status != "resumed":
            session.append_steps(steps)
        session.close(frozenset(keys))
        return status


def _row(judge: str, strategy: str, input_type: str, order: str, rnd: int, name: str, gt: str, pred: str,
         run_id: str, dataset: str, llm: str | None, rule: str, raw: str | None, created: str) -> dict:
    """A predictions row with the columns the engine writes, so analyses cannot tell the two apart."""
    return prediction_row(judge=judge, strategy=strategy, input_type=input_type, order=order, round=int(rnd),
                          name=name, gt=gt, pred=pred, parse_rule=rule, raw=raw, run_id=run_id, dataset=dataset,
                          created_at=created, llm=llm)


class UnbalancedImportWarning(UserWarning):
    """An imported run lacks an order or has different rounds per order: some metrics will be
    computed from part of it (swap consistency from the rounds both orders have) or be missing."""


def rounds_per_order(files_or_rows: list[tuple[str, int]]) -> dict[str, list[int]]:
    """``order -> sorted round numbers`` of an import, both orders always present (maybe empty)."""
    out: dict[str, set[int]] = {order: set() for order in ORDERS}
    for order, rnd in files_or_rows:
        out[order].add(int(rnd))
    return {order: sorted(rounds) for order, rounds in out.items()}


def balance_note(run_id: str, rounds: dict[str, list[int]]) -> str | None:
    """What an unbalanced import means for its metrics (None when both orders have the same rounds)."""
    normal, reverse = rounds["normal"], rounds["reverse"]
    if normal == reverse:
        return None
    if not normal or not reverse:
        missing = "normal" if not normal else "reverse"
        return (f"{run_id}: only the {'reverse' if missing == 'normal' else 'normal'} order was imported "
                f"(rounds {', '.join(map(str, normal or reverse))}); swap consistency and the metrics of the "
                f"{missing} order cannot be computed for it, and tables that need both orders leave it out. "
                f"Import the {missing} order's files as well.")
    both = sorted(set(normal) & set(reverse))
    return (f"{run_id}: the orders have different rounds (normal {', '.join(map(str, normal))}; reverse "
            f"{', '.join(map(str, reverse))}); swap consistency is computed from round(s) "
            f"{', '.join(map(str, both)) or 'none'} only, and each order's mean over its own rounds. "
            "Import the missing rounds for balanced numbers.")


def _report_balance(run_id: str, rounds: dict[str, list[int]]) -> str | None:
    note = balance_note(run_id, rounds)
    if note:
        warnings.warn(note, UnbalancedImportWarning, stacklevel=3)
    return note


# --------------------------------------------------------------------------- official import


@dataclass
class Found:
    """The official files of a folder, sorted by what the import does with them."""

    answers: list[OfficialFile]
    descriptions: list[OfficialFile]
    other_dataset: list[OfficialFile]
    unrecognised: list[Path]


def find_official(folder: str | Path, dataset: str = "emoprefer") -> Found:
    """Every ``.npz`` under ``folder`` (recursively), classified by its name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImportsError(f"{folder}: not a folder (expected the release's output-matching/ folder)")
    found = Found([], [], [], [])
    for path in sorted(folder.rglob("*.npz")):
        parsed = parse_official_name(path)
        if parsed is None:
            found.unrecognised.append(path)
        elif parsed.dataset != dataset:
            found.other_dataset.append(parsed)
        elif parsed.kind in PICKLED_KINDS:
            found.descriptions.append(parsed)
        else:
            found.answers.append(parsed)
    return found


def _group_key(file: OfficialFile, mapping: dict) -> tuple[str, str, str, str | None]:
    return judge_name(file.model, mapping), file.strategy or "", file.input_type, file.llm


def official_run_id(judge: str, strategy: str, input_type: str, dataset: str, llm: str | None) -> str:
    """The run folder of an official import: the engine's id plus ``__official``, so it never
    shares a folder with a run judged here."""
    return make_run_id(judge, strategy, input_type, dataset, llm) + "__official"


def _read_checked(files: list[OfficialFile], dataset: str, data_dir, allow_pickle: bool) -> dict[Path, tuple]:
    """Every answer file read and aligned; all problems reported together, nothing written."""
    rows = {order: dataset_rows(dataset, order, data_dir) for order in ORDERS}
    read, problems = {}, []
    for file in files:
        try:
            gt, pred = read_answer_file(file.path, allow_pickle)
            check_alignment(file.path, gt, pred, rows[file.order])
            read[file.path] = (gt, pred, rows[file.order]["name"].tolist())
        except ImportsError as exc:
            problems.append(str(exc))
    if problems:
        raise ImportsError(f"{len(problems)} of {len(files)} official file(s) refused; nothing imported:\n  "
                           + "\n  ".join(problems))
    return read


def _description_steps(files: list[OfficialFile], judge: str, input_type: str) -> list[dict]:
    """The S2 descriptions of trusted description files, as step records of the S2 run."""
    steps = []
    for file in files:
        if file.kind != "cot-description":
            continue
        for name, text in sorted(read_description_file(file.path).items()):
            steps.append({"key": f"official-describe|{judge}|{input_type}|{name}|{file.order}|r{file.round}",
                          "step": "describe", "judge": judge, "input_type": input_type, "name": name,
                          "order": file.order, "round": file.round, "text": text, "source": OFFICIAL})
    return steps


def import_official(folder: str | Path, dataset: str = "emoprefer", output_dir: str | Path | None = None,
                    data_dir: str | Path | None = None, overwrite: bool = False, allow_pickle: bool = False,
                    mapping: dict[str, dict] | None = None) -> pd.DataFrame:
    """Import every official answer file of ``dataset`` under ``folder``; one summary row per
    run folder (``status``: written / unchanged / resumed / overwritten). Notes on skipped files are
    printed, never silently dropped."""
    mapping = official_models() if mapping is None else mapping
    found = find_official(folder, dataset)
    _print_skipped(found, dataset, allow_pickle)
    if not found.answers:
        raise ImportsError(f"{folder}: no official answer files for dataset {dataset!r} "
                           "(names like qwen25omni_7b-audiovideo-normal-emoprefer-round0.npz)")
    read = _read_checked(found.answers, dataset, data_dir, allow_pickle)
    root = Path(output_dir) if output_dir is not None else paths.predictions_dir()
    hashes = data_sha256(dataset, data_dir)
    groups: dict[tuple, list[OfficialFile]] = {}
    for file in found.answers:
        groups.setdefault(_group_key(file, mapping), []).append(file)
    check_no_clash(root, [(official_run_id(j, st, it, dataset, llm), j, st, it) for j, st, it, llm in groups])
    summaries = []
    for (judge, strategy, input_type, llm), files in sorted(groups.items(), key=lambda kv: str(kv[0])):
        seen: dict[tuple, Path] = {}
        for file in files:
            if (file.order, file.round) in seen:
                raise ImportsError(f"{file.path} and {seen[(file.order, file.round)]}: both hold {judge} {strategy} "
                                   f"{file.order} round {file.round}; keep one")
            seen[(file.order, file.round)] = file.path
        descriptions = [d for d in found.descriptions if judge_name(d.model, mapping) == judge
                        and d.input_type == input_type] if allow_pickle and strategy == "S2" else []
        summaries.append(_import_group(judge, strategy, input_type, llm, files, descriptions, read, dataset,
                                       hashes, root, overwrite))
    return pd.DataFrame(summaries)


def _import_group(judge, strategy, input_type, llm, files, descriptions, read, dataset, hashes, root, overwrite) -> dict:
    run_id = official_run_id(judge, strategy, input_type, dataset, llm)
    created = now()
    rows = []
    for file in sorted(files, key=lambda f: (f.order, f.round)):
        gt, pred, names = read[file.path]
        rows += [_row(judge, strategy, input_type, file.order, file.round, n, g, p, run_id, dataset, llm,
                      OFFICIAL, None, created) for n, g, p in zip(names, gt, pred, strict=True)]
    rounds = rounds_per_order([(f.order, f.round) for f in files])
    note = _report_balance(run_id, rounds)
    every = sorted(files + descriptions, key=lambda f: f.path.name)
    shas = {f.path.name: sha256_file(f.path) for f in every}
    manifest = {
        "judge": judge, "strategy": strategy, "input_type": input_type, "dataset": dataset, "llm": llm,
        "source": OFFICIAL, "source_label": SOURCE_LABELS[OFFICIAL], "official_model": files[0].model,
        "identity": run_identity(OFFICIAL, hashes, judge, strategy, input_type, shas),
        "files": [{"file": f.path.name, "path": str(f.path.resolve()), "sha256": shas[f.path.name], "order": f.order,
                   "round": f.round, "kind": f.kind} for f in every],
        "orders": sorted({f.order for f in files}), "rounds": len({f.round for f in files}),
        "round_numbers": sorted({f.round for f in files}), "rounds_per_order": rounds, "balance_note": note,
        "data_sha256": hashes, "unparsed": UNPARSED_UNKNOWN,
        "parameters": {"model": judge, "strategy": strategy, "input_type": input_type, "dataset": dataset,
                       "judge_llm": llm, "source": OFFICIAL},
        "importer": "python -m helpers.imports official",
        "steps": _description_steps(descriptions, judge, input_type),
    }
    status = write_run(run_id, rows, manifest, root, overwrite)
    return {"run_id": run_id, "judge": judge, "strategy": strategy, "input_type": input_type, "llm": llm,
            "files": len(files), "rows": len(rows), "status": status,
            **{f"rounds_{order}": len(rounds[order]) for order in ORDERS}, "note": note or "",
            "folder": str(root / run_id)}


def _print_skipped(found: Found, dataset: str, allow_pickle: bool) -> None:
    if found.descriptions and not allow_pickle:
        print(f"note: skipped {len(found.descriptions)} description/reasoning file(s) (e.g. "
              f"{found.descriptions[0].path.name}): they hold Python dicts that load only with pickle, which "
              "can run code; pass --allow-pickle to import the S2 descriptions of files you trust")
    if found.other_dataset:
        print(f"note: skipped {len(found.other_dataset)} file(s) of other datasets than {dataset!r} (e.g. "
              f"{found.other_dataset[0].path.name}); pass --dataset to import those")
    if found.unrecognised:
        print(f"note: skipped {len(found.unrecognised)} .npz file(s) whose names the release never writes: "
              + ", ".join(p.name for p in found.unrecognised[:MAX_LISTED]))


# --------------------------------------------------------------------------- table import


def read_prediction_table(path: str | Path) -> tuple[pd.DataFrame, str]:
    """A predictions table and how its rows are cited in errors: CSV and Parquet through the one
    reader of a user's table (:func:`helpers.data.scan_table`: UTF-8, field size, duplicate
    headers), JSONL line by line."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise ImportsError(f"{path}: no such file")
    if path.stat().st_size > MAX_TABLE_BYTES:
        raise ImportsError(f"{path}: {path.stat().st_size / 2**30:.1f} GiB; a predictions table of this dataset is "
                           f"far smaller (at most {MAX_TABLE_BYTES // 2**30} GiB accepted)")
    if suffix in (".jsonl", ".ndjson"):
        try:
            return pd.DataFrame(read_jsonl(path)), "jsonl"
        except (ValueError, OSError, UnicodeDecodeError) as exc:
            raise ImportsError(f"{path}: cannot be read ({type(exc).__name__}: {str(exc)[:200]})") from None
    if suffix not in (".csv", *PARQUET_SUFFIXES):
        raise ImportsError(f"{path}: unknown table type {suffix!r}; use .csv, .parquet or .jsonl")
    if suffix in PARQUET_SUFFIXES:
        _check_parquet_rows(path)
    table, problems = scan_table(path)
    if problems:
        raise ImportsError(f"{len(problems)} problem(s) in {path}; nothing imported:\n  "
                           + "\n  ".join(str(p) for p in problems[:MAX_LISTED]))
    return table, "csv" if suffix == ".csv" else "parquet"


def _check_parquet_rows(path: Path) -> None:
    """Refuse a Parquet table with more rows than any predictions table has, from its footer."""
    try:
        import pyarrow.parquet as pq

        rows = pq.ParquetFile(path).metadata.num_rows
    except Exception:  # noqa: BLE001 - not Parquet: scan_table says so with the reason
        return
    if rows > MAX_TABLE_ROWS:
        raise ImportsError(f"{path}: {rows:,} rows; at most {MAX_TABLE_ROWS:,} accepted")


def _where(table: pd.DataFrame, path: Path, kind: str, index: int) -> str:
    if kind == "csv":
        return f"{path}, line {table['csv_line'].iloc[index]}"
    return f"{path}, line {index + 1}" if kind == "jsonl" else f"{path}, row {index}"


def _as_round(value) -> int | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number.is_integer() and number >= 0 else None


def check_table(table: pd.DataFrame, path: Path, kind: str, names: set[str]) -> list[str]:
    """Every problem of a predictions table, each with file, line or row, and column."""
    missing = [c for c in TABLE_COLUMNS if c not in table.columns]
    if missing:
        return [f"{path}: missing column(s) {', '.join(missing)}; need {', '.join(TABLE_COLUMNS)} (optional raw)"]
    rules = (("order", lambda v: v in ORDERS, f"not one of {', '.join(ORDERS)}"),
             ("strategy", lambda v: v in TABLE_STRATEGIES, f"not one of {', '.join(TABLE_STRATEGIES)}"),
             ("pred", lambda v: v in LABELS, f"not one of {', '.join(LABELS)}"),
             ("round", lambda v: _as_round(v) is not None, "not a whole number >= 0"),
             ("name", lambda v: str(v) in names, "not a sample of the dataset"))
    problems = []
    for column, ok, rule in rules:
        bad = [i for i, v in enumerate(table[column]) if not ok(v)]
        problems += [f"{_where(table, path, kind, i)}, column '{column}': {table[column].iloc[i]!r} {rule}"
                     for i in bad[:MAX_LISTED]]
        if len(bad) > MAX_LISTED:
            problems.append(f"{path}, column '{column}': … and {len(bad) - MAX_LISTED} more such rows")
    return problems or _duplicates_and_gaps(table, path, kind, names)


def _duplicates_and_gaps(table: pd.DataFrame, path: Path, kind: str, names: set[str]) -> list[str]:
    keys = table.assign(round=table["round"].map(_as_round), name=table["name"].astype(str))
    keys = keys[["strategy", "order", "round", "name"]]
    problems = []
    first: dict[tuple, int] = {}
    for i, key in enumerate(keys.itertuples(index=False, name=None)):
        if key in first:
            problems.append(f"{_where(table, path, kind, i)}: duplicate of {_where(table, path, kind, first[key]).split(', ')[-1]} "
                            f"(strategy {key[0]}, order {key[1]}, round {key[2]}, name {key[3]!r})")
        first.setdefault(key, i)
    for (strategy, order, rnd), part in keys.groupby(["strategy", "order", "round"], sort=True):
        absent = sorted(names - set(part["name"]))
        if absent:
            problems.append(f"{path}: strategy {strategy}, order {order}, round {rnd} lacks {len(absent)} sample(s): "
                            + ", ".join(absent[:MAX_LISTED]) + (" …" if len(absent) > MAX_LISTED else ""))
    return problems


def _table_input_type(table: pd.DataFrame, judge: str, input_type: str | None, path: Path) -> str:
    if input_type is None:
        try:
            input_type = load_spec(judge).input_type
        except RegistryError:
            raise ImportsError(f"{path}: judge {judge!r} is not in params/models/; pass --input-type "
                               f"({', '.join(INPUT_TYPES)})") from None
    if input_type not in INPUT_TYPES:
        raise ImportsError(f"input type {input_type!r} is not one of {', '.join(INPUT_TYPES)}")
    return input_type


def table_run_id(judge: str, strategy: str, input_type: str, dataset: str) -> str:
    """The run folder of a table import: the engine's id plus ``__imported``."""
    return make_run_id(judge, strategy, input_type, dataset) + "__imported"


def import_table(path: str | Path, judge: str, dataset: str = "emoprefer", input_type: str | None = None,
                 output_dir: str | Path | None = None, data_dir: str | Path | None = None,
                 overwrite: bool = False) -> pd.DataFrame:
    """Import a predictions table of ``judge`` (one run folder per strategy); refuses the whole
    table, listing every problem, before anything is written."""
    path = Path(path)
    table, kind = read_prediction_table(path)
    if table.empty:
        raise ImportsError(f"{path}: holds no predictions (no rows{' below the header' if len(table.columns) else ''}); "
                           f"a table needs one row per prediction with columns {', '.join(TABLE_COLUMNS)}")
    input_type = _table_input_type(table, judge, input_type, path)
    gts = {order: dict(zip(*(dataset_rows(dataset, order, data_dir)[c] for c in ("name", "preference")), strict=True))
           for order in ORDERS}
    problems = check_table(table, path, kind, set(gts["normal"]))
    if problems:
        raise ImportsError(f"{len(problems)} problem(s) in {path}; nothing imported:\n  " + "\n  ".join(problems))
    root = Path(output_dir) if output_dir is not None else paths.predictions_dir()
    hashes = data_sha256(dataset, data_dir)
    sha = sha256_file(path)
    created = now()
    check_no_clash(root, [(table_run_id(judge, st, input_type, dataset), judge, st, input_type)
                          for st in sorted(table["strategy"].unique())])
    summaries = []
    for strategy, part in table.groupby("strategy", sort=True):
        run_id = table_run_id(judge, strategy, input_type, dataset)
        raws = part["raw"] if "raw" in part.columns else [None] * len(part)
        rounds = rounds_per_order(list(zip(part["order"], part["round"].map(_as_round), strict=True)))
        note = _report_balance(run_id, rounds)
        rows = [_row(judge, strategy, input_type, r.order, _as_round(r.round), str(r.name), gts[r.order][str(r.name)],
                     r.pred, run_id, dataset, None, "imported", None if raw is None or pd.isna(raw) else str(raw), created)
                for r, raw in zip(part.itertuples(index=False), raws, strict=True)]
        manifest = {
            "judge": judge, "strategy": strategy, "input_type": input_type, "dataset": dataset, "llm": None,
            "source": TABLE, "source_label": SOURCE_LABELS[TABLE],
            "identity": run_identity(TABLE, hashes, judge, strategy, input_type, {path.name: sha}),
            "files": [{"file": path.name, "path": str(path.resolve()), "sha256": sha}],
            "orders": sorted(part["order"].unique()), "rounds": int(part["round"].map(_as_round).nunique()),
            "rounds_per_order": rounds, "balance_note": note,
            "data_sha256": hashes, "importer": "python -m helpers.imports table",
            "parameters": {"model": judge, "strategy": strategy, "input_type": input_type, "dataset": dataset,
                           "source": TABLE},
        }
        status = write_run(run_id, rows, manifest, root, overwrite)
        summaries.append({"run_id": run_id, "judge": judge, "strategy": strategy, "input_type": input_type,
                          "files": 1, "rows": len(rows), "status": status,
                          **{f"rounds_{order}": len(rounds[order]) for order in ORDERS}, "note": note or "",
                          "folder": str(root / run_id)})
    return pd.DataFrame(summaries)


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.imports", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    official = sub.add_parser("official", help="import the authors' output-matching/*.npz files")
    official.add_argument("folder")
    official.add_argument("--allow-pickle", action="store_true",
                          help="also load files that need pickle (description files): UNPICKLING CAN RUN CODE, "
                               "use only for files you trust")
    table = sub.add_parser("table", help="import a CSV/Parquet/JSONL predictions table of one judge")
    table.add_argument("file")
    table.add_argument("--judge", required=True)
    table.add_argument("--input-type", default=None, choices=INPUT_TYPES)
    for each in (official, table):
        each.add_argument("--dataset", default="emoprefer")
        each.add_argument("--output-dir", default=None, help="predictions store root (default data/predictions)")
        each.add_argument("--data-dir", default=None, help="folder with the dataset CSVs")
        each.add_argument("--overwrite", action="store_true", help="replace a run folder that holds other predictions")
    args = parser.parse_args(argv)
    if args.command == "table" and not (SAFE_JUDGE.fullmatch(args.judge) and ".." not in args.judge
                                        and "__" not in args.judge):
        parser.error(f"argument --judge: {args.judge!r} is not a judge name (letters, digits, '_', '.', '-'; "
                     "it names the run folder)")
    if args.output_dir is not None and Path(args.output_dir).exists() and not Path(args.output_dir).is_dir():
        parser.error(f"argument --output-dir: {args.output_dir} is a file; name the predictions store's folder")
    try:
        if args.command == "official":
            summary = import_official(args.folder, args.dataset, args.output_dir, args.data_dir, args.overwrite,
                                      args.allow_pickle)
        else:
            summary = import_table(args.file, args.judge, args.dataset, args.input_type, args.output_dir,
                                   args.data_dir, args.overwrite)
    except (ImportsError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(summary.drop(columns="folder").to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
