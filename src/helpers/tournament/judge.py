"""Judging a tournament: its comparisons through the study's engine, in shards, on an executor.

Every comparison is judged in both orders by the same engine, registry and resumable store as the
benchmark, so a killed run resumes without losing or duplicating rows. Shards are deterministic
chunks of the comparison ids; each writes its own run folder, named with a digest of the texts so
that edited descriptions start fresh folders instead of resuming stale predictions.

Local worker processes (``workers > 1``) end with the process that started them: each worker
asks the kernel to kill it when its parent dies (Linux ``PR_SET_PDEATHSIG``; elsewhere a thread
polls the parent's pid), so a ``kill -9`` of ``python -m helpers.tournament judge`` leaves no
orphan writing into the store; an interrupt (SIGINT) of the parent terminates them first.
"""

from __future__ import annotations

import ctypes
import json
import multiprocessing
import os
import re
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.data import DataError
from helpers.digest import PAIRS_DIGEST_LEN, sha256_hex
from helpers.stats.bt import adaptive_pairs, adjacent_separated, fit_with_covariance
from helpers.tournament.design import (
    Design,
    adaptive_manifest,
    has_design,
    next_batch,
    read_design,
    to_pairs,
    write_design,
)
from helpers.tournament.rank import comparisons_from_predictions

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
PARENT_POLL_S = 0.5


def shard_names(pairs: pd.DataFrame, n_shards: int) -> list[list[str]]:
    """Contiguous, deterministic chunks of the comparison ids: the same command always makes the
    same shards, so a re-run resumes each shard's own run folder."""
    names = sorted(pairs["name"])
    return [list(chunk) for chunk in np.array_split(np.array(names, dtype=object), max(1, min(n_shards, len(names))))]


def pairs_digest(pairs: pd.DataFrame) -> str:
    """Short content hash of the comparisons and their texts. It is part of every run folder's
    name, so editing a description (or the emotion-word list) starts fresh run folders instead of
    resuming predictions made on the old texts."""
    rows = sorted(zip(pairs["name"], pairs["a1"], pairs["a2"], strict=True))
    return sha256_hex(json.dumps(rows), PAIRS_DIGEST_LEN)


def judge_shard(*, judge: str, pairs: pd.DataFrame, names: list[str], dataset: str, store_root: str,
                rounds: int, seed: int, strategy: str, input_type: str | None, judge_llm: str | None,
                engine: str, media_dir: str | None) -> list[dict]:
    """One shard through the study's engine: both orders, into its own run folder of the store.
    The whole pairs table goes along so cross-fitted CPU judges fit exactly as in a full run."""
    from helpers.run.engine import run

    end_with_parent()
    summary = run(
        judge, strategy=strategy, order="both", rounds=rounds, dataset=dataset, input_type=input_type,
        judge_llm=judge_llm, engine=engine, media_dir=media_dir, output_dir=store_root, seed=seed,
        pairs=pairs, names=names, progress=False,
    )
    return summary.to_dict("records")


TRAIN_PREFIX = "train."  # training pairs' names in a learned judge's pairs table (never a comparison id)


def learns_from_labels(judge: str) -> bool:
    """A judge that fits on human labels (``helpers.judges.learned.CrossFitJudge``: the source
    and MiniLM reward models): in a tournament it needs labelled training pairs beside the
    unlabelled comparisons."""
    from helpers.judges.learned import CrossFitJudge
    from helpers.judges.registry import import_object, load_spec

    spec = load_spec(judge)
    if spec.backend != "cpu":
        return False
    cls = import_object(spec.options["judge_class"])
    return isinstance(cls, type) and issubclass(cls, CrossFitJudge)


def training_pairs(source: str = "emoprefer", data_dir: str | Path | None = None) -> pd.DataFrame:
    """Labelled pairs a learned judge trains on: a dataset of the study (``emoprefer``: the v1
    benchmark, ``emopreferv2``) or a CSV/Parquet table ``name, a1, a2, preference`` (a1/a2/same)
    that the user names. Names get the prefix :data:`TRAIN_PREFIX`, so they never collide with
    the tournament's comparison ids."""
    from helpers.data import dataset_specs, load_pairs, read_table

    if source in dataset_specs():
        frame = load_pairs(source, "normal", data_dir)
    else:
        path = Path(source)
        if not path.is_file():
            raise DataError(f"--train {source}: neither a dataset ({', '.join(sorted(dataset_specs()))}) nor a file")
        frame = read_table(path, ("name", "a1", "a2", "preference"), "training table")  # the one reader of a user's table
        missing = [c for c in ("name", "a1", "a2", "preference") if c not in frame.columns]
        bad = ~frame["preference"].isin(["a1", "a2", "same"]) if not missing else None
        if missing or bad.any():
            detail = (f"lacks column(s) {', '.join(missing)}" if missing else
                      f"row {int(bad.to_numpy().nonzero()[0][0]) + 1}: preference "
                      f"{frame.loc[bad, 'preference'].iloc[0]!r} is not a1, a2 or same")
            raise DataError(f"training table {path} {detail}; it needs name, a1, a2, preference (a1/a2/same)")
    out = frame[["name", "a1", "a2", "preference"]].astype({"name": str}).copy()
    out["name"] = TRAIN_PREFIX + out["name"]
    out["media_name"] = out["name"]
    return out.reset_index(drop=True)


def judge_tournament(
    pairs: pd.DataFrame,
    judges: Sequence[str],
    store_root: str | Path,
    *,
    training: pd.DataFrame | None = None,
    tag: str = "tournament",
    executor: str = "local",
    shards: int = 1,
    workers: int = 1,
    address: str | None = None,
    rounds: int = 1,
    seed: int = 0,
    strategy: str = "all",
    input_type: str | None = None,
    judge_llm: str | None = "qwen25",
    engine: str = "auto",
    media_dir: str | Path | None = None,
) -> pd.DataFrame:
    """Judge every comparison with every judge, ``shards`` shards per judge, on ``executor``.
    Shard ``i`` of ``n`` writes run folders named with dataset ``<tag>-<digest>.s<i>of<n>``
    (:func:`pairs_digest`); re-running the same call resumes them. Judges that learn from labels
    (:func:`learns_from_labels`) get ``training`` (:func:`training_pairs`) beside the
    comparisons (without it, the comparisons' own human labels, as in the v1 demonstration), cross-fitted like the benchmark (each comparison judged by a model fitted on
    labelled pairs of the other folds), and their run folders carry the training data's digest
    (``<tag>-<digest>.t<training digest>.s<i>of<n>``): other training data, other runs. Returns
    the engine's summary rows (one per run folder)."""
    from helpers.judges.registry import load_spec
    from helpers.run.launch import Shard, gpus_for, run_shards

    if not re.fullmatch(r"[A-Za-z0-9_.-]+", tag):
        raise DataError(f"tournament tag {tag!r} must match [A-Za-z0-9_.-]+ (it names run folders)")
    chunks = shard_names(pairs, shards)
    prefix = f"{tag}-{pairs_digest(pairs)}"
    labelled = "preference" in pairs.columns and pairs["preference"].isin(["a1", "a2"]).any()
    learned = {judge: learns_from_labels(judge) for judge in judges}
    if any(learned.values()) and training is None and not labelled:
        raise DataError(f"judge(s) {', '.join(j for j, yes in learned.items() if yes)} learn from human labels: give "
                        "labelled training pairs (the CLI's --train, default the v1 benchmark)")

    def judged(judge: str) -> tuple[pd.DataFrame, str]:
        if not learned[judge] or training is None:  # comparisons with human labels: cross-fitted on those
            return pairs, prefix
        unlabelled = pairs.assign(preference=None) if "preference" not in pairs.columns else pairs
        return pd.concat([unlabelled, training], ignore_index=True), f"{prefix}.t{pairs_digest(training)}"

    work = [
        Shard(
            key=f"{tag}-{judge}-s{i}of{len(chunks)}", fn=judge_shard, num_gpus=gpus_for(load_spec(judge)),
            kwargs={"judge": judge, "pairs": judged(judge)[0], "names": chunk,
                    "dataset": f"{judged(judge)[1]}.s{i}of{len(chunks)}",
                    "store_root": str(store_root), "rounds": rounds, "seed": seed, "strategy": strategy,
                    "input_type": input_type, "judge_llm": judge_llm, "engine": engine,
                    "media_dir": str(media_dir) if media_dir else None},
        )
        for judge in judges for i, chunk in enumerate(chunks)
    ]
    if executor == "local" and workers > 1:
        with workers_end_on_interrupt():
            results = run_shards(work, executor, workers=workers, address=address)
    else:
        results = run_shards(work, executor, workers=workers, address=address)
    return pd.DataFrame([row for rows in results for row in rows])


def tournament_predictions(store_root: str | Path, pairs: pd.DataFrame) -> pd.DataFrame:
    """The store's rows for exactly these comparisons and texts, read and checked as the
    benchmark's are (``results.stored_rows``: a hand-edited or duplicated row is refused, never
    ranked); run folders of other texts under the same root are ignored."""
    from helpers.run.results import stored_rows

    table = stored_rows(store_root)
    if table.empty:
        return table
    groups = [group for _, group in pairs.groupby("batch", sort=True)] if "batch" in pairs.columns else [pairs]
    # one digest per batch of an adaptive design; a learned judge's runs add their training digest
    pattern = "|".join(f"-{pairs_digest(group)}(?:\\.t[0-9a-f]+)?\\.s" for group in groups)
    keep = table["name"].isin(set(pairs["name"])) & table["dataset"].astype(str).str.contains(pattern, regex=True)
    return table[keep].reset_index(drop=True)


# --------------------------------------------------------------------------- worker lifetime


_guarded = False


def end_with_parent() -> None:
    """In a worker process started by ``multiprocessing`` (the local executor's pool): die as soon
    as the parent dies, and leave interrupts to the parent. Without this, killing the parent
    leaves its workers orphaned to PID 1, still judging and writing rows. A no-op in the main
    process and in processes not started by ``multiprocessing`` (Ray workers, which Ray owns)."""
    global _guarded
    parent = multiprocessing.parent_process()
    if parent is None or _guarded:
        return
    _guarded = True
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C: the parent stops the workers
    watched = _set_parent_death_signal()
    if os.getppid() != parent.pid:  # the parent died before the signal was armed
        os._exit(1)
    if not watched:
        threading.Thread(target=_watch_parent, args=(parent.pid,), daemon=True, name="end-with-parent").start()


def _set_parent_death_signal() -> bool:
    """Linux: the kernel sends SIGKILL to this process when its parent exits (True when armed)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(pid: int) -> None:
    """Elsewhere: exit once the parent is gone (this process is re-parented, so its ppid changes)."""
    while os.getppid() == pid:
        threading.Event().wait(PARENT_POLL_S)
    os._exit(1)


@contextmanager
def workers_end_on_interrupt() -> Iterator[None]:
    """While judging with local worker processes: a SIGINT of this process (Ctrl-C, ``kill -INT``)
    terminates the workers first, then raises KeyboardInterrupt as usual; otherwise the process
    pool would wait for every running shard to finish before the interrupt got through."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    others = set(multiprocessing.active_children())  # children that are not this judging's workers

    def stop(signum: int, frame: object) -> None:
        for child in set(multiprocessing.active_children()) - others:
            child.terminate()
        signal.signal(signal.SIGINT, previous)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


# --------------------------------------------------------------------------- adaptive judging


def judge_adaptive(entries: pd.DataFrame, folder: str | Path, judge: str, *, batch_size: int, max_comparisons: int,
                   seed: int = 0, level: float = 0.95, prior: float = 1.0, tag: str = "tournament",
                   **judging) -> Design:
    """Judge a tournament in batches with one judge: a uniform first batch, then after each batch
    a plain Bradley–Terry refit and the next batch drawn where the order is still uncertain
    (:func:`helpers.stats.bt.adaptive_pairs`), until every adjacent pair is separated at
    ``level`` (:func:`helpers.stats.bt.adjacent_separated`) or ``max_comparisons`` are drawn.

    Kill-safe and resumable: each batch is written into ``design.csv`` (with its number) and
    the manifest (with its rule) before it is judged, each batch judges into its own run
    folders, so a re-run resumes the batch that was interrupted and draws the same later
    batches from the same verdicts and seed. ``judging``: :func:`judge_tournament`'s settings."""
    folder = Path(folder)
    systems = sorted(entries["system"].unique())
    store = folder / "predictions"

    def judge_batch(design: Design, k: int) -> None:
        batch = design.pairs[design.pairs["batch"] == k]
        if len(batch):
            judge_tournament(to_pairs(batch, entries), [judge], store, tag=tag, seed=seed, **judging)

    if has_design(folder):
        design = read_design(folder)
        for k in range(len(design.manifest["batches"])):  # resumes: judged batches are read back, not judged again
            judge_batch(design, k)
    else:
        empty = pd.DataFrame(columns=["comparison", "name", "system_a", "system_b", "batch"])
        design = next_batch(Design(empty, adaptive_manifest(entries, batch_size, max_comparisons, seed, level)),
                            entries, None, systems, "uniform")
        write_design(design, folder)
        judge_batch(design, 0)
    while design.manifest.get("stopped") is None:
        pairs = to_pairs(design.pairs, entries)
        comparisons = comparisons_from_predictions(tournament_predictions(store, pairs), pairs)
        theta, cov = fit_with_covariance(comparisons, systems, prior)
        k = len(design.manifest["batches"])
        stop = ("separated" if adjacent_separated(theta, cov, level)
                else "budget" if len(design.pairs) >= max_comparisons else None)
        if stop is None:
            chosen = adaptive_pairs(theta, cov, batch_size, np.random.default_rng([seed, k, 1]))
            grown = next_batch(design, entries, chosen, systems, "adaptive")
            stop = "exhausted" if len(grown.pairs) == len(design.pairs) else None
        if stop is not None:
            design.manifest["stopped"] = stop
            write_design(design, folder)
            break
        design = grown
        write_design(design, folder)
        judge_batch(design, k)
    return design
