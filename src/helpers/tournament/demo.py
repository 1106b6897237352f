"""The v1 tournament demonstration: four description systems whose true order is known.

v1 has human labels for two systems only, so a tournament built from it needs its answer key by
construction. From each v1 pair we take the MER-Caption+ and the MERR-Fine description and derive
two degraded systems:

- ``mercaptionplus_masked``: every emotion word (``params/emotion_words.yaml``) replaced by a
  placeholder of the same length — exactly as long, less emotional content;
- ``merrfine_half``: the first half of the words — shorter and less content.

So ``mercaptionplus > mercaptionplus_masked`` and ``merrfine > merrfine_half`` must hold. A judge
that reads emotional content recovers both; a judge that only counts characters recovers the
second and ties the first. :func:`judge_diagnosis` says which is which.

The steps of ``notebooks/07_tournament.ipynb`` live here too (:func:`prepare`, :func:`judge_each`,
:func:`judged_comparisons`, :func:`systems_table`, :func:`ratings_figure`, :func:`summary_values`),
so the notebook keeps narrative, parameters and calls.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.data import DataError, load_pairs
from helpers.reported import PaperResults
from helpers.stats.probes import emotion_words
from helpers.tournament.design import comparison_id
from helpers.tournament.rank import CELL
from helpers.tournament.table import COLUMNS

V1_SYSTEMS = {
    "mercaptionplus": "MER-Caption+ descriptions as in v1",
    "mercaptionplus_masked": "MER-Caption+ with emotion words replaced by same-length placeholders",
    "merrfine": "MERR-Fine descriptions as in v1",
    "merrfine_half": "MERR-Fine truncated to its first half (in words)",
}
IMPLIED = (("mercaptionplus", "mercaptionplus_masked"), ("merrfine", "merrfine_half"))
"""Relations the construction implies: (better, worse). Masking keeps length and removes
emotional content; truncation removes content and length."""


def mask_emotion_words(text: str, words: Iterable[str] | None = None, placeholder: str | None = None) -> str:
    """Replace every whole-word, case-insensitive emotion word by ``placeholder`` × its length,
    so the text keeps its exact character length and loses its emotion labels."""
    default_words, default_placeholder = emotion_words()
    words = sorted(words or default_words, key=len, reverse=True)
    fill = placeholder or default_placeholder
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, words)) + r")\b", re.IGNORECASE)
    return pattern.sub(lambda m: fill * len(m.group(0)), text)


def truncate_half(text: str) -> str:
    """The first half of the words (at least one)."""
    words = text.split()
    return " ".join(words[: max(1, len(words) // 2)])


def v1_demo_entries(dataset: str = "emoprefer", data_dir: str | Path | None = None) -> pd.DataFrame:
    """The four-system tournament table built from v1: one sample per v1 pair, one description per
    system (see ``V1_SYSTEMS``); needs the with-modelnames file."""
    pairs = load_pairs(dataset, "normal", data_dir)
    if "model1" not in pairs.columns:
        raise DataError(f"dataset {dataset!r} has no writer columns (model1/model2): the demo needs them")
    rows = []
    for pair in pairs.itertuples(index=False):
        texts = {pair.model1: pair.a1, pair.model2: pair.a2}
        if set(texts) != {"mercaptionplus", "merrfine"}:
            continue
        mc, mf = texts["mercaptionplus"], texts["merrfine"]
        for system, text in (("mercaptionplus", mc), ("mercaptionplus_masked", mask_emotion_words(mc)),
                             ("merrfine", mf), ("merrfine_half", truncate_half(mf))):
            rows.append((pair.name, system, text))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def v1_human_comparisons(dataset: str = "emoprefer", data_dir: str | Path | None = None) -> pd.DataFrame:
    """The human v1 labels as tournament comparisons between mercaptionplus and merrfine."""
    pairs = load_pairs(dataset, "normal", data_dir)
    a_first = pairs["model1"] == "mercaptionplus"  # canonical order: mercaptionplus < merrfine
    winner = np.select(
        [pairs["preference"] == "same", (pairs["preference"] == "a1") == a_first], ["tie", "a"], "b"
    )
    return pd.DataFrame({
        "comparison": [comparison_id(n, "mercaptionplus", "merrfine") for n in pairs["name"]],
        "name": pairs["name"], "system_a": "mercaptionplus", "system_b": "merrfine", "winner": winner,
    })


def implied_order_check(board: pd.DataFrame, implied: Sequence[tuple[str, str]] = IMPLIED) -> pd.DataFrame:
    """For every judge cell and method, whether each implied relation (better, worse) is
    recovered: ``separated`` (better's lower bound above worse's upper bound), ``same direction``
    (ratings ordered right, intervals overlap), or ``reversed``/``tied``."""
    rows = []
    for keys, group in board.groupby([*CELL, "method"], sort=True):
        r = group.set_index("system")
        for better, worse in implied:
            if better not in r.index or worse not in r.index:
                continue
            diff = r.at[better, "log_strength"] - r.at[worse, "log_strength"]
            if r.at[better, "log_strength_lo"] > r.at[worse, "log_strength_hi"]:
                verdict = "separated"
            elif diff > 1e-6:
                verdict = "same direction"
            elif diff < -1e-6:
                verdict = "reversed"
            else:
                verdict = "tied"
            rows.append({**dict(zip([*CELL, "method"], keys, strict=True)), "relation": f"{better} > {worse}",
                         "log_strength_diff": diff, "verdict": verdict})
    return pd.DataFrame(rows)


def judge_diagnosis(check: pd.DataFrame, coefficients: pd.DataFrame) -> pd.DataFrame:
    """One line per judge cell from the plain leaderboard's implied-order check and the length
    coefficient: ``recovers the construction`` (both relations separated), ``follows length``
    (separates the truncated system, which is shorter, but not the masked one, which is as long
    as the original, and prefers longer texts beyond system identity or ties them), or
    ``recovers neither``."""
    plain = check[check["method"] == "plain"]
    rows = []
    for cell, group in plain.groupby(CELL, sort=True):
        verdicts = dict(zip(group["relation"], group["verdict"], strict=True))
        masked = verdicts.get(f"{IMPLIED[0][0]} > {IMPLIED[0][1]}")
        truncated = verdicts.get(f"{IMPLIED[1][0]} > {IMPLIED[1][1]}")
        coef = coefficients.set_index(CELL).loc[cell] if len(coefficients) else None
        if masked == "separated" and truncated == "separated":
            diagnosis = "recovers the construction"
        elif truncated == "separated" and masked in ("tied", "same direction"):
            diagnosis = "follows length"
        else:
            diagnosis = "recovers neither"
        rows.append({**dict(zip(CELL, cell, strict=True)), "masked_relation": masked, "truncated_relation": truncated,
                     "length_coef": None if coef is None else float(coef["coef"]),
                     "length_coef_lo": None if coef is None else float(coef["coef_lo"]),
                     "length_coef_hi": None if coef is None else float(coef["coef_hi"]), "diagnosis": diagnosis})
    return pd.DataFrame(rows)


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
        f"{r:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}] (#{int(k)})" if np.isfinite(k) else f"{r:.{digits}f}"
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


# --------------------------------------------------------------------------- the notebook's steps


def prepare(dataset: str, data_dir: str | Path | None, folder: str | Path, seed: int = 0):
    """The demo's table, human comparisons, round-robin design (written to ``folder``) and the
    engine's pairs table carrying the human verdicts."""
    from helpers.tournament.design import design_pairs, to_pairs, write_design

    entries = v1_demo_entries(dataset, data_dir)
    human = v1_human_comparisons(dataset, data_dir)
    design = design_pairs(entries, seed=seed)
    write_design(design, folder)
    return entries, human, design, to_pairs(design.pairs, entries, human)


def systems_table(entries: pd.DataFrame) -> pd.DataFrame:
    """Per system: how it was built, on how many samples, and its mean length in characters,
    words and placeholder characters (what masking replaced)."""
    text = entries["description"]
    systems = (entries.assign(characters=text.str.len(), words=text.str.split().str.len())
               .groupby("system")[["characters", "words"]].mean().round(1))
    systems.insert(0, "construction", pd.Series(V1_SYSTEMS))
    systems.insert(1, "samples", entries.groupby("system")["name"].nunique())
    placeholder = emotion_words()[1]
    systems["placeholder characters"] = entries.groupby("system")["description"].apply(
        lambda t: t.str.count(re.escape(placeholder)).mean()).round(1)
    return systems


def example_descriptions(entries: pd.DataFrame, characters: int = 300) -> pd.DataFrame:
    """The descriptions of the table's first sample, cut to ``characters``."""
    example = entries[entries["name"] == entries["name"].iloc[0]].set_index("system")["description"]
    return example.str.slice(0, characters).to_frame(f"description (first {characters} characters)")


def judge_each(pairs: pd.DataFrame, judge_names: Sequence[str], folder: str | Path, *, executor: str = "local",
               address: str | None = None, shards: int = 1, seed: int = 0) -> tuple[pd.DataFrame, float]:
    """Every judge on every comparison (both orders), one after another; a judge that cannot run
    here (it needs labels this table lacks) is listed as ``not run`` with the reason, not hidden.
    The demonstration's store is the report's own, rebuilt from code: a run folder made with other
    judge code is moved aside and judged again (``overwrite``), as ``make report`` does for the CPU
    grid. Returns the status table and the total seconds."""
    from helpers.run import launch
    from helpers.tournament.judge import judge_tournament

    status, started = [], time.perf_counter()
    with launch.session(executor, address):
        for name in judge_names:
            tic = time.perf_counter()
            try:
                judge_tournament(pairs, [name], Path(folder) / "predictions", tag="v1_demo", executor=executor,
                                 address=address, shards=shards, rounds=1, seed=seed, overwrite=True)
                status.append({"judge": name, "status": "judged", "seconds": round(time.perf_counter() - tic, 1)})
            except DataError as exc:
                status.append({"judge": name, "status": f"not run: {str(exc).splitlines()[0]}", "seconds": None})
    return pd.DataFrame(status), time.perf_counter() - started


def judged_comparisons(folder: str | Path, pairs: pd.DataFrame, status: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The stored predictions of the judges that ran, and their comparisons."""
    from helpers.tournament.judge import tournament_predictions
    from helpers.tournament.rank import comparisons_from_predictions

    predictions = tournament_predictions(Path(folder) / "predictions", pairs)
    predictions = predictions[predictions["judge"].isin(status.loc[status["status"] == "judged", "judge"])]
    return predictions, comparisons_from_predictions(predictions, pairs)


def ratings_figure(board: pd.DataFrame, order: Sequence[str] = tuple(V1_SYSTEMS)):
    """One panel per judge cell: each system's plain (circle) and style-controlled (square) rating
    with its interval, the anchor at 1000."""
    import matplotlib.pyplot as plt

    from helpers.report.plots import interval_marks

    order = list(order)
    cells = board[CELL].drop_duplicates().to_records(index=False)
    fig, axes = plt.subplots(1, len(cells), figsize=(3.2 * len(cells), 3.0), sharey=True, squeeze=False)
    for ax, (judge, strategy, _input_type) in zip(axes[0], cells, strict=True):
        for k, (method, marker, colour) in enumerate((("plain", "o", "tab:blue"), ("style_control", "s", "tab:orange"))):
            part = board[(board["judge"] == judge) & (board["method"] == method)].set_index("system").loc[order]
            y = [i + (k - 0.5) * 0.25 for i in range(len(order))]
            interval_marks(ax, part["rating"], y, part["rating_lo"], part["rating_hi"], marker=marker, color=colour,
                           label=method.replace("_", " "))
        ax.axvline(1000, color="grey", lw=0.5)
        ax.set_title(judge if strategy == "-" else f"{judge} {strategy}")
        ax.set_yticks(range(len(order)), order)
        ax.invert_yaxis()
        ax.set_xlabel("rating")
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def _judges_diagnosed(diagnosis: pd.DataFrame, kind: str) -> str:
    chosen = [f"`{j}`" for j, d in diagnosis.set_index("judge")["diagnosis"].items() if d == kind]
    return ", ".join(chosen) if chosen else "none"


def summary_values(*, entries: pd.DataFrame, pairs: pd.DataFrame, human: pd.DataFrame, predictions: pd.DataFrame,
                   board: pd.DataFrame, diagnosis: pd.DataFrame, alignment: pd.DataFrame,
                   status: pd.DataFrame) -> dict[str, object]:
    """The numbers the tournament's closing paragraph quotes (``reports/sections/*.qmd``, through
    ``variables``), every one computed from the tables above: samples, comparisons and stored
    verdicts, which judges recover the construction or follow length, what style control did to
    the ``length`` judge (and why it could do no more: in every system pair of unequal lengths one
    system nearly always wrote the longer text), and how often humans preferred MER-Caption+ over
    all labelled pairs, ties included."""
    out: dict[str, object] = {
        "samples": int(entries["name"].nunique()), "comparisons": len(pairs), "verdicts": len(predictions),
        "recovers": _judges_diagnosed(diagnosis, "recovers the construction"),
        "follows_length": _judges_diagnosed(diagnosis, "follows length"),
        "neither": _judges_diagnosed(diagnosis, "recovers neither"),
        "human_mercaption": 100 * float((human["winner"] == "a").mean()), "human_labelled": len(human),
        "human_mercaption_wins": int((human["winner"] == "a").sum()),
        "not_run": ", ".join(f"`{j}`" for j in status.loc[status["status"] != "judged", "judge"]) or "none",
    }
    by = diagnosis.set_index("judge")
    if "length" in by.index:
        row = by.loc["length"]
        ranks = board[board["judge"] == "length"].pivot_table(index="system", columns="method", values="rank")
        fixed = alignment[alignment["equal"] < 1]
        out |= {"length_coef": float(row["length_coef"]), "length_coef_lo": float(row["length_coef_lo"]),
                "length_coef_hi": float(row["length_coef_hi"]),
                "length_ranks_moved": int((ranks["plain"] != ranks["style_control"]).sum()), "length_ranks": len(ranks),
                "longer_writer_min_pct": 100 * float(fixed[["a_longer", "b_longer"]].max(axis=1).min())}
    return out


# --------------------------------------------------------------------------- adaptive design (notebook 07a)


def adaptive_simulation(paper: PaperResults, n_seeds: int = 20, target: float = 0.9,
                        n_batches: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """The saving of the adaptive design over the uniform one, seed by seed, for 10 and 50
    simulated systems at three spreads of strength, judged (both orders) by a simulated judge as
    accurate and as swap-consistent as the paper's best judge
    (:func:`helpers.stats.simulate.adaptive_savings`), and its summary per setting (median with
    its intervals, :func:`helpers.stats.simulate.saving_summary`); plus the judge used."""
    from helpers.report.chapters import paper_best_judge
    from helpers.stats.simulate import HORIZONS, adaptive_savings, saving_summary

    horizons = {key: (size, n_batches or count) for key, (size, count) in HORIZONS.items()}  # n_batches: tests
    best, accuracy, consistency = paper_best_judge(paper)
    per_seed = adaptive_savings(accuracy, consistency, n_seeds=n_seeds, target=target, horizons=horizons)
    judge = {"judge": best.judge, "accuracy": accuracy, "swap_consistency": consistency}
    return per_seed, saving_summary(per_seed).assign(**judge), judge


def adaptive_figure(per_seed: pd.DataFrame, summary: pd.DataFrame, path: str | Path | None = None):
    """The saving (uniform / adaptive comparisons to reach the target) of every simulated seed,
    per spread of strengths, one colour per number of systems, with the median and its 95 %
    bootstrap interval; log scale, a line at 1 (no saving)."""
    import matplotlib.pyplot as plt

    spreads = list(dict.fromkeys(summary["spread"]))
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    sizes = sorted(summary["n_systems"].unique())
    for k, (m, colour) in enumerate(zip(sizes, ("tab:blue", "tab:orange", "tab:green"), strict=False)):
        dx = (k - (len(sizes) - 1) / 2) * 0.25
        for x, spread in enumerate(spreads):
            seeds = per_seed[(per_seed["n_systems"] == m) & (per_seed["spread"] == spread)]["saving"].dropna()
            jitter = np.random.default_rng(x).uniform(-0.06, 0.06, len(seeds))
            ax.scatter(x + dx + jitter, seeds, s=9, color=colour, alpha=0.45, lw=0)
            row = summary[(summary["n_systems"] == m) & (summary["spread"] == spread)]
            if len(row) and np.isfinite(row["saving_median"].iloc[0]):
                r = row.iloc[0]
                ax.errorbar(x + dx, r["saving_median"], yerr=[[r["saving_median"] - r["median_ci_lo"]],
                                                             [r["median_ci_hi"] - r["saving_median"]]],
                            fmt="D", color=colour, ms=6, capsize=3, label=f"{m} systems" if x == 0 else None)
    ax.axhline(1, color="black", lw=0.8, ls="--")
    ax.set_yscale("log")
    ax.set_xticks(range(len(spreads)), [f"{s}\n({int(e)} Elo)" for s, e in
                                        summary.drop_duplicates("spread")[["spread", "spread_elo"]].itertuples(index=False)])
    ax.set(xlabel="spread of the systems' true strengths (best to worst)",
           ylabel="saving: uniform / adaptive comparisons")
    ax.legend(frameon=False)
    fig.tight_layout()
    from helpers.report.plots import save  # the one check that text stays >= 10 px at the shown width

    return save(fig, path)


def adaptive_on_table(entries: pd.DataFrame, folder: str | Path, judge: str = "length", batch_size: int = 100,
                      level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """A real table judged twice by ``judge``: the full round-robin and ``judge --adaptive``
    (into two fresh sub-folders of ``folder``), with the comparisons each judged (each in both
    orders: twice as many judge calls), the batches, why the adaptive design stopped, the run
    folders each wrote, the wall time and the load average of the machine at the end."""
    import os

    from helpers.tournament.design import design_pairs, to_pairs
    from helpers.tournament.judge import judge_adaptive, judge_tournament

    rows = []
    folder = Path(folder)
    tic = time.perf_counter()
    full = design_pairs(entries, seed=seed)
    judge_tournament(to_pairs(full.pairs, entries), [judge], folder / "round_robin" / "predictions", tag="rr",
                     rounds=1, seed=seed)
    rows.append({"design": "round_robin", "comparisons": len(full.pairs), "batches": 1, "stopped": "complete",
                 "seconds": time.perf_counter() - tic, "run_folders": _run_folders(folder / "round_robin")})
    tic = time.perf_counter()
    design = judge_adaptive(entries, folder / "adaptive", judge, batch_size=batch_size, max_comparisons=len(full.pairs),
                            seed=seed, level=level, tag="adaptive", rounds=1)
    rows.append({"design": "adaptive", "comparisons": len(design.pairs), "batches": len(design.manifest["batches"]),
                 "stopped": design.manifest["stopped"], "seconds": time.perf_counter() - tic,
                 "run_folders": _run_folders(folder / "adaptive")})
    out = pd.DataFrame(rows)
    out.insert(2, "judge_calls", 2 * out["comparisons"])
    out["judge"], out["batch_size"] = judge, [None, batch_size]
    out["load_average"] = round(os.getloadavg()[0], 2)
    out["cores"] = os.cpu_count()
    return out


def _run_folders(folder: Path) -> int:
    store = folder / "predictions"
    return sum(1 for p in store.iterdir() if p.is_dir() and not p.name.startswith(".")) if store.is_dir() else 0
