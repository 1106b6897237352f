"""What the report's chapters say: the prose and the chapter logic that arrange computed numbers.

The statistics (``helpers.stats``) compute; this module turns their tables into what a chapter
shows — the main table's "mean ± std" cells, the sentences that quote a computed number, the
rankings and simulations the ranking chapter assembles — so every notebook stays narrative,
parameters and calls. The summary notebook (``09_summary``) writes the numbers the prose quotes (``variables``), the judges
chapter, the limitations and the reproducibility appendix from what earlier steps left behind
(``reports/tables/metrics.csv``, the predictions store and its run manifests, ``params/``), so
every sentence states what *this* build produced and absences (no MLLM judge, no v2 data, a
missing chapter) become limitations instead of silent gaps. The paper's numbers appear only as
rows and quotes labelled "reported by the paper".
"""

from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from helpers import data, paths
from helpers.imports import JUDGED, OFFICIAL, SOURCE_LABELS, official_models
from helpers.judges.registry import list_judges, load_spec
from helpers.prompts import load_prompts, prompts_file
from helpers.report import names, split_front_matter
from helpers.report.setup import Analysis
from helpers.run import store
from helpers.run.provenance import revision_note
from helpers.stats import bt, simulate
from helpers.stats.confound import REPORTED, human_bound, length_columns
from helpers.stats.metrics import (
    CELL,
    best_strategy,
    metrics_table,
    normal_reverse_vote,
    two_class,
    unparsed_flags,
)

PAPER_ROUNDS = 2
ANALYSIS_NOTEBOOKS = ("02_metrics", "03_consistency", "04_voting", "05_ranking", "06_confound", "07_tournament", "07a_adaptive")
# Prompt keys of params/prompts.yaml, in the order the strategies use them.
PROMPT_ROLES = (
    ("S1", "S1 — direct judgment (the MLLM sees the media)"),
    ("describe_video", "S2–S4, step 1 — the MLLM describes the video (Qwen2.5-Omni, Qwen2.5-VL)"),
    ("describe_input", "S2–S4, step 1 — the same request for the other MLLMs"),
    ("S2_judge", "S2 step 2 (the same MLLM, with the media) and S3 (an external text LLM, without)"),
    ("S4_reason", "S4 step 1 — the text LLM reasons"),
    ("S4_extract", "S4 step 2 — the text LLM extracts the answer from its reasoning"),
    ("system_omni", "System message of Qwen2.5-Omni"),
)
MEDIA_PLACEHOLDER = "/path/to/mer2025"
PAPER_METRICS = ("two_class_waf", "two_class_acc", "swap_consistency")
TOLERANCE = 0.01  # points: a recomputed number further from the reported one is flagged


def infer_command(judge: str, media_dir: str | None = MEDIA_PLACEHOLDER) -> str:
    """The papermill command a user runs to add a judge's predictions to the store."""
    command = f"papermill notebooks/01_infer.ipynb out.ipynb -p model {judge} -p strategy all"
    return command + (f" -p media_dir {media_dir}" if media_dir else "")


# --------------------------------------------------------------------------- the paper's reported table


def paper_best(paper: dict | None) -> dict | None:
    """The paper's best judge by two-class WAF, from its reported table."""
    rows = [r for r in (paper or {}).get("judges", []) if isinstance(r, dict) and "two_class_waf" in r]
    return max(rows, key=lambda r: r["two_class_waf"]) if rows else None


def paper_table(paper: dict) -> pd.DataFrame:
    """The paper's main table as rows labelled "reported by the paper", with its human
    consistency bound as a last row (a swap-consistency figure only)."""
    reported = pd.DataFrame(paper["judges"])
    reported.insert(0, "source", REPORTED)
    bound = {"source": REPORTED, "judge": "human consistency bound", "strategy": "",
             "two_class_waf": np.nan, "two_class_acc": np.nan, "swap_consistency": paper["human_consistency_bound"]}
    return pd.concat([reported, pd.DataFrame([bound])], ignore_index=True)


def paper_check(table: pd.DataFrame, paper: dict, mapping: dict[str, dict] | None = None,
                tolerance: float = TOLERANCE) -> pd.DataFrame:
    """Each judge imported from the authors' outputs against the number the paper reports for
    it (its strategy, our recomputation): ``flag`` is True where they differ by more than
    ``tolerance`` points. ``table``: ``metrics.csv`` with a ``source`` column."""
    mapping = official_models() if mapping is None else mapping
    reported = {row["judge"]: row for row in paper.get("judges", [])}
    by_judge = {entry["judge"] or model: entry.get("paper") for model, entry in
                ((m, {"judge": e.get("judge") or m, **e}) for m, e in mapping.items())}
    imported = table[table.get("source", pd.Series(JUDGED, index=table.index)) == OFFICIAL]
    rows = []
    for judge in sorted(imported["judge"].unique()):
        name = by_judge.get(judge)
        if name not in reported:
            continue
        paper_row = reported[name]
        cells = imported[(imported["judge"] == judge) & (imported["strategy"] == paper_row["strategy"])]
        for metric in PAPER_METRICS:
            ours = float(cells[metric].iloc[0]) if len(cells) else np.nan
            diff = ours - float(paper_row[metric])
            rows.append({"judge": judge, "paper judge": name, "strategy": paper_row["strategy"],
                         "input_type": cells["input_type"].iloc[0] if len(cells) else "", "metric": metric,
                         "computed here": ours, "reported by the paper": float(paper_row[metric]),
                         "difference": round(diff, 2), "flag": bool(not np.isfinite(diff) or abs(diff) > tolerance + 1e-9)})
    return pd.DataFrame(rows, columns=["judge", "paper judge", "strategy", "input_type", "metric", "computed here",
                                       "reported by the paper", "difference", "flag"])


def paper_check_markdown(check: pd.DataFrame, tolerance: float = TOLERANCE) -> str:
    """One paragraph on whether the released outputs reproduce the paper's table."""
    if check.empty:
        return ("No judge was imported from the authors' released outputs in this build (pass "
                "`OFFICIAL_OUTPUTS=DIR` to `make report`), so the paper's table is not recomputed here.")
    flagged = check[check["flag"]]
    judges = ", ".join(sorted(check["judge"].unique()))
    if flagged.empty:
        return (f"Recomputed here from the authors' released outputs, {judges} reproduce the paper's two-class WAF, "
                f"accuracy and swap consistency within {tolerance:.2f} points.")
    listing = "; ".join(f"{r['judge']} {r['strategy']} {r['metric']}: {r['computed here']:.2f} computed here vs "
                        f"{r['reported by the paper']:.2f} reported" for _, r in flagged.iterrows())
    return (f"Recomputed from the authors' released outputs, {len(flagged)} number(s) differ from the paper's table "
            f"by more than {tolerance:.2f} points: {listing}.")


# --------------------------------------------------------------------------- where each run came from


def _run_folders(predictions_dir: Path):
    """``(folder, manifest)`` of every run in the store; folders without predictions (e.g.
    tournament designs kept beside the runs) are not runs, a run without a manifest has ``{}``."""
    for folder in sorted(p for p in Path(predictions_dir).glob("*") if (p / "predictions.jsonl").is_file()):
        yield folder, store.read_manifest(folder) or {}


def read_manifests(predictions_dir: Path) -> list[dict]:
    """Each run's manifest, with its folder name as ``run_id`` and its stored row count."""
    return [{"run_id": folder.name, "stored_rows": len(store.read_jsonl(folder / "predictions.jsonl")),
             "manifest": manifest} for folder, manifest in _run_folders(predictions_dir)]


def run_sources(root: str | Path | None = None) -> pd.DataFrame:
    """``judge, strategy, input_type, source, source_label`` of every run folder: judged runs
    (no ``source`` in their manifest) are ``this study``; imported ones say where they came from
    (``helpers.imports`` writes the source)."""
    root = Path(root) if root is not None else paths.predictions_dir()
    rows = []
    for _, manifest in _run_folders(root):
        source = manifest.get("source") or JUDGED
        rows.append({"judge": manifest.get("judge"), "strategy": manifest.get("strategy"),
                     "input_type": manifest.get("input_type"), "source": source,
                     "source_label": SOURCE_LABELS.get(source, source)})
    frame = pd.DataFrame(rows, columns=["judge", "strategy", "input_type", "source", "source_label"])
    return frame.groupby(["judge", "strategy", "input_type"], as_index=False).agg(
        lambda s: " + ".join(sorted(set(s))))


def with_source(table: pd.DataFrame, root: str | Path | None = None) -> pd.DataFrame:
    """``table`` (keyed by judge, strategy, input_type) with ``source`` and ``source_label``
    columns appended; cells without a manifest count as this study's."""
    out = table.drop(columns=["source", "source_label"], errors="ignore").merge(
        run_sources(root), on=["judge", "strategy", "input_type"], how="left")
    out["source"] = out["source"].fillna(JUDGED)
    out["source_label"] = out["source_label"].fillna(SOURCE_LABELS[JUDGED])
    return out


# --------------------------------------------------------------------------- 00 · data audit


def data_markdown(pairs: pd.DataFrame, labels: pd.DataFrame, rates: pd.DataFrame) -> str:
    """The data chapter's paragraph: size, labels, and how often humans preferred the longer text."""
    longer = rates.set_index("quantity").loc["longer description preferred"]
    counts = labels.set_index("label")["pairs"]
    return (
        f"The dataset holds **{len(pairs)} pairs** ({counts['a1']} a1, {counts['a2']} a2, {counts['same']} same). "
        f"Among the {int(longer['pairs'])} decided pairs with texts of unequal length, humans preferred the **longer** "
        f"description in **{longer['percent']:.1f}%** (95% CI {longer['ci_low']:.1f}–{longer['ci_high']:.1f}). "
        "A judge that only counts characters would therefore agree with humans far more often than chance; "
        "see the confound chapter for what that does to judge scores."
    )


# --------------------------------------------------------------------------- 02 · metrics


def metrics_csv(predictions: pd.DataFrame, pairs: pd.DataFrame, cis: pd.DataFrame, root: str | Path | None,
                n_boot: int, seed: int) -> pd.DataFrame:
    """``metrics.csv``: the paper's metrics of every judge cell (``metrics.metrics_table``, CIs from
    ``cis``), the confound audit's length columns, and where each cell's judgements came from."""
    table = metrics_table(predictions, n_boot=n_boot, seed=seed, cis=cis)
    table = table.merge(length_columns(predictions, pairs), on=CELL, how="left")
    table = with_media_errors(table, predictions, root)
    return with_source(table, root)


def with_media_errors(table: pd.DataFrame, predictions: pd.DataFrame, root: str | Path | None) -> pd.DataFrame:
    """``media_error_n`` beside ``unparsed_pct``: each cell's rows of the store (of the datasets scored) whose
    media could not be decoded; they hold no verdict, so the metrics are over the other rows."""
    from helpers.run.results import media_error_counts, stored_rows

    stored = stored_rows(root)
    if not stored.empty and "dataset" in stored.columns and "dataset" in predictions.columns:
        stored = stored[stored["dataset"].isin(set(predictions["dataset"].dropna()))]
    counts = media_error_counts(stored)
    out = table.merge(counts, on=CELL, how="left")
    out["media_error_n"] = out["media_error_n"].fillna(0).astype(int)
    columns = list(table.columns)
    at = columns.index("unparsed_pct") + 1 if "unparsed_pct" in columns else len(columns)
    return out[[*columns[:at], "media_error_n", *columns[at:]]]


def _mean_std(row: pd.Series, column: str) -> str:
    return f"{row[column]:.2f} ± {row[column + '_std']:.2f}"


def main_table(best: pd.DataFrame) -> pd.DataFrame:
    """The paper's main table from each judge's best cell (``metrics.best_strategy`` of
    ``metrics.csv``): mean ± population std over rounds, the WAF's bootstrap CI, unparsed share."""
    rows = [row for _, row in best.iterrows()]
    return pd.DataFrame({
        "judge": best["judge"], "source": best["source_label"], "strategy": best["strategy"],
        "input": best["input_type"], "rounds": best["rounds"],
        "2-class WAF": [_mean_std(r, "two_class_waf") for r in rows],
        "95% CI": [f"[{r.two_class_waf_lo:.2f}, {r.two_class_waf_hi:.2f}]" for r in best.itertuples()],
        "2-class ACC": [_mean_std(r, "two_class_acc") for r in rows],
        "3-class WAF": [_mean_std(r, "three_class_waf") for r in rows],
        "3-class ACC": [_mean_std(r, "three_class_acc") for r in rows],
        "swap consistency": [_mean_std(r, "swap_consistency") for r in rows],
        "unparsed %": [f"{v:.1f}" if pd.notna(v) else "—" for v in best["unparsed_pct"]],
        "flag": unparsed_flags(best).to_numpy(),
    })


def metrics_markdown(best: pd.DataFrame, paper: dict, pairs: pd.DataFrame) -> str:
    """The best judge of this build, beside the paper's best (reported) and the majority-label
    classifier on the same pairs."""
    top, reported = best.iloc[0], paper_best(paper)
    majority = 100 * two_class(pairs["preference"], ["a2"] * len(pairs))["waf"]
    return (
        f"Of the {best['judge'].nunique()} judge(s) run here, **{top['judge']}** ({top['strategy']}, "
        f"{top['input_type']} input) scores best: two-class WAF **{top['two_class_waf']:.2f}** "
        f"(95% CI {top['two_class_waf_lo']:.2f}–{top['two_class_waf_hi']:.2f}), "
        f"two-class accuracy {top['two_class_acc']:.2f}, swap consistency {top['swap_consistency']:.2f}. "
        f"For scale, the best judge reported by the paper, {reported['judge']} ({reported['strategy']}), "
        f"has a reported two-class WAF of {reported['two_class_waf']:.2f}, and a classifier that always answers "
        f"the majority label scores a two-class WAF of {majority:.2f} on these pairs."
    )


# --------------------------------------------------------------------------- 03 · consistency


def _correlation(result: dict) -> str:
    if result["note"] and not np.isfinite(result["r"]):
        return f"not computable ({result['note']})"
    return (f"r = {result['r']:.2f} (95% CI {result['lo']:.2f} to {result['hi']:.2f}, p = {result['pvalue']:.3g}, "
            f"{result['n']} cells)")


def consistency_markdown(ours: dict, theirs: dict, round_consistency: pd.Series) -> str:
    """Our Pearson(two-class WAF, swap consistency) against the one of the paper's reported table
    (``metrics.pearson`` results): same direction, overlapping CIs?"""
    if np.isfinite(ours["r"]) and np.isfinite(theirs["r"]):
        same_sign = np.sign(ours["r"]) == np.sign(theirs["r"])
        overlap = ours["lo"] <= theirs["hi"] and theirs["lo"] <= ours["hi"]
        verdict = ("agree in direction" if same_sign else "disagree in direction") + \
            (" and their CIs overlap" if overlap else " and their CIs do not overlap")
    else:
        verdict = "cannot be compared, because our correlation is not computable"
    return (f"On our judges the correlation between two-class WAF and swap consistency is {_correlation(ours)}; "
            f"on the paper's reported table it is {_correlation(theirs)}. The two {verdict}. "
            f"Mean round consistency of our cells: {round_consistency.mean():.2f}%.")


# --------------------------------------------------------------------------- 04 · voting


def voting_markdown(curve: pd.DataFrame, ranked: pd.DataFrame) -> str:
    """Per voting mode, the best top-k vote against the single best judge, with their CIs and costs."""
    lines = []
    for mode, group in (curve.groupby("mode", sort=False) if len(ranked) > 1 else []):
        top = group.loc[group["two_class_waf"].idxmax()]
        single = group[group["k"] == 1].iloc[0]
        better = top["two_class_waf_lo"] > single["two_class_waf_hi"]
        lines.append(
            f"- **{mode}**: the best vote uses k = {int(top['k'])} judge(s), two-class WAF {top['two_class_waf']:.2f} "
            f"(95% CI {top['two_class_waf_lo']:.2f}–{top['two_class_waf_hi']:.2f}) for {int(top['calls'])} calls, "
            f"against {single['two_class_waf']:.2f} ({single['two_class_waf_lo']:.2f}–{single['two_class_waf_hi']:.2f}) "
            f"for the single best judge at {int(single['calls'])} calls; the intervals "
            f"{'do not overlap' if better else 'overlap'}.")
    if len(ranked) < 2:
        lines.append(f"Only one judge is available, so voting cannot go beyond k = 1 (two-class WAF "
                     f"{curve['two_class_waf'].iloc[0]:.2f}, normal rounds only).")
    return "\n".join(lines)


# --------------------------------------------------------------------------- 05 · ranking systems


def system_ratings(pairs: pd.DataFrame, predictions: pd.DataFrame, ranked: pd.DataFrame, n_boot: int, seed: int,
                   prior: float) -> tuple[dict[str, pd.DataFrame], pd.DataFrame, str]:
    """Bradley–Terry ratings of the systems that wrote the pairs (``model1``/``model2``), from the
    human labels and from each ranked cell's normal–reverse votes.

    Returns the comparisons per source of labels, the ratings of every source (a ``source``
    column) and the reference system (the first by name, anchored at 1000)."""
    sources = {"human labels": bt.label_comparisons(pairs)}
    for row in ranked.itertuples():
        cell = predictions[(predictions["judge"] == row.judge) & (predictions["strategy"] == row.strategy)
                           & (predictions["input_type"] == row.input_type)]
        sources[f"{row.judge} ({row.strategy})"] = bt.label_comparisons(pairs, normal_reverse_vote(cell))
    reference = sorted(set(pairs["model1"]) | set(pairs["model2"]))[0]
    rated = [bt.bradley_terry(c, n_boot=n_boot, seed=seed, reference=reference, prior=prior).assign(source=s)
             for s, c in sources.items()]
    return sources, pd.concat(rated, ignore_index=True), reference


def ranking_agreement(ratings: pd.DataFrame, sources: dict[str, pd.DataFrame], reference: str) -> pd.DataFrame:
    """Per source of labels: the top system, the rating gap of the non-reference system with its
    CI, Kendall tau against the human ranking, and per-pair agreement with the human labels."""
    human = ratings[ratings["source"] == "human labels"].set_index("system")["log_strength"]
    rows = []
    for source, group in ratings.groupby("source", sort=False):
        strength = group.set_index("system")["log_strength"].reindex(human.index)
        tau, _ = bt.kendall_tau(human.to_numpy(), strength.to_numpy())
        others = group[group["system"] != reference]
        merged = sources[source].merge(sources["human labels"], on="name", suffixes=("", "_human"))
        rows.append({"source": source, "top system": group.iloc[0]["system"],
                     "rating gap": float(others["rating"].iloc[0] - 1000),
                     "gap 95% CI": f"[{others['rating_lo'].iloc[0] - 1000:.0f}, {others['rating_hi'].iloc[0] - 1000:.0f}]",
                     "Kendall tau vs human": tau,
                     "pair agreement %": 100 * float((merged["winner"] == merged["winner_human"]).mean())})
    return pd.DataFrame(rows)


def paper_best_judge(paper: dict) -> tuple[dict, float, float]:
    """The paper's best judge (by two-class WAF) with its reported two-class accuracy and swap
    consistency as fractions (4 decimals): the simulated judge "as good as the paper's best"."""
    best = paper_best(paper)
    return best, round(best["two_class_acc"] / 100, 4), round(best["swap_consistency"] / 100, 4)


def fidelity_simulation(n_systems: int, grid: list[int], accuracies: list[float], p_best: float, s_best: float,
                        n_reps: int, seed: int) -> pd.DataFrame:
    """Kendall tau of the Bradley–Terry ranking against the truth vs comparisons judged: judges of
    each accuracy on ``grid``, then a judge of accuracy ``p_best`` and swap consistency ``s_best``
    judged in one order and in both (a finer grid), labelled in a ``judge`` column."""
    curves = [simulate.fidelity_curve(n_systems, grid, accuracies, n_reps=n_reps, seed=seed)]
    fine = np.unique(np.round(np.geomspace(100, 25600, 17)).astype(int))
    for both in (False, True):
        curves.append(simulate.fidelity_curve(n_systems, fine, [p_best], swap_consistency=s_best, both_orders=both,
                                             n_reps=n_reps, seed=seed + 1))
    simulation = pd.concat(curves, ignore_index=True)
    simulation["judge"] = [f"p = {a:g}" + (f", s = {s:g}, {'both orders' if b else 'one order'}" if s < 1 else "")
                           for a, s, b in zip(simulation["accuracy"], simulation["swap_consistency"],
                                              simulation["both_orders"], strict=True)]
    return simulation


def ranking_cost_markdown(needed: pd.DataFrame, best: dict, p_best: float, s_best: float, n_systems: int,
                          target: float, n_reps: int) -> str:
    """How many comparisons a judge as good as the paper's best needs (``needed``:
    ``bt.comparisons_needed`` of the simulation), in one order and in both."""
    def cost(both: bool) -> str:
        row = needed[(needed["accuracy"] == p_best) & (needed["swap_consistency"] == s_best)
                     & (needed["both_orders"] == both)]
        n, calls = row["n_comparisons"].iloc[0], row["calls"].iloc[0]
        if not np.isfinite(n):
            return "more than the largest grid point"
        return f"about {int(n):,} comparisons ({int(calls):,} judge calls)"

    return (f"A judge as accurate as the paper's best ({best['judge']}, reported two-class accuracy "
            f"{100 * p_best:.2f}% and swap consistency {100 * s_best:.2f}%) needs {cost(False)} judged in one order, "
            f"or {cost(True)} when each comparison is judged in both orders, for the Bradley–Terry ranking of "
            f"{n_systems} systems to reach a mean Kendall tau of {target} with the truth "
            f"({n_reps} simulated replicates per point).")


# --------------------------------------------------------------------------- 09 · summary: its inputs


def read_registry(folder: Path | None = None) -> pd.DataFrame:
    """One row per registered judge (``helpers.judges.registry``, validated): name, family, backend,
    checkpoint, input type, the name of its API key variable."""
    rows = []
    for name in list_judges(folder):
        spec = load_spec(name, folder)
        rows.append({"judge": spec.name, "family": spec.family, "backend": spec.backend,
                     "checkpoint": spec.checkpoint or "", "input_type": spec.input_type,
                     "api_key_env": spec.api_key_env or ""})
    return pd.DataFrame(rows, columns=["judge", "family", "backend", "checkpoint", "input_type", "api_key_env"])


def runs_overview(predictions: pd.DataFrame) -> pd.DataFrame:
    """What is in the predictions store, per judge × strategy × input type."""
    columns = ["judge", "strategy", "input_type", "orders", "rounds", "pairs", "rows"]
    if predictions.empty:
        return pd.DataFrame(columns=columns)
    grouped = predictions.groupby(["judge", "strategy", "input_type"], sort=True)
    overview = grouped.agg(
        orders=("order", lambda s: "+".join(sorted(s.unique()))),
        rounds=("round", "nunique"), pairs=("name", "nunique"), rows=("name", "size"),
    )
    return overview.reset_index()[columns]


def read_metrics(reports_dir: Path) -> pd.DataFrame | None:
    path = Path(reports_dir) / "tables" / "metrics.csv"
    return pd.read_csv(path) if path.is_file() else None


@dataclass
class Context:
    """Everything the summary notebook knows about this build of the report."""

    dataset: str
    reports_dir: Path
    predictions_dir: Path
    registry: pd.DataFrame
    overview: pd.DataFrame
    metrics: pd.DataFrame | None
    paper: dict | None
    prompts: dict[str, str] | None
    manifests: list[dict]
    data_checked: data.Checked | None = None
    data_error: str | None = None
    missing_notebooks: list[str] = field(default_factory=list)
    missing_chapters: list[str] = field(default_factory=list)

    @property
    def human(self) -> float | None:
        return human_bound(self.paper)

    @property
    def cpu_judges(self) -> set[str]:
        return set(self.registry.loc[self.registry["backend"] == "cpu", "judge"])

    @property
    def judges_run(self) -> list[str]:
        return sorted(self.overview["judge"].unique())

    @property
    def model_judges_run(self) -> list[str]:
        return [j for j in self.judges_run if j not in self.cpu_judges]

    @property
    def model_judges_missing(self) -> list[str]:
        model = self.registry.loc[self.registry["backend"] != "cpu", "judge"]
        return [j for j in model if j not in set(self.judges_run)]


def collect(analysis: Analysis) -> Context:
    """Read every input of the summary (``analysis``: the notebook's :func:`setup`, without
    predictions), tolerating the ones an incomplete build lacks."""
    reports, predictions_root = analysis.reports_dir, analysis.predictions_dir
    context = Context(
        dataset=analysis.dataset, reports_dir=reports, predictions_dir=predictions_root,
        registry=read_registry(), overview=runs_overview(store.read_predictions(predictions_root)),
        metrics=read_metrics(reports), paper=analysis.paper,
        prompts=load_prompts() if prompts_file().is_file() else None,
        manifests=read_manifests(predictions_root),
    )
    try:
        context.data_checked = data.check_dataset(analysis.dataset, analysis.data_dir)
    except data.DataError as exc:
        context.data_error = str(exc)
    context.missing_notebooks = [n for n in ANALYSIS_NOTEBOOKS if not (reports / "executed" / f"{n}.ipynb").is_file()]
    index = reports / "index.qmd"
    if index.is_file():  # the report's own chapter list says which chapters should exist
        meta, _ = split_front_matter(index.read_text(encoding="utf-8"))
        context.missing_chapters = [c for c in meta.get("chapters", []) if not (reports / c).is_file()]
    return context


# --------------------------------------------------------------------------- headline numbers


def best_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Each judge's best cell (:func:`helpers.stats.metrics.best_strategy`), best judge first; judges
    that tie are ordered by name (the report's one tie rule, as ``variables.best_judge``)."""
    best = best_strategy(table)
    return best.sort_values(["two_class_waf", "judge"], ascending=[False, True]).reset_index(drop=True)


# --------------------------------------------------------------------------- judges chapter


def judges_table(context: Context) -> pd.DataFrame:
    """Every registered judge: where it runs, and whether (and how much) it ran in this build."""
    ran = context.overview.groupby("judge").agg(
        strategies=("strategy", lambda s: ", ".join(sorted(set(s)))),
        rounds=("rounds", "max"), pairs=("pairs", "max"),
    )
    imported = {m["manifest"]["judge"]: f" ({m['manifest'].get('source_label') or m['manifest']['source']})"
                for m in context.manifests if m["manifest"].get("source") and m["manifest"].get("judge")}
    rows = []
    for spec in context.registry.itertuples(index=False):
        where = "CPU (here)" if spec.backend == "cpu" else ("API" if spec.backend == "openai" else "GPU")
        if spec.judge in ran.index:
            got = ran.loc[spec.judge]
            status = _ran(got) + imported.get(spec.judge, "")
        else:
            status = "registered, not run here"
        rows.append({"judge": spec.judge, "runs on": where, "input": spec.input_type,
                     "model": spec.checkpoint or "—", "status": status})
    for judge in sorted(set(ran.index) - set(context.registry["judge"])):
        got = ran.loc[judge]
        rows.append({"judge": judge, "runs on": "?", "input": "?", "model": "not in params/models/",
                     "status": _ran(got) + imported.get(judge, "")})
    return pd.DataFrame(rows, columns=["judge", "runs on", "input", "model", "status"])


def _ran(got: pd.Series) -> str:
    strategies = "" if got["strategies"] == "-" else f"{got['strategies']}; "
    rounds = "1 round" if got["rounds"] == 1 else f"{got['rounds']} rounds"
    return f"ran: {strategies}{rounds}, {got['pairs']} pairs"


def judges_markdown(context: Context) -> str:
    """Which judges ran here and the exact commands that add the others."""
    run = context.judges_run
    lines = []
    if run:
        cpu = [j for j in run if j in context.cpu_judges]
        lines.append(f"This build holds predictions of {len(run)} judge(s): "
                     + ", ".join(f"`{j}`" for j in run) + "."
                     + (f" Of these, {len(cpu)} are CPU baselines that read only the two texts." if cpu else ""))
    else:
        lines.append("The predictions store of this build is empty: no judge has run.")
    missing = context.model_judges_missing
    if missing:
        lines += [
            "",
            f"{len(missing)} MLLM or LLM judge(s) did not run here: " + ", ".join(f"`{j}`" for j in missing)
            + ". They need a GPU (or an API key) and the MER2025 videos. To add one, run the inference "
            "notebook on a machine that has them (media folder with `<name>.mp4` and `<name>.wav`), then "
            "`make report` again — the analyses pick up every run in the predictions store:",
            "",
            "```bash",
            infer_command("qwen25omni" if "qwen25omni" in missing else missing[0]),
            "```",
            "",
            "Replace the model name with any judge above (`-p strategy S1` for a single strategy). "
            "API judges read their key from the environment variable named in `params/models/<judge>.yaml`.",
        ]
    return "\n".join(lines)


def prompts_markdown(prompts: dict[str, str] | None) -> str:
    """The S1–S4 prompt texts exactly as sent (placeholders in braces)."""
    if not prompts:
        return "The prompt file `params/prompts.yaml` is not present in this build."
    lines = ["The prompts are the paper's, sent byte for byte (typos and spacing included), quoted from "
             "the authors' released code; placeholders in braces are filled with the cleaned descriptions."]
    for key, role in PROMPT_ROLES:
        if key in prompts:
            lines += ["", f"**{role}** (`{key}`)", "", "```text", str(prompts[key]), "```"]
    return "\n".join(lines)


# --------------------------------------------------------------------------- limitations


def v2_available(data_dir=None) -> bool:
    """Whether EmoPrefer v2 files are at hand without downloading (an explicit folder or the cache)."""
    spec = data.dataset_spec("emopreferv2")
    folders = [Path(f) for f in (data_dir, os.environ.get(data.DATA_ENV)) if f] + [data.cache_dir("emopreferv2")]
    return any((folder / spec.files["normal"]).is_file() for folder in folders)


def limitations(context: Context, data_dir=None) -> list[str]:
    """Limitations of this build, derived from what it lacks, plus those of the design itself."""
    items = []
    if not context.model_judges_run:
        items.append(
            "**No MLLM judge ran in this build.** The machine has no GPU and the MER2025 videos are not here, "
            "so the paper's central judges (Qwen2.5-Omni, Qwen2.5-VL, …) are represented only by the numbers "
            "the paper reports; our measured results cover the CPU baselines. "
            f"`{infer_command('qwen25omni')}` adds the paper's best judge on a GPU machine.")
    elif context.model_judges_missing:
        items.append("Some registered MLLM/LLM judges did not run: "
                     + ", ".join(f"`{j}`" for j in context.model_judges_missing) + ".")
    rounds = context.overview["rounds"].max() if not context.overview.empty else None
    if rounds is not None and rounds < PAPER_ROUNDS:
        items.append(f"Judges ran {rounds} round(s) here; the paper uses {PAPER_ROUNDS}, so round consistency "
                     "and round-averaged numbers are not directly comparable.")
    if not v2_available(data_dir):
        items.append("**EmoPrefer-Data v2 is absent** (2,096 pairs, labels of 14 annotators). Everything here is "
                     "measured on v1's 574 pairs with majority labels only, so the human consistency bound "
                     "cannot be recomputed and is quoted from the paper.")
    checked = context.data_checked
    if context.data_error:
        items.append(f"The data could not be checked: {context.data_error}")
    elif checked is not None and checked.sha_ok is False:
        items.append("The data files' sha256 differ from the paper's pinned files: results are not comparable "
                     "with the paper's.")
    if context.human is None:
        items.append("The paper's reported table (`params/paper_results.yaml`) is missing, so no reported "
                     "numbers are shown beside ours.")
    if context.metrics is None:
        items.append("`reports/tables/metrics.csv` is missing: the metrics notebook did not run in this build.")
    if context.missing_notebooks:
        items.append("Analysis notebooks not executed in this build: "
                     + ", ".join(f"`{n}`" for n in context.missing_notebooks) + ".")
    if context.missing_chapters:
        items.append("Report chapters not written yet: " + ", ".join(f"`{c}`" for c in context.missing_chapters) + ".")
    items.append("The CPU judges see only the two texts, never the video: where they score well, the labels "
                 "reward properties of the texts (length, writing system) rather than emotion understanding.")
    items.append("Bootstrap intervals resample pairs and treat the human majority labels as error-free; "
                 "annotator disagreement is not propagated.")
    return items


def limitations_markdown(context: Context, data_dir=None) -> str:
    return "\n".join(f"- {item}" for item in limitations(context, data_dir))


# --------------------------------------------------------------------------- reproducibility


def data_table(context: Context) -> pd.DataFrame:
    """sha256 of each data file used, and whether it matches the paper's pinned hash."""
    checked = context.data_checked
    if checked is None:
        return pd.DataFrame({"file": ["—"], "sha256": [context.data_error or "not checked"], "pinned": ["—"]})
    rows = [{"file": name, "sha256": actual,
             "pinned": "—" if not pinned else ("matches" if actual == pinned else "DIFFERS")}
            for name, (actual, pinned) in checked.sha256.items()]
    return pd.DataFrame(rows, columns=["file", "sha256", "pinned"])


def _field(manifest: dict, key: str):
    value = manifest.get(key)
    return "—" if value is None or isinstance(value, (dict, list)) else value


def runs_table(context: Context) -> pd.DataFrame:
    """One row per run folder, from its manifest (written by the engine): how much ran, at what
    cost in model calls, when, from which code (the run id names judge, strategy, input, data)."""
    rows = []
    for run in context.manifests:
        m = run["manifest"]
        calls = m.get("calls_total")
        status = _field(m, "status")
        if isinstance(m.get("error"), dict):  # a crashed run says how (engine: type and message)
            status = f"{status}: {m['error'].get('type')}"
        unparsed = (m.get("parse") or {}).get("unparsed_pct")
        rows.append({
            "run": run["run_id"], "rows": run["stored_rows"], "rounds": _field(m, "rounds"),
            "status": status, "model calls": sum(calls.values()) if isinstance(calls, dict) else "—",
            "unparsed %": unparsed if unparsed is not None else "—",
            "created": str(_field(m, "created"))[:19], "git": str(_field(m, "git_revision"))[:10],
        })
    columns = ["run", "rows", "rounds", "status", "model calls", "unparsed %", "created", "git"]
    return pd.DataFrame(rows, columns=columns)


def manifests_html(context: Context) -> str:
    """Every run's full manifest (parameters, versions, hashes; never secrets), folded."""
    if not context.manifests:
        return "<p>No run manifests: the predictions store is empty.</p>"
    blocks = [
        f"<details><summary>Manifest of run <code>{html.escape(run['run_id'])}</code></summary>"
        f"<pre>{html.escape(json.dumps(run['manifest'], indent=2, ensure_ascii=False, default=str))}</pre></details>"
        for run in context.manifests
    ]
    return "\n".join(blocks)


def reproduce_markdown(context: Context) -> str:
    """The code revision and the two commands that rebuild this report."""
    return "\n".join([
        f"Code revision: `{revision_note()}`. Predictions store: {len(context.manifests)} run(s).",
        "",
        "Rebuild this report (CPU judges, analyses, report; `EMOPREFER_DATA` points at the CSVs when offline), "
        "and run the tests:",
        "",
        "```bash",
        "EMOPREFER_DATA=../shared/data/emoprefer make report",
        "make test",
        "```",
        "",
        "Add an MLLM judge on a GPU machine with the MER2025 media, then rebuild:",
        "",
        "```bash",
        infer_command("qwen25omni"),
        "```",
    ])


def headline_numbers(context: Context) -> dict[str, float | str | None]:
    """The numbers the abstract quotes, as data (the notebook saves them for checks)."""
    out: dict[str, float | str | None] = {"human_bound_reported_by_paper": context.human}
    if context.metrics is not None and not context.metrics.empty:
        best = best_rows(context.metrics)
        out.update(best_judge=best.iloc[0]["judge"], best_two_class_waf=float(best.iloc[0]["two_class_waf"]))
        length = best[best["judge"] == "length"]
        out["length_two_class_waf"] = float(length.iloc[0]["two_class_waf"]) if not length.empty else None
    return out




# --------------------------------------------------------------------------- the paper-shaped main table

HUMAN_ROW = "Human annotators: agreement between annotators, before the consensus filter"


def results_main(best: pd.DataFrame, length: pd.DataFrame, paper: dict | None, n_decided: int,
                 cis: pd.DataFrame | None = None) -> pd.DataFrame:
    """The main results table as data: the paper's reported rows (approximate 95% intervals over
    ``n_decided`` pairs, ``paper.reported_rows``) and each judge run here at its best strategy
    (``best``: ``best_rows`` of ``metrics.csv``, bootstrap CIs), with the length-balanced accuracy
    and the accuracy on shorter-preferred pairs (``length``: ``confound.length_report``), and the
    CI-aware rank on two-class WAF over all rows; ``cis`` (``metrics.ci_table``) gives our rows'
    accuracy intervals. The paper's human agreement is a last row with
    its one number under swap consistency, the quantity it is measured like."""
    from helpers.stats import paper as paper_view

    reported = pd.DataFrame((paper or {}).get("judges", []))
    columns = ["source", "judge", "strategy", "input_type", "pairs", "two_class_waf", "two_class_waf_lo",
               "two_class_waf_hi", "two_class_acc", "two_class_acc_lo", "two_class_acc_hi", "swap_consistency",
               "len_balanced_acc", "len_balanced_lo", "len_balanced_hi", "len_discordant_acc", "rank"]
    theirs = paper_view.reported_rows(reported, n_decided).assign(source=REPORTED, input_type="", pairs=n_decided) \
        if len(reported) else pd.DataFrame(columns=columns)
    keep = [*CELL, "len_balanced_acc", "len_balanced_lo", "len_balanced_hi", "len_discordant_acc"]
    mine = best_rows(best)
    ours = mine.drop(columns=[c for c in keep if c not in CELL], errors="ignore").merge(length[keep], on=CELL, how="left")
    ours["source"] = mine["source_label"].to_numpy() if "source_label" in mine else SOURCE_LABELS[JUDGED]
    if cis is not None and len(cis):
        acc = cis[cis["metric"] == "two_class_acc"].rename(columns={"lo": "two_class_acc_lo", "hi": "two_class_acc_hi"})
        ours = ours.drop(columns=["two_class_acc_lo", "two_class_acc_hi"], errors="ignore").merge(
            acc[[*CELL, "two_class_acc_lo", "two_class_acc_hi"]], on=CELL, how="left")
    ours["judge"] = ours["judge"].map(names.judge)
    rows = pd.concat([theirs, ours], ignore_index=True).reindex(columns=columns)
    rows["rank"] = paper_view.ci_rank(rows)
    rows = rows.sort_values(["two_class_waf", "judge"], ascending=[False, True], kind="mergesort")
    bound = human_bound(paper)
    if bound is not None:
        rows = pd.concat([rows, pd.DataFrame([{"source": REPORTED, "judge": HUMAN_ROW, "swap_consistency": bound}])],
                         ignore_index=True)
    return rows.reindex(columns=columns).reset_index(drop=True)


def results_display(rows: pd.DataFrame) -> pd.DataFrame:
    """``results_main`` as the report shows it: the strategy beside the judge's name ("Qwen2.5-Omni (S2)"),
    column names in words, "—" for unknown."""
    shown = rows.drop(columns=["input_type", "pairs", "strategy"]).copy()
    shown["judge"] = [j if pd.isna(s) or s in ("", "-") else f"{j} ({s})" for j, s in zip(rows["judge"], rows["strategy"],
                                                                                       strict=True)]
    shown["rank"] = shown["rank"].map(lambda r: "" if pd.isna(r) else str(int(r)))
    shown = shown.rename(columns={"len_balanced_lo": "len_balanced_acc_lo", "len_balanced_hi": "len_balanced_acc_hi"})
    return shown.rename(columns={"len_discordant_acc": "Accuracy, shorter preferred", "rank": "Rank (CI-aware)"})


def protocol_long(card: pd.DataFrame) -> pd.DataFrame:
    """The protocol card one row per judge and setting (decoding, media, prompt), this study's
    value beside the paper's code, so it fits a page; the wide card stays in protocol_card.csv."""
    rows = []
    for row in card.itertuples(index=False):
        settings = [("decoding", row.decoding, row.paper_decoding), ("media", row.media, row.paper_media),
                    ("prompt", row.prompt, "")]
        if getattr(row, "vllm_engine", "-") != "-":
            settings.append(("vLLM engine", row.vllm_engine, ""))
        for setting, ours, theirs in settings:
            rows.append({"Judge": names.judge(row.judge), "Setting": setting, "This study": ours,
                         "Paper's code": theirs or "—"})
        rows.append({"Judge": names.judge(row.judge), "Setting": "differences", "This study": row.differences,
                     "Paper's code": ""})
    return pd.DataFrame(rows)


def examples_markdown(examples: pd.DataFrame, limit: int = 420) -> str:
    """Shorter-preferred pairs quoted (``paper.shorter_examples``): the preferred text, then the
    longer text humans rejected, each cut at ``limit`` characters with a visible ellipsis."""
    if examples.empty:
        return "No decided pair has humans preferring the shorter description."

    def quote(text: str) -> str:
        text = " ".join(str(text).split())
        return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " …"

    parts = []
    for row in examples.itertuples(index=False):
        parts += [f"**Pair {row.name}.** Preferred ({row.preferred_chars} characters):", "",
                  f"> {quote(row.preferred)}", "", f"Rejected ({row.rejected_chars} characters):", "",
                  f"> {quote(row.rejected)}", ""]
    return "\n".join(parts)
