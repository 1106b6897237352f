"""The predictions store read for analysis: every run's rows, checked, and scored against the
data files as they are now (each run's manifest says which data it was made on).

This is where the store (``helpers.run.store``, ``helpers.run.identity``) meets the metrics
(``helpers.stats.metrics``, which only computes on tables and never reads files).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd

from helpers import paths
from helpers.data import DataError, data_sha256, dataset_spec, load_pairs
from helpers.run import store
from helpers.run.identity import label_files
from helpers.stats.metrics import check_predictions


def load_predictions(root: str | Path | None = None, dataset: str | None = None,
                     data_dir: str | Path | None = None) -> pd.DataFrame:
    """All runs of the predictions store (read by ``helpers.run.store``), checked for analysis.

    With ``dataset``: only that dataset's rows, scored against its files as they are now
    (:func:`score_against_data`), so a label is never taken from a stale store."""
    table = store.load_predictions(root)
    if table.empty:
        return table
    table = table.astype({"round": int, "name": str, "strategy": str})
    if dataset is not None:
        if "dataset" in table.columns:
            table = table[table["dataset"].fillna(dataset) == dataset]
        if table.empty:
            return table.reset_index(drop=True)
        table = score_against_data(table, root, dataset, data_dir)
    return check_predictions(table.reset_index(drop=True), f"predictions under {root or paths.predictions_dir()}")


def _run_data_hashes(folder: Path) -> dict[str, str] | None:
    """The data hashes a run folder's manifest records (its identity's, else the older key)."""
    manifest = store.read_manifest(folder)
    if manifest is None:
        return None
    return (manifest.get("identity") or {}).get("data_sha256") or manifest.get("data_sha256")


def score_against_data(table: pd.DataFrame, root: str | Path | None, dataset: str,
                       data_dir: str | Path | None = None) -> pd.DataFrame:
    """Replace ``gt`` by the labels of the data being scored, after checking that every run was
    made on these very data files (sha256 of the normal and reverse files, from each run's
    manifest). A run made on other data is refused by name; a folder without a manifest (a
    hand-written table) cannot be checked and gets a warning, but still the current labels."""
    root = Path(root) if root is not None else paths.predictions_dir()
    files = dataset_spec(dataset).files
    current = label_files(data_sha256(dataset, data_dir), files)
    unchecked = []
    for run_id in sorted(table["run_id"].dropna().astype(str).unique()):
        stored = _run_data_hashes(root / run_id)
        if stored is None:
            unchecked.append(run_id)
            continue
        stored = label_files(stored, files)
        if stored != current:
            changed = ", ".join(f"{f}: {str(stored.get(f))[:12]} -> {str(current.get(f))[:12]}"
                                for f in sorted(set(stored) | set(current)) if stored.get(f) != current.get(f))
            raise DataError(
                f"run {run_id} (under {root}) was made on other {dataset} data than the data being scored "
                f"({changed}); its texts and labels may differ. Re-run the judge on these data "
                "(engine.run(..., overwrite=True), or another output_dir), or score with data_dir pointing at "
                "the data the run was made on.")
    if unchecked:
        warnings.warn(f"run folder(s) {', '.join(unchecked[:5])} under {root} have no manifest: which data they "
                      f"were made on cannot be checked; scored with the labels of the current {dataset} data",
                      stacklevel=2)
    labels = {order: load_pairs(dataset, order, data_dir).set_index("name")["preference"]
              for order in ("normal", "reverse")}
    gt = [labels[o].get(n) if o in labels else None for o, n in zip(table["order"], table["name"], strict=True)]
    unknown = [n for n, g in zip(table["name"], gt, strict=True) if g is None]
    if unknown:
        raise DataError(f"{len(unknown)} prediction(s) under {root} name samples that are not in the {dataset} data "
                        f"(e.g. {unknown[0]!r}); they cannot be scored against it")
    return table.assign(gt=gt)
