"""The predictions store read for analysis: every run's rows, checked, and scored against the
data files as they are now (each run's manifest says which data it was made on).

One reader serves 01_infer's closing table (:func:`load_run`) and the report
(:func:`load_predictions`): both go through :func:`stored_rows`, which refuses a tampered row
(a label outside a1/a2/same, an unknown order, a line stored twice) naming the run folder and
the row's key. Scoring a finished run (:func:`parse_report`, :func:`run_metrics`) lives here
too, not in the engine that wrote it.

This is where the store (``helpers.run.store``, ``helpers.run.identity``) meets the metrics
(``helpers.stats.metrics``, which only computes on tables and never reads files).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from helpers import paths, prompts
from helpers.data import (
    LABELS,
    DataError,
    data_sha256,
    dataset_spec,
    dataset_specs,
    label_files,
    load_pairs,
)
from helpers.run import store
from helpers.stats import metrics
from helpers.stats.metrics import check_predictions

COMPLETE = "complete"
"""The one manifest status the report reads (``RunSession.close`` writes it when every planned row
is stored). A folder without a manifest (a hand-written table) has no status and is read."""


def run_statuses(root: str | Path | None = None) -> pd.DataFrame:
    """``run_id, status`` of every run folder under ``root`` (a folder holding
    ``predictions.jsonl``), the status from its typed manifest (None when it has none)."""
    root = Path(root) if root is not None else paths.predictions_dir()
    rows = []
    for folder in sorted(p.parent for p in root.glob("*/predictions.jsonl")):
        manifest = store.read_manifest(folder)
        rows.append({"run_id": folder.name, "status": None if manifest is None else manifest.status})
    return pd.DataFrame(rows, columns=["run_id", "status"])


def _not_complete(runs: pd.DataFrame) -> pd.Series:
    """Rows of :func:`run_statuses` whose manifest says anything but ``complete`` (a folder
    without a manifest is read)."""
    return runs["status"].notna() & (runs["status"] != COMPLETE)


def left_out_runs(root: str | Path | None = None) -> pd.DataFrame:
    """The runs the report leaves out of every chapter (``run_id, status, rows``): those whose
    manifest says anything but ``complete`` (still running, failed, interrupted, incomplete)."""
    root = Path(root) if root is not None else paths.predictions_dir()
    runs = run_statuses(root)
    runs = runs[_not_complete(runs)].reset_index(drop=True)
    return runs.assign(rows=[len(store.read_jsonl(root / r / "predictions.jsonl")) for r in runs["run_id"]])


def stored_rows(root: str | Path | None = None, run_ids: Iterable[str] | None = None, *,
                complete_only: bool = False) -> pd.DataFrame:
    """The rows of the store (of ``run_ids`` only, when given), each checked as the writers
    wrote it (``store.checked_rows``: the row schema, its key against its fields, its fields
    against its run folder's manifest, no key twice). A hand-edited or duplicated line is refused
    naming file, line and field, never scored (a ``banana`` would otherwise count as a wrong
    answer, a duplicate twice, an edited round as another round).
    ``complete_only``: without the rows of :func:`left_out_runs` (the report's reading: a run
    still writing, failed or incomplete is in no chapter)."""
    root = Path(root) if root is not None else paths.predictions_dir()
    if complete_only:  # one read of the manifests; a left-out run's rows are never opened
        runs = run_statuses(root)
        complete = set(runs.loc[~_not_complete(runs), "run_id"])
        run_ids = complete if run_ids is None else [r for r in run_ids if r in complete]
    if run_ids is None:
        return store.read_predictions(root)
    rows = [row for run_id in sorted(set(run_ids)) for row in store.checked_rows(root / run_id)]
    if not rows:
        return pd.DataFrame(columns=store.COLUMNS)
    table = pd.DataFrame(rows)
    return table.reindex(columns=store.COLUMNS + [c for c in table.columns if c not in store.COLUMNS])


def is_judged(table: pd.DataFrame) -> pd.Series:
    """Rows that carry a verdict: not ``media_error`` rows (``store.MEDIA_ERROR``: the media could not be
    decoded; no label, excluded from every metric and counted as ``media_error_n``)."""
    if "status" not in table.columns:
        return pd.Series(True, index=table.index)
    return table["status"].fillna("ok") != store.MEDIA_ERROR


def media_error_counts(table: pd.DataFrame) -> pd.DataFrame:
    """``media_error_n`` per judge cell (judge, strategy, input_type): rows whose media could not be decoded."""
    keys = ["judge", "strategy", "input_type"]
    if table.empty:
        return pd.DataFrame(columns=[*keys, "media_error_n"])
    errors = ~is_judged(table)
    return table.assign(media_error_n=errors.astype(int)).groupby(keys, as_index=False)["media_error_n"].sum()


def load_predictions(root: str | Path | None = None, dataset: str | None = None,
                     data_dir: str | Path | None = None, media: str | None = "real") -> pd.DataFrame:
    """All complete runs of the predictions store (read by ``helpers.run.store``; a run still
    running, failed or incomplete is left out: :func:`left_out_runs`), checked for analysis.

    With ``dataset``: only that dataset's rows, scored against its files as they are now
    (:func:`score_against_data`), so a label is never taken from a stale store. Rows whose media could
    not be decoded (``media_error``) hold no verdict and are left out; ``media``: the rows of runs that showed
    the judge this (``real``: its own clips, the judge's result), or of every setting (None; ``helpers.stats.media``)."""
    table = stored_rows(root, complete_only=True)
    if table.empty:
        return table
    table = table[is_judged(table)]  # media_error rows hold no verdict (media_error_counts counts them)
    if "media" in table.columns and media is not None:  # a judge shown no clip or another pair's is a probe
        table = table[table["media"].fillna("real") == media]  # (helpers.stats.media), not its result
    table = table.astype({"round": int, "name": str, "strategy": str})
    if dataset is not None:
        if "dataset" in table.columns:
            table = table[table["dataset"].fillna(dataset) == dataset]
        if table.empty:
            return table.reset_index(drop=True)
        table = score_against_data(table, root, dataset, data_dir)
    source = f"predictions under {root or paths.predictions_dir()}"
    table = table.reset_index(drop=True)
    if media is None and "media" in table.columns:  # each setting holds the same pairs once
        for setting, part in table.groupby(table["media"].fillna("real")):
            check_predictions(part, f"{source} (media={setting})")
        return table
    return check_predictions(table, source)


def _run_data_hashes(folder: Path) -> dict[str, str] | None:
    """The data hashes a run folder's manifest records (its identity's, else the older key)."""
    manifest = store.read_manifest(folder)
    return None if manifest is None else manifest.data_sha256


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


# --------------------------------------------------------------------------- a run's own numbers


def parse_report(rows: list[dict], examples: int = 3) -> dict:
    """How many stored answers matched no parser rule (scored ``same`` by the paper's rule)."""
    fallback = [r for r in rows if r.get("parse_rule") == prompts.FALLBACK_RULE]
    share = prompts.fallback_share([r.get("parse_rule") for r in rows])
    shown = [str(r.get("raw", ""))[:80] for r in fallback[:examples]]
    return {"rows": len(rows), "unparsed": len(fallback),
            "unparsed_pct": round(100 * share, 2) if rows and share == share else None, "examples": shown}


NO_LABELS = "no labels: no metrics"


def run_metrics(predictions: pd.DataFrame) -> pd.DataFrame:
    """Two-class WAF per order (mean over rounds, x100), swap consistency (x100), the share
    of answers that matched no parser rule (``unparsed_pct``, scored ``same``) and the rows whose media
    could not be decoded (``media_error_n``, excluded from the rest) per judge cell:
    the paper's definitions, via ``helpers.stats.metrics``. ``rounds`` says how many rounds
    each order had, so a metric from an unbalanced run says what it was computed from.

    A run on an unlabelled pair file has no human label to score against: its metric columns
    are empty and ``labels`` says ``no labels: no metrics`` (a missing label is never read as
    ``same``); swap consistency needs no label and is still given."""
    rows = []
    errors = media_error_counts(predictions).set_index(["judge", "strategy", "input_type"])["media_error_n"]
    judged = predictions[is_judged(predictions)]
    for (judge, strategy, input_type), cell in judged.groupby(["judge", "strategy", "input_type"]):
        row = {"judge": judge, "strategy": strategy, "input_type": input_type}
        labelled = cell[cell["gt"].isin(LABELS)] if "gt" in cell.columns else cell.iloc[:0]
        row["labels"] = f"{labelled['name'].nunique()} labelled pairs" if len(labelled) else NO_LABELS
        for order in ("normal", "reverse"):
            part = labelled[labelled["order"] == order]
            scores = [metrics.two_class(g["gt"], g["pred"])["waf"] for _, g in part.groupby("round")]
            row[f"two_class_waf_{order}"] = 100 * pd.Series(scores, dtype=float).mean()
        swap = metrics.swap_consistency_rounds(cell) if set(cell["order"]) == {"normal", "reverse"} else pd.Series()
        row["swap_consistency"] = 100 * swap.mean() if len(swap) else float("nan")
        row["unparsed_pct"] = metrics.unparsed_pct(cell)
        row["media_error_n"] = int(errors.get((judge, strategy, input_type), 0))
        row["rounds"] = cell["round"].nunique()
        row["pairs"] = cell["name"].nunique()
        rows.append(row)
    return pd.DataFrame(rows)


def load_run(summary: pd.DataFrame, output_dir: str | Path | None = None, data_dir: str | Path | None = None
             ) -> pd.DataFrame:
    """The predictions of the runs listed in a ``run`` summary, checked by :func:`stored_rows`.
    Runs on a dataset's files are scored against those files as they are now
    (:func:`score_against_data`: labels joined from the data, refused when the run was made on
    other data); runs on caller-given pairs keep the labels of those pairs, which their
    identity pinned."""
    root = Path(output_dir) if output_dir is not None else paths.predictions_dir()
    table = stored_rows(root, summary["run_id"])
    by_data = [rid for rid in summary["run_id"] if _on_dataset_files(root / rid)]
    if not by_data or table.empty:
        return table
    scored = []
    for dataset, part in table[table["run_id"].isin(by_data)].groupby("dataset"):
        scored.append(score_against_data(part, root, str(dataset), data_dir))
    rest = table[~table["run_id"].isin(by_data)]
    return pd.concat([*scored, rest], ignore_index=True) if len(rest) else pd.concat(scored, ignore_index=True)


def _on_dataset_files(folder: Path) -> bool:
    manifest = store.read_manifest(folder)
    return (manifest is not None and manifest.dataset in dataset_specs()
            and not dataset_specs()[manifest.dataset].pair_file and not manifest.parameters.get("pairs_given"))
