"""MER-style tournaments: rank many description systems with a judge instead of with humans.

A challenge or a lab has M description systems that each described the same N samples and wants a
leaderboard without paying for C(M,2)·N human comparisons. A tournament is just another dataset
of pairs for the study's engine: this module validates the long table of descriptions, draws a
seeded pair design, turns it into a pairs table the SAME engine, registry and resumable store
judge (both orders, so every judge's swap consistency is known), and turns the judged
predictions back into comparisons for Bradley–Terry.

Ranking decisions, each for a reason:
- an order-inconsistent comparison (the verdict flips when the two texts swap places) counts as a
  tie: the judge did not prefer either system, it preferred a position;
- rounds of one comparison are pooled by their mean score (win 1, tie 0.5, loss 0), so a
  deterministic judge judged twice does not count as two comparisons;
- ranks are CI-aware, as Chatbot Arena reports them: rank = 1 + the number of systems whose lower
  bound is above this system's upper bound, so systems the data cannot separate share a rank;
- style control (:func:`fit_bt` with ``covariates=("length_diff",)``) adds the normalised length
  difference ``(len_a - len_b) / (len_a + len_b)`` as a regressor beside the system strengths, so
  the leaderboard can say how much of a system's rank is only length.

The fitter for style control lives in ``helpers.style_control``; the v1 demonstration (four
systems whose true order is known by construction) in ``helpers.tournament_demo``.

Command line (``python -m helpers.tournament --help``): ``validate``, ``design``, ``judge``,
``rank``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import cohen_kappa_score

from helpers.data import NAME_PATTERN, DataError, read_csv, swap_label
from helpers.style_control import SCORE, WINNERS, ci_ranks, fit_bt

COLUMNS = ("name", "system", "description")
SEPARATOR = "__"


# --------------------------------------------------------------------------- the long table


LINE_COLUMNS = ("csv_line", "_line")  # where helpers.data.read_csv keeps each record's line


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
    path = Path(path)
    if not path.is_file():
        return pd.DataFrame(), [f"{path}: file not found"]
    if path.suffix.lower() in (".parquet", ".pq"):
        frame = pd.read_parquet(path)
        missing = [c for c in COLUMNS if c not in frame.columns]
        if missing:
            return pd.DataFrame(), [f"{path}: missing required column(s) {', '.join(missing)}"]
        return frame.reset_index(drop=True), []
    frame, problems = read_csv(path, COLUMNS)
    return frame, [str(p) for p in problems]


def check_entries(frame: pd.DataFrame, file: str) -> list[str]:
    """Every rule a tournament table obeys, as messages naming file, line/row, column, value.

    Names and systems become comparison ids (and, for names, media paths), so both must be safe
    for paths; systems may not contain the id separator ``__``. Each (name, system) has exactly one
    non-empty description, and a tournament needs at least two systems.
    """
    problems: list[str] = []
    seen: dict[tuple[str, str], str] = {}
    for i, (name, system, text) in enumerate(zip(frame["name"], frame["system"], frame["description"], strict=True)):
        where = _where(frame, i)
        for column, value in (("name", name), ("system", system)):
            if not isinstance(value, str) or not NAME_PATTERN.match(value) or ".." in value:
                problems.append(_problem(file, where, column, value, "must match ^[A-Za-z0-9_.-]+$ without '..' (it becomes a path and an id)"))
        if isinstance(system, str) and SEPARATOR in system:
            problems.append(_problem(file, where, "system", system, f"must not contain {SEPARATOR!r} (the comparison id separator)"))
        if not isinstance(text, str) or not text.strip():
            problems.append(_problem(file, where, "description", text, "description is empty"))
        key = (name, system)
        if key in seen:
            problems.append(_problem(file, where, "system", system, f"second description of system {system!r} for sample {name!r} (first on {seen[key]})"))
        else:
            seen[key] = where
    if frame["system"].nunique() < 2:
        problems.append(f"{file}: a tournament needs at least 2 systems, found {frame['system'].nunique()}")
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
    """Content hash of the table (order-independent) for the manifest."""
    rows = sorted(zip(entries["name"], entries["system"], entries["description"], strict=True))
    return hashlib.sha256(json.dumps(rows).encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- pair designs


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
    design.pairs.to_csv(folder / "design.csv", index=False)
    (folder / "manifest.json").write_text(json.dumps(design.manifest, indent=2) + "\n")
    return folder


def read_design(folder: str | Path) -> Design:
    folder = Path(folder)
    manifest = json.loads((folder / "manifest.json").read_text()) if (folder / "manifest.json").is_file() else {}
    return Design(pd.read_csv(folder / "design.csv", dtype=str), manifest)


def to_pairs(design: pd.DataFrame, entries: pd.DataFrame, human: pd.DataFrame | None = None) -> pd.DataFrame:
    """The engine's pairs table: ``name`` = comparison id, ``media_name`` = the sample (whose
    video a multimodal judge watches), ``a1``/``a2`` the two systems' texts. ``model1``/``model2``
    carry the systems so that swapping the order keeps track of who wrote what. With ``human``
    (:func:`load_human`), ``preference`` holds the human verdict in the a1/a2 frame where there is
    one and None elsewhere, so the store records it as ``gt`` and judges that learn from labels
    can use the labelled comparisons."""
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


def length_diff(a: Sequence[str], b: Sequence[str]) -> np.ndarray:
    """Normalised character-length difference ``(len a - len b) / (len a + len b)`` in [-1, 1]."""
    la = np.array([len(t) for t in a], float)
    lb = np.array([len(t) for t in b], float)
    return (la - lb) / np.maximum(la + lb, 1.0)


# --------------------------------------------------------------------------- predictions -> comparisons


CELL = ["judge", "strategy", "input_type"]


def comparisons_from_predictions(predictions: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """One comparison per judge cell × design comparison, from the store's predictions.

    Per round, the normal verdict and the reverse verdict mapped back to the normal frame must
    agree, else the comparison is a tie (``consistent`` False); rounds are then pooled by their
    mean score (a 1, tie 0.5, b 0). ``pairs`` is :func:`to_pairs`'s table (for systems and lengths).
    """
    keys = [*CELL, "round", "name"]
    preds = predictions[predictions["name"].isin(pairs["name"])]
    if preds.empty:
        raise DataError("no predictions for this tournament's comparisons (judge it first)")
    wide = preds.drop_duplicates([*keys, "order"], keep="last").pivot(index=keys, columns="order", values="pred")
    for order in ("normal", "reverse"):
        if order not in wide.columns or wide[order].isna().any():
            lacking = wide.index[wide[order].isna()] if order in wide.columns else wide.index
            raise DataError(
                f"{len(lacking)} comparison(s) lack their {order!r} verdict (e.g. {lacking[0]}); a tournament "
                "judges both orders so that an order-inconsistent verdict can count as a tie"
            )
    normal, mapped = wide["normal"], wide["reverse"].map(swap_label)
    consistent = normal == mapped
    winner = np.where(consistent, normal.map({"a1": "a", "a2": "b", "same": "tie"}), "tie")
    per_round = pd.DataFrame({"score": pd.Series(winner, index=wide.index).map(SCORE), "consistent": consistent})
    pooled = per_round.groupby([*CELL, "name"]).agg(
        score=("score", "mean"), consistency=("consistent", "mean"), n_rounds=("score", "size")
    ).reset_index()
    pooled["winner"] = np.where(pooled["score"] > 0.5, "a", np.where(pooled["score"] < 0.5, "b", "tie"))
    info = pairs.set_index("name")
    out = pooled.rename(columns={"name": "comparison"})
    out["name"] = out["comparison"].map(info["media_name"])
    out["system_a"] = out["comparison"].map(info["system_a"])
    out["system_b"] = out["comparison"].map(info["system_b"])
    out["length_diff"] = out["comparison"].map(pd.Series(length_diff(info["a1"], info["a2"]), index=info.index))
    return out[[*CELL, "comparison", "name", "system_a", "system_b", "winner", "consistency", "n_rounds", "length_diff"]]


# --------------------------------------------------------------------------- leaderboards


def plain_bt(comparisons: pd.DataFrame, *, n_boot: int, seed: int, reference: str | None, prior: float) -> pd.DataFrame:
    """Plain Bradley–Terry from the analysis module (``helpers.ranking``), with the CI-aware rank."""
    from helpers.ranking import bradley_terry

    board = bradley_terry(comparisons[["system_a", "system_b", "winner"]], n_boot=n_boot, seed=seed,
                          reference=reference, prior=prior)
    board["rank"] = ci_ranks(board["log_strength_lo"], board["log_strength_hi"])
    return board


def leaderboard(
    comparisons: pd.DataFrame,
    entries: pd.DataFrame | None = None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    reference: str | None = None,
    prior: float = 1.0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Plain and style-controlled BT for every judge cell, long format (``method`` column:
    ``plain`` / ``style_control``), and the length coefficient per cell. ``entries`` adds each
    system's mean description length. ``prior`` (one virtual tie per pair of systems by default)
    keeps a judge that always prefers one system finite; it is negligible beside hundreds of
    comparisons per pair."""
    boards, coefs = [], []
    for cell, group in comparisons.groupby(CELL, sort=True):
        plain = plain_bt(group, n_boot=n_boot, seed=seed, reference=reference, prior=prior)
        style = fit_bt(group, ("length_diff",), n_boot=n_boot, seed=seed, reference=reference, prior=prior)
        for method, board in (("plain", plain), ("style_control", style.ratings)):
            board = board.assign(method=method, swap_consistency=group["consistency"].mean())
            board[CELL] = list(cell)
            boards.append(board)
        coefs.append(style.coefficients.assign(**dict(zip(CELL, cell, strict=True))))
    out = pd.concat(boards, ignore_index=True)
    if entries is not None:
        lengths = entries.assign(length=entries["description"].str.len()).groupby("system")["length"].mean()
        out["mean_length"] = out["system"].map(lengths)
    first = [*CELL, "method", "rank", "system"]
    return out[first + [c for c in out.columns if c not in first]], pd.concat(coefs, ignore_index=True)


# --------------------------------------------------------------------------- humans


def human_agreement(comparisons: pd.DataFrame, human: pd.DataFrame) -> pd.DataFrame:
    """Per judge cell, on the comparisons humans labelled (``comparison, winner``): raw agreement
    over all of them, agreement where the human decided (no tie), and Cohen's kappa."""
    labelled = comparisons.merge(human[["comparison", "winner"]].rename(columns={"winner": "human"}), on="comparison")
    rows = []
    for cell, group in labelled.groupby(CELL, sort=True):
        decided = group[group["human"] != "tie"]
        rows.append({
            **dict(zip(CELL, cell, strict=True)), "n_labelled": len(group),
            "agreement": float((group["winner"] == group["human"]).mean()),
            "agreement_decided": float((decided["winner"] == decided["human"]).mean()) if len(decided) else np.nan,
            "kappa": float(cohen_kappa_score(group["human"], group["winner"], labels=list(WINNERS))),
        })
    return pd.DataFrame(rows)


def rank_correlation(left: pd.DataFrame, right: pd.DataFrame) -> dict[str, float]:
    """Kendall's tau and Spearman's rho between two leaderboards' ratings on their common systems
    (NaN with fewer than three common systems: two systems give ±1 by construction)."""
    common = left.set_index("system")["log_strength"].rename("l").to_frame().join(
        right.set_index("system")["log_strength"].rename("r"), how="inner")
    if len(common) < 3:
        return {"n_systems": len(common), "kendall_tau": np.nan, "spearman_rho": np.nan}
    return {"n_systems": len(common), "kendall_tau": float(stats.kendalltau(common["l"], common["r"]).statistic),
            "spearman_rho": float(stats.spearmanr(common["l"], common["r"]).statistic)}


# --------------------------------------------------------------------------- the v1 demonstration


def length_alignment(pairs: pd.DataFrame) -> pd.DataFrame:
    """Per pair of systems, the share of comparisons in which system_a's description is longer,
    equally long, or shorter. Style control can only tell length from system identity where
    this varies: when one system is (almost) always the longer, the two are collinear."""
    la, lb = pairs["a1"].str.len(), pairs["a2"].str.len()
    frame = pairs.assign(a_longer=la > lb, equal=la == lb, b_longer=la < lb)
    return frame.groupby(["system_a", "system_b"])[["a_longer", "equal", "b_longer"]].mean().reset_index()


def wide_leaderboard(board: pd.DataFrame, digits: int = 0) -> pd.DataFrame:
    """One row per judge cell × system: ``rating [lo, hi] (rank)`` for plain and style-controlled
    BT side by side, for reading in a report."""
    cell = board.assign(text=[
        f"{r:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}] (#{int(k)})"
        for r, lo, hi, k in zip(board["rating"], board["rating_lo"], board["rating_hi"], board["rank"], strict=True)
    ])
    wide = cell.pivot_table(index=["judge", "strategy", "input_type", "system"], columns="method", values="text", aggfunc="first")
    order = cell[cell["method"] == "plain"].set_index(["judge", "strategy", "input_type", "system"])["rating"]
    wide = wide.join(order.rename("_sort")).sort_values(["judge", "_sort"], ascending=[True, False]).drop(columns="_sort")
    return wide.reset_index().rename_axis(columns=None)


def cpu_judges() -> list[str]:
    """Every judge of the registry that runs without a model server (backend cpu)."""
    from helpers.judges.registry import list_judges, load_spec

    return [name for name in list_judges() if load_spec(name).backend == "cpu"]


# --------------------------------------------------------------------------- human labels


def load_human(path: str | Path) -> pd.DataFrame:
    """Human verdicts on some comparisons: CSV/Parquet with ``name, system_a, system_b, winner``
    (winner in a/b/tie relative to the columns as written), turned to the design's canonical
    orientation (system_a < system_b) with its ``comparison`` id."""
    path = Path(path)
    frame = pd.read_parquet(path) if path.suffix.lower() in (".parquet", ".pq") else None
    problems: list[str] = []
    if frame is None:
        frame, found = read_csv(path, ("name", "system_a", "system_b", "winner"))
        problems += [str(p) for p in found]
    if not problems:
        for i, row in enumerate(frame.itertuples(index=False)):
            if row.winner not in WINNERS:
                problems.append(_problem(str(path), _where(frame, i), "winner", row.winner, "winner must be one of a, b, tie"))
            if row.system_a == row.system_b:
                problems.append(_problem(str(path), _where(frame, i), "system_b", row.system_b, "a system compared with itself"))
    if problems:
        raise DataError(f"{len(problems)} problem(s) in human labels {path}:\n  " + "\n  ".join(problems[:50]))
    flip = (frame["system_a"] > frame["system_b"]).to_numpy()
    out = pd.DataFrame({
        "name": frame["name"].to_numpy(),
        "system_a": np.where(flip, frame["system_b"], frame["system_a"]),
        "system_b": np.where(flip, frame["system_a"], frame["system_b"]),
        "winner": np.where(flip, frame["winner"].map({"a": "b", "b": "a", "tie": "tie"}), frame["winner"]),
    })
    out.insert(0, "comparison", [comparison_id(*r) for r in out[["name", "system_a", "system_b"]].itertuples(index=False)])
    return out


def human_report(board: pd.DataFrame, comparisons: pd.DataFrame, human: pd.DataFrame, *, n_boot: int, seed: int,
                 prior: float = 1.0) -> pd.DataFrame:
    """Per judge cell: agreement with the humans on the labelled comparisons, and the rank
    correlation between the humans' plain-BT leaderboard and the judge's."""
    agreement = human_agreement(comparisons, human)
    human_board = plain_bt(human, n_boot=0, seed=seed, reference=None, prior=prior)
    plain = board[board["method"] == "plain"]
    corr = [
        {**dict(zip(CELL, cell, strict=True)), **rank_correlation(human_board, group)}
        for cell, group in plain.groupby(CELL, sort=True)
    ]
    return agreement.merge(pd.DataFrame(corr), on=CELL, how="outer") if len(agreement) else pd.DataFrame(corr)


# --------------------------------------------------------------------------- judging (engine + executors)


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
    return hashlib.sha256(json.dumps(rows).encode("utf-8")).hexdigest()[:10]


def judge_shard(*, judge: str, pairs: pd.DataFrame, names: list[str], dataset: str, store_root: str,
                rounds: int, seed: int, strategy: str, input_type: str | None, judge_llm: str | None,
                backend: str, media_dir: str | None) -> list[dict]:
    """One shard through the study's engine: both orders, into its own run folder of the store.
    The whole pairs table goes along so cross-fitted CPU judges fit exactly as in a full run."""
    from helpers import engine

    summary = engine.run(
        judge, strategy=strategy, order="both", rounds=rounds, dataset=dataset, input_type=input_type,
        judge_llm=judge_llm, backend=backend, media_dir=media_dir, output_dir=store_root, seed=seed,
        pairs=pairs, names=names, progress=False,
    )
    return summary.to_dict("records")


def judge_tournament(
    pairs: pd.DataFrame,
    judges: Sequence[str],
    store_root: str | Path,
    *,
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
    backend: str = "auto",
    media_dir: str | Path | None = None,
) -> pd.DataFrame:
    """Judge every comparison with every judge, ``shards`` shards per judge, on ``executor``.
    Shard ``i`` of ``n`` writes run folders named with dataset ``<tag>-<digest>.s<i>of<n>``
    (:func:`pairs_digest`); re-running the same call resumes them. Returns the engine's summary
    rows (one per run folder)."""
    from helpers.executors import Shard, gpus_for, run_shards
    from helpers.judges.registry import load_spec

    if not re.fullmatch(r"[A-Za-z0-9_.-]+", tag):
        raise DataError(f"tournament tag {tag!r} must match [A-Za-z0-9_.-]+ (it names run folders)")
    chunks = shard_names(pairs, shards)
    prefix = f"{tag}-{pairs_digest(pairs)}"
    work = [
        Shard(
            key=f"{tag}-{judge}-s{i}of{len(chunks)}", fn=judge_shard, num_gpus=gpus_for(load_spec(judge)),
            kwargs={"judge": judge, "pairs": pairs, "names": chunk, "dataset": f"{prefix}.s{i}of{len(chunks)}",
                    "store_root": str(store_root), "rounds": rounds, "seed": seed, "strategy": strategy,
                    "input_type": input_type, "judge_llm": judge_llm, "backend": backend,
                    "media_dir": str(media_dir) if media_dir else None},
        )
        for judge in judges for i, chunk in enumerate(chunks)
    ]
    results = run_shards(work, executor, workers=workers, address=address)
    return pd.DataFrame([row for rows in results for row in rows])


def tournament_predictions(store_root: str | Path, pairs: pd.DataFrame) -> pd.DataFrame:
    """The store's rows for exactly these comparisons and texts (the same reader as the
    benchmark; run folders of other texts under the same root are ignored)."""
    from helpers.store import load_predictions

    table = load_predictions(store_root)
    if table.empty:
        return table
    digest = pairs_digest(pairs)
    keep = table["name"].isin(set(pairs["name"])) & table["dataset"].astype(str).str.contains(f"-{digest}.s", regex=False)
    return table[keep].reset_index(drop=True)


# --------------------------------------------------------------------------- command line


def _rank_outputs(folder: Path, entries: pd.DataFrame, human_path: str | None, n_boot: int, seed: int,
                  reference: str | None, prior: float) -> dict[str, pd.DataFrame]:
    design = read_design(folder)
    pairs = to_pairs(design.pairs, entries)
    comparisons = comparisons_from_predictions(tournament_predictions(folder / "predictions", pairs), pairs)
    board, coefs = leaderboard(comparisons, entries, n_boot=n_boot, seed=seed, reference=reference, prior=prior)
    out = {"comparisons": comparisons, "leaderboard": board, "length_effect": coefs}
    if human_path:
        out["human_agreement"] = human_report(board, comparisons, load_human(human_path), n_boot=n_boot, seed=seed, prior=prior)
    return out


def main(argv: list[str] | None = None) -> int:
    from helpers.executors import ExecutorError
    from helpers.judges.registry import RegistryError
    from helpers.store import StoreError


    parser = argparse.ArgumentParser(prog="python -m helpers.tournament", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = {name: sub.add_parser(name, help=text) for name, text in (
        ("validate", "check a long table (name, system, description) and report missing systems"),
        ("design", "draw the seeded pair design into OUT/design.csv + OUT/manifest.json"),
        ("judge", "judge the design's comparisons (both orders) into OUT/predictions/"),
        ("rank", "plain and style-controlled Bradley-Terry leaderboards into OUT/*.csv"),
    )}
    for name, p in cmd.items():
        p.add_argument("table", help="CSV or Parquet with columns name, system, description")
        if name != "validate":
            p.add_argument("--out", required=True, help="the tournament's folder")
    for p in (cmd["design"], cmd["judge"]):
        p.add_argument("--budget", type=int, default=None, help="comparisons per sample (default: full round-robin)")
        p.add_argument("--seed", type=int, default=0)
    j = cmd["judge"]
    j.add_argument("--judge", action="append", required=True, help="judge name from params/models (repeatable)")
    j.add_argument("--executor", choices=("local", "ray"), default="local")
    j.add_argument("--address", default=None, help="Ray cluster address ('auto', 'ray://host:10001'); default: local Ray")
    j.add_argument("--shards", type=int, default=1, help="shards per judge")
    j.add_argument("--workers", type=int, default=1, help="local CPU processes (GPU machines: one per GPU)")
    j.add_argument("--rounds", type=int, default=1)
    j.add_argument("--strategy", default="all")
    j.add_argument("--input-type", default=None)
    j.add_argument("--judge-llm", default="qwen25")
    j.add_argument("--backend", default="auto")
    j.add_argument("--media-dir", default=None)
    r = cmd["rank"]
    r.add_argument("--human", default=None, help="CSV with name, system_a, system_b, winner (a/b/tie)")
    r.add_argument("--n-boot", type=int, default=1000)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--reference", default=None)
    r.add_argument("--prior", type=float, default=1.0, help="virtual ties per pair of systems")
    args = parser.parse_args(argv)
    try:
        entries = load_entries(args.table)
        if args.command == "validate":
            print(f"{args.table}: {entries['name'].nunique()} samples, {entries['system'].nunique()} systems, "
                  f"{len(entries)} descriptions")
            print(coverage(entries).to_string(index=False))
            report = missing_report(entries)
            print(report or "every system describes every sample")
            return 0
        folder = Path(args.out)
        if args.command in ("design", "judge"):
            if args.command == "design" or not (folder / "design.csv").is_file():
                write_design(design_pairs(entries, args.budget, args.seed), folder)
            design = read_design(folder)
            print(f"design: {len(design.pairs)} comparisons ({design.manifest.get('design')}) in {folder}")
            if args.command == "judge":
                summary = judge_tournament(
                    to_pairs(design.pairs, entries), args.judge, folder / "predictions", tag=folder.name,
                    executor=args.executor, shards=args.shards, workers=args.workers, address=args.address,
                    rounds=args.rounds, seed=args.seed, strategy=args.strategy, input_type=args.input_type,
                    judge_llm=args.judge_llm, backend=args.backend, media_dir=args.media_dir,
                )
                print(summary.to_string(index=False))
            return 0
        outputs = _rank_outputs(folder, entries, args.human, args.n_boot, args.seed, args.reference, args.prior)
        for name, table in outputs.items():
            table.to_csv(folder / f"{name}.csv", index=False)
        shown = outputs["leaderboard"][[*CELL, "method", "rank", "system", "rating", "rating_lo", "rating_hi"]]
        print(shown.round(1).to_string(index=False))
        print(f"wrote {', '.join(f'{n}.csv' for n in outputs)} to {folder}")
        return 0
    except (DataError, RegistryError, ExecutorError, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
