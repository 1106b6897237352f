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
from helpers.stats.bt import adjacent_separated, fit_with_covariance
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
                engine: str, media_dir: str | None, overwrite: bool = False) -> list[dict]:
    """One shard through the study's engine: both orders, into its own run folder of the store.
    The whole pairs table goes along so cross-fitted CPU judges fit exactly as in a full run.
    ``overwrite``: a run folder of another identity (judge code, settings) is moved aside and
    judged afresh instead of refused, as the engine's own ``overwrite``."""
    from helpers.run.engine import run

    end_with_parent()
    summary = run(
        judge, strategy=strategy, order="both", rounds=rounds, dataset=dataset, input_type=input_type,
        judge_llm=judge_llm, engine=engine, media_dir=media_dir, output_dir=store_root, seed=seed,
        pairs=pairs, names=names, progress=False, overwrite=overwrite,
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


MIN_TRAINING = 20  # decided training pairs a cross-fitted learned judge needs (5 folds, both labels in each)
CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
SCRIPT_GAP = 0.5  # training and judged texts whose CJK shares differ by more than this are in different scripts


def cjk_share(texts: Sequence[str]) -> float:
    """Share of CJK characters (Han, kana, Hangul) among the non-space characters of ``texts``."""
    joined = "".join(str(t) for t in texts)
    letters = len(joined) - sum(ch.isspace() for ch in joined)
    return len(CJK.findall(joined)) / letters if letters else 0.0


def script_mismatch(training: pd.DataFrame, texts: Sequence[str]) -> str | None:
    """A warning when a learned judge trains on texts of one script and judges another (an
    English-trained reward model scoring Chinese descriptions): its verdicts then rest on
    features it never saw labelled, and the leaderboard should not be read as a quality ranking."""
    train, judged = cjk_share(pd.concat([training["a1"], training["a2"]])), cjk_share(texts)
    if abs(train - judged) <= SCRIPT_GAP:
        return None
    return (f"warning: the learned judge's training texts are {train:.0%} CJK characters, the tournament's "
            f"descriptions {judged:.0%}: it judges a language it was not trained on; train it on labelled pairs "
            "in the table's language (--train TABLE) before reading its leaderboard")


def training_pairs(source: str = "emoprefer", data_dir: str | Path | None = None) -> pd.DataFrame:
    """Labelled pairs a learned judge trains on: a dataset of the study (``emoprefer``: the v1
    benchmark, ``emopreferv2``) or a CSV/Parquet table ``name, a1, a2, preference`` (a1/a2/same)
    that the user names. Names get the prefix :data:`TRAIN_PREFIX`, so they never collide with
    the tournament's comparison ids."""
    from helpers.data import DATA_ENV, dataset_specs, load_pairs, read_table

    if source in dataset_specs():
        try:
            frame = load_pairs(source, "normal", data_dir)
        except DataError as exc:  # offline, or a folder without the files: say how to point at them
            raise DataError(f"--train {source}: {exc}\n(point the tournament at a folder with the {source} CSVs "
                            f"with --data-dir FOLDER, or set {DATA_ENV})") from None
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
    decided = frame["preference"].value_counts()
    if decided.get("a1", 0) + decided.get("a2", 0) < MIN_TRAINING or not decided.get("a1", 0) or not decided.get("a2", 0):
        raise DataError(f"--train {source}: {decided.get('a1', 0)} pairs labelled a1 and {decided.get('a2', 0)} labelled "
                        f"a2; a learned judge needs at least {MIN_TRAINING} decided pairs with both labels (it is "
                        "cross-fitted over folds, and each fold must learn both directions)")
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
    names: Sequence[str] | None = None,
    overwrite: bool = False,
) -> pd.DataFrame:
    """Judge every comparison with every judge, ``shards`` shards per judge, on ``executor``.
    Shard ``i`` of ``n`` writes run folders named with dataset ``<tag>-<digest>.s<i>of<n>``
    (:func:`pairs_digest`); re-running the same call resumes them. Judges that learn from labels
    (:func:`learns_from_labels`) get ``training`` (:func:`training_pairs`) beside the
    comparisons (without it, the comparisons' own human labels, as in the v1 demonstration), cross-fitted like the benchmark (each comparison judged by a model fitted on
    labelled pairs of the other folds), and their run folders carry the training data's digest
    (``<tag>-<digest>.t<training digest>.s<i>of<n>``): other training data, other runs. Returns
    the engine's summary rows (one per run folder). ``names``: judge only these comparisons of
    ``pairs`` (an adaptive design's batch), into the run folders of the whole ``pairs``, so every
    batch of one design resumes the same folders. ``overwrite``: run folders made with other
    judge code or settings are moved aside (``<store>/.replaced/``) and judged afresh, never mixed."""
    from helpers.judges.registry import load_spec
    from helpers.run.launch import Shard, gpus_for, run_shards

    if not re.fullmatch(r"[A-Za-z0-9_.-]+", tag):
        raise DataError(f"tournament tag {tag!r} must match [A-Za-z0-9_.-]+ (it names run folders)")
    chunks = shard_names(pairs if names is None else pairs[pairs["name"].isin(set(names))], shards)
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
                    "media_dir": str(media_dir) if media_dir else None, "overwrite": overwrite},
        )
        for judge in judges for i, chunk in enumerate(chunks)
    ]
    if executor == "local" and workers > 1:
        with workers_end_on_interrupt():
            results = run_shards(work, executor, workers=workers, address=address)
    else:
        results = run_shards(work, executor, workers=workers, address=address)
    return pd.DataFrame([row for rows in results for row in rows])


def tournament_predictions(store_root: str | Path, pairs: pd.DataFrame, universe: pd.DataFrame | None = None) -> pd.DataFrame:
    """The store's rows for exactly these comparisons and texts, read and checked as the
    benchmark's are (``results.stored_rows``: a hand-edited or duplicated row is refused, never
    ranked); run folders of other texts under the same root are ignored. ``universe``: the pairs
    the run folders were named for (an adaptive design judges its batches into the folders of
    every comparison the table allows: :func:`adaptive_universe`)."""
    from helpers.run.results import stored_rows

    table = stored_rows(store_root)
    if table.empty:
        return table
    # a learned judge's runs add their training digest
    pattern = f"-{pairs_digest(pairs if universe is None else universe)}(?:\\.t[0-9a-f]+)?\\.s"
    keep = table["name"].isin(set(pairs["name"])) & table["dataset"].astype(str).str.contains(pattern, regex=True)
    return table[keep].reset_index(drop=True)


SHARD_OF = re.compile(r"\.s(\d+)of(\d+)$")


def unfinished(missing: pd.DataFrame, pairs: pd.DataFrame, predictions: pd.DataFrame) -> list[str]:
    """One phrase per judge cell with unjudged comparisons (:func:`helpers.tournament.rank.unjudged`):
    how many of the design's comparisons lack a verdict, and which shards (``judge --shards N``,
    read from the run folders' shard tags) or adaptive batches hold them."""
    phrases = []
    for cell, group in missing.groupby(["judge", "strategy", "input_type"], sort=True):
        names = set(group["name"])
        where = ""
        if "batch" in pairs.columns:
            batches = sorted(int(b) for b in pairs.loc[pairs["name"].isin(names), "batch"].unique())
            where = f"adaptive batch(es) {', '.join(map(str, batches))}"
        else:
            mine = predictions[(predictions["judge"] == cell[0]) & (predictions["strategy"] == cell[1])]
            tags = mine["dataset"].astype(str).str.extract(SHARD_OF).dropna().astype(int)
            if len(tags):
                n = int(tags[1].max())
                chunks = shard_names(pairs, n)
                lacking = [i for i, chunk in enumerate(chunks) if names & set(chunk)]
                where = "shard(s) " + ", ".join(f"s{i}of{n}" for i in lacking)
        phrases.append(f"judge {cell[0]} ({cell[1]}): {len(names)} of {len(pairs)} comparisons have no verdict in "
                       f"both orders" + (f" ({where} unfinished)" if where else ""))
    return phrases


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


def adaptive_universe(entries: pd.DataFrame) -> pd.DataFrame:
    """Every comparison the table allows, as the engine's pairs: an adaptive design's run folders
    are named for these (not for the batches drawn so far), so the whole design judges into one
    run folder per judge and shard, and a batch resumes it."""
    from helpers.tournament.design import candidates

    return to_pairs(candidates(entries), entries)


def judge_adaptive(entries: pd.DataFrame, folder: str | Path, judge: str, *, batch_size: int, max_comparisons: int,
                   seed: int = 0, level: float = 0.95, prior: float = 1.0, tag: str = "tournament",
                   **judging) -> Design:
    """Judge a tournament in batches with one judge: a uniform first batch, then after each batch
    a plain Bradley–Terry refit and the next batch drawn without replacement where the order is
    still uncertain (:func:`helpers.tournament.design.next_batch` with
    :func:`helpers.stats.bt.pair_weights`), until every adjacent pair is separated at ``level``
    (:func:`helpers.stats.bt.adjacent_separated`, "separated"), the next batch could not
    separate any pair still open (:func:`helpers.stats.bt.separable_pairs`, "futile"), the
    budget is spent ("budget") or the table has no comparison left ("exhausted").

    Kill-safe and resumable: each batch is written into ``design.csv`` (with its number) and
    the manifest (with its rule) before it is judged; every batch judges into the same run
    folders (named for every comparison the table allows, :func:`adaptive_universe`), so a
    re-run resumes the batch that was interrupted and draws the same later batches from the same
    verdicts and seed. The manifest records the judge and the judging settings that drive the
    draw. ``judging``: :func:`judge_tournament`'s settings."""
    from helpers.stats.bt import pair_weights, separable_pairs
    from helpers.tournament.design import remaining_by_pair

    folder = Path(folder)
    systems = sorted(entries["system"].unique())
    store = folder / "predictions"
    universe = adaptive_universe(entries)

    def judge_batch(design: Design, k: int) -> None:
        batch = design.pairs[design.pairs["batch"] == k]
        if len(batch):
            judge_tournament(universe, [judge], store, tag=tag, seed=seed, names=list(batch["comparison"]), **judging)

    if has_design(folder):
        design = read_design(folder)
        for k in range(len(design.manifest["batches"])):  # resumes: judged batches are read back, not judged again
            judge_batch(design, k)
    else:
        empty = pd.DataFrame(columns=["comparison", "name", "system_a", "system_b", "batch"])
        design = next_batch(Design(empty, adaptive_manifest(entries, batch_size, max_comparisons, seed, level,
                                                            adaptive_judging(judge, judging))),
                            entries, None, systems, "uniform")
        write_design(design, folder)
        judge_batch(design, 0)
    while design.manifest.get("stopped") is None:
        pairs = to_pairs(design.pairs, entries)
        comparisons = comparisons_from_predictions(tournament_predictions(store, pairs, universe), pairs)
        theta, cov = fit_with_covariance(comparisons, systems, prior)
        k = len(design.manifest["batches"])
        room = min(batch_size, max_comparisons - len(design.pairs))
        left = remaining_by_pair(design, entries, systems)
        stop = ("separated" if adjacent_separated(theta, cov, level)
                else "budget" if room <= 0
                else "exhausted" if not left.sum()
                else "futile" if not separable_pairs(theta, cov, np.minimum(left, room), level).any() else None)
        if stop is not None:
            design.manifest["stopped"] = stop
            write_design(design, folder)
            break
        design = next_batch(design, entries, pair_weights(theta, cov), systems, "adaptive")
        write_design(design, folder)
        judge_batch(design, k)
    return design


ADAPTIVE_JUDGING = ("strategy", "rounds", "input_type", "judge_llm")


def adaptive_judging(judge: str, judging: dict) -> dict:
    """The judging an adaptive design records (its verdicts choose the batches): the judge, the
    settings of :data:`ADAPTIVE_JUDGING`, and a learned judge's training data by digest."""
    training = judging.get("training")
    return {"judge": judge, **{key: judging.get(key) for key in ADAPTIVE_JUDGING},
            "training": None if training is None else pairs_digest(training)}
