"""What the report's chapters show: the chapter logic that arranges computed numbers into tables.

The statistics (``helpers.stats``) compute; this module turns their tables into what a chapter
shows — the main table's "mean ± std" cells, the rankings and simulations the ranking chapter
assembles, the summary notebook's judges, build and provenance tables — so every notebook stays
narrative, parameters and calls. It computes values, never sentences: the prose is in
``reports/sections/*.qmd`` and quotes these values through ``{{< var >}}`` shortcodes
(``helpers.report.variables``), so one number has one source. What this build lacks (no MLLM
judge, no v2 data, a missing chapter) is a row of :func:`build_table`, shown in the appendix. The
paper's numbers enter only through ``helpers.reported`` and appear as rows labelled "reported by
the paper".
"""

from __future__ import annotations

import html
import json
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
from helpers.reported import REPORTED, PaperResults, ReportedJudge
from helpers.run import results, store
from helpers.run.provenance import revision_note
from helpers.stats import bt, simulate
from helpers.stats.confound import length_columns
from helpers.stats.metrics import (
    CELL,
    METRICS_COLUMNS,
    best_order,
    best_strategy,
    metrics_table,
    normal_reverse_vote,
    unparsed_flags,
)
from helpers.stats.metrics import (
    wilson_interval as metrics_wilson,
)

PAPER_ROUNDS = 2
ANALYSIS_NOTEBOOKS = ("02_metrics", "03_consistency", "04_voting", "05_ranking", "06_confound", "06b_probes",
                      "06c_reward_models", "07_tournament", "07a_adaptive")
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


def paper_table(paper: PaperResults) -> pd.DataFrame:
    """The paper's main table as rows labelled "reported by the paper" (its agreement between
    annotators is not a judge's row: the methods state it once, in words)."""
    reported = paper.table()
    reported.insert(0, "source", REPORTED)
    return reported


def paper_check(table: pd.DataFrame, paper: PaperResults, mapping: dict[str, dict] | None = None,
                tolerance: float = TOLERANCE) -> pd.DataFrame:
    """Each judge imported from the authors' outputs against the number the paper reports for
    it (its strategy, our recomputation): ``flag`` is True where they differ by more than
    ``tolerance`` points. ``table``: ``metrics.csv`` with a ``source`` column."""
    mapping = official_models() if mapping is None else mapping
    reported = {row.judge: row for row in paper.judges}
    by_judge = {entry["judge"] or model: entry.get("paper") for model, entry in
                ((m, {"judge": e.get("judge") or m, **e}) for m, e in mapping.items())}
    imported = table[table.get("source", pd.Series(JUDGED, index=table.index)) == OFFICIAL]
    rows = []
    for judge in sorted(imported["judge"].unique()):
        name = by_judge.get(judge)
        if name not in reported:
            continue
        paper_row = reported[name]
        cells = imported[(imported["judge"] == judge) & (imported["strategy"] == paper_row.strategy)]
        for metric in PAPER_METRICS:
            ours = float(cells[metric].iloc[0]) if len(cells) else np.nan
            diff = ours - getattr(paper_row, metric)
            rows.append({"judge": judge, "paper judge": name, "strategy": paper_row.strategy,
                         "input_type": cells["input_type"].iloc[0] if len(cells) else "", "metric": metric,
                         "computed here": ours, "reported by the paper": getattr(paper_row, metric),
                         "difference": round(diff, 2), "flag": bool(not np.isfinite(diff) or abs(diff) > tolerance + 1e-9)})
    return pd.DataFrame(rows, columns=["judge", "paper judge", "strategy", "input_type", "metric", "computed here",
                                       "reported by the paper", "difference", "flag"])


# --------------------------------------------------------------------------- where each run came from


def _run_folders(predictions_dir: Path):
    """``(folder, manifest)`` of every run in the store, the manifest typed (``store.read_manifest``);
    folders without predictions (e.g. tournament designs kept beside the runs) are not runs, a run
    without a manifest has None."""
    for folder in sorted(p for p in Path(predictions_dir).glob("*") if (p / "predictions.jsonl").is_file()):
        yield folder, store.read_manifest(folder)


def read_manifests(predictions_dir: Path) -> list[dict]:
    """Each run's typed manifest (or None), with its folder name as ``run_id`` and its stored row count."""
    return [{"run_id": folder.name, "stored_rows": len(store.read_jsonl(folder / "predictions.jsonl")),
             "manifest": manifest} for folder, manifest in _run_folders(predictions_dir)]


def run_sources(root: str | Path | None = None) -> pd.DataFrame:
    """``judge, strategy, input_type, source, source_label`` of every run folder: judged runs
    (no ``source`` in their manifest) are ``this study``; imported ones say where they came from
    (``helpers.imports`` writes the source)."""
    root = Path(root) if root is not None else paths.predictions_dir()
    left_out = set(results.left_out_runs(root)["run_id"])  # not complete: in no chapter, so not a source
    rows = []
    for folder, manifest in _run_folders(root):
        if folder.name in left_out:
            continue
        if manifest is None:
            continue  # nothing says where it came from: with_source counts it as this study's
        source = manifest.source or JUDGED
        rows.append({"judge": manifest.judge, "strategy": manifest.strategy,
                     "input_type": manifest.input_type, "source": source,
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
    """``media_error_n`` right after the agreed metric columns (``metrics.METRICS_COLUMNS``, which end
    near ``unparsed_pct``): each cell's rows of the complete runs (of the datasets scored) whose media
    could not be decoded; they hold no verdict, so the metrics are over the other rows."""
    from helpers.run.results import media_error_counts, stored_rows

    stored = stored_rows(root, complete_only=True)
    if not stored.empty and "dataset" in stored.columns and "dataset" in predictions.columns:
        stored = stored[stored["dataset"].isin(set(predictions["dataset"].dropna()))]
    if "media" in stored.columns:  # the judges' own runs, as the metrics (load_predictions)
        stored = stored[stored["media"].fillna("real") == "real"]
    counts = media_error_counts(stored)
    out = table.merge(counts, on=CELL, how="left")
    out["media_error_n"] = out["media_error_n"].fillna(0).astype(int)
    columns = list(table.columns)
    agreed = [c for c in METRICS_COLUMNS if c in columns]
    at = columns.index(agreed[-1]) + 1 if agreed else len(columns)
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
        sources[names.cell(row.judge, row.strategy)] = bt.label_comparisons(pairs, normal_reverse_vote(cell))
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
        rows.append({"labels from": source, "top system": group.iloc[0]["system"],
                     "rating gap": float(others["rating"].iloc[0] - 1000),
                     "gap 95% CI": f"[{others['gap_lo'].iloc[0]:.0f}, {others['gap_hi'].iloc[0]:.0f}]",
                     "Kendall tau vs human": tau,
                     "pair agreement %": 100 * float((merged["winner"] == merged["winner_human"]).mean())})
    return pd.DataFrame(rows)


def paper_best_judge(paper: PaperResults) -> tuple[ReportedJudge, float, float]:
    """The paper's best judge (by two-class WAF) with its reported two-class accuracy and swap
    consistency as fractions (4 decimals): the simulated judge "as good as the paper's best"."""
    best = paper.best()
    return best, round(best.two_class_acc / 100, 4), round(best.swap_consistency / 100, 4)


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
    paper: PaperResults
    prompts: dict[str, str] | None
    manifests: list[dict]
    data_checked: data.Checked | None = None
    data_error: str | None = None
    missing_notebooks: list[str] = field(default_factory=list)
    missing_chapters: list[str] = field(default_factory=list)
    left_out: pd.DataFrame | None = None  # runs not complete, in no chapter (results.left_out_runs)

    @property
    def human(self) -> float | None:
        return self.paper.human_two_class

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
        registry=read_registry(), overview=runs_overview(results.stored_rows(predictions_root, complete_only=True)),
        metrics=read_metrics(reports), paper=analysis.paper,
        prompts=load_prompts() if prompts_file().is_file() else None,
        manifests=read_manifests(predictions_root), left_out=results.left_out_runs(predictions_root),
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


# --------------------------------------------------------------------------- judges chapter


def judges_table(context: Context) -> pd.DataFrame:
    """Every registered judge: where it runs, and whether (and how much) it ran in this build."""
    ran = context.overview.groupby("judge").agg(
        strategies=("strategy", lambda s: ", ".join(sorted(set(s)))),
        rounds=("rounds", "max"), pairs=("pairs", "max"),
    )
    typed = [run["manifest"] for run in context.manifests if run["manifest"] is not None]
    imported = {m.judge: f" ({m.source_label or m.source})" for m in typed if m.source and m.judge}
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


def prompts_markdown(prompts: dict[str, str] | None) -> str:
    """The S1–S4 prompt texts exactly as sent (placeholders in braces), each under its role; the
    sentence that introduces them is in the appendix chapter."""
    if not prompts:
        return "`params/prompts.yaml`: absent."
    lines: list[str] = []
    for key, role in PROMPT_ROLES:
        if key in prompts:
            lines += ["", f"**{role}** (`{key}`)", "", "```text", str(prompts[key]), "```"]
    return "\n".join(lines)


# --------------------------------------------------------------------------- what this build lacks


def v2_available(data_dir=None) -> bool:
    """Whether EmoPrefer v2 files are at hand without downloading (an explicit folder or the cache)."""
    try:
        return data.local_data_dir("emopreferv2", data_dir) is not None  # the loader's own lookup
    except data.DataError:
        return False  # a named folder without the v2 files: the loader would refuse it too


def _listed(items: list[str]) -> str:
    return ", ".join(items) if items else "none"


def left_out_listing(context: Context) -> list[str]:
    """Each run no chapter uses (``results.left_out_runs``) as ``run_id (status, n rows stored)``."""
    if context.left_out is None:
        return []
    return [f"{r.run_id} ({r.status}, {r.rows} rows stored)" for r in context.left_out.itertuples()]


def build_table(context: Context, data_dir=None) -> pd.DataFrame:
    """What this build holds and lacks, as values (``key``, ``check``, ``status``): the judges run
    and not run, rounds, v2, the data hashes, the paper's table, the analyses and chapters. The
    build-gaps table of the appendix shows it; ``variables`` quotes its statuses by ``key``; the
    sentences around them are in the chapters."""
    rounds = int(context.overview["rounds"].max()) if not context.overview.empty else 0
    checked = context.data_checked
    sha = ("not checked: " + context.data_error if context.data_error else "not checked" if checked is None
           else "match the pinned files" if checked.sha_ok else "differ from the pinned files")
    rows = [
        ("judges_run", "judges with predictions here", _listed([names.judge(j) for j in context.judges_run])),
        ("cpu_judges", "of which text-only CPU judges", str(len([j for j in context.judges_run if j in context.cpu_judges]))),
        ("model_judges_run", "MLLM or LLM judges run here", _listed(context.model_judges_run)),
        ("model_judges_missing", "registered MLLM or LLM judges not run", _listed(context.model_judges_missing)),
        ("rounds", "rounds per judge (the paper: 2)", str(rounds)),
        ("v2", "EmoPrefer-Data v2 files", "present" if v2_available(data_dir) else "absent"),
        ("sha256", "data files' sha256", sha),
        ("paper", "the paper's reported table", "read" if context.paper else "missing"),
        ("metrics", "reports/tables/metrics.csv", "missing" if context.metrics is None else "written"),
        ("notebooks", "analysis notebooks not executed", _listed(context.missing_notebooks)),
        ("chapters", "report chapters missing", _listed(context.missing_chapters)),
        ("infer_command", "command that adds an MLLM judge", infer_command("qwen25omni")),
        ("revision", "code revision", revision_note()),
        ("runs", "run folders in the predictions store", str(len(context.manifests))),
        ("left_out", "runs not complete, left out of every chapter", _listed(left_out_listing(context))),
    ]
    return pd.DataFrame(rows, columns=["key", "check", "status"])


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


def _field(value: object):
    return "—" if value is None or isinstance(value, (dict, list)) else value


def runs_table(context: Context) -> pd.DataFrame:
    """One row per run folder, from its manifest (written by the engine): how much ran, at what
    cost in model calls, when, from which code (the run id names judge, strategy, input, data)."""
    rows = []
    for run in context.manifests:
        m = run["manifest"] or store.RunManifest(run["run_id"], status=None)
        calls = m.recorded_calls
        status = _field(m.status)
        if m.error is not None:  # a crashed run says how (engine: type and message)
            status = f"{status}: {m.error.get('type')}"
        unparsed = m.parse.get("unparsed_pct")
        rows.append({
            "run": run["run_id"], "rows": run["stored_rows"], "rounds": _field(m.rounds),
            "status": status, "model calls": sum(calls.values()) if calls is not None else "—",
            "unparsed %": unparsed if unparsed is not None else "—",
            "created": str(_field(m.created))[:19], "git": str(_field(m.git_revision))[:10],
        })
    columns = ["run", "rows", "rounds", "status", "model calls", "unparsed %", "created", "git"]
    return pd.DataFrame(rows, columns=columns)


def _as_json(manifest: store.RunManifest | None) -> dict:
    return {} if manifest is None else manifest.to_json()


def manifests_html(context: Context) -> str:
    """Every run's full manifest (parameters, versions, hashes; never secrets), folded."""
    if not context.manifests:
        return "<p>No run manifests: the predictions store is empty.</p>"
    blocks = [
        f"<details><summary>Manifest of run <code>{html.escape(run['run_id'])}</code></summary>"
        f"<pre>{html.escape(json.dumps(_as_json(run['manifest']), indent=2, ensure_ascii=False, default=str))}"
        "</pre></details>"
        for run in context.manifests
    ]
    return "\n".join(blocks)


# --------------------------------------------------------------------------- the paper-shaped main table

def results_main(best: pd.DataFrame, length: pd.DataFrame, paper: PaperResults, n_decided: int) -> pd.DataFrame:
    """The main results table as data: the paper's reported rows (approximate 95% intervals over
    ``n_decided`` pairs, ``paper.reported_rows``) and each judge run here at its best strategy
    (``best``: ``metrics.best_strategy`` of ``metrics.csv``, bootstrap CIs of the WAF), with the
    length-balanced accuracy and the accuracy on shorter-preferred pairs (``length``:
    ``confound.length_report``), and the CI-aware rank on two-class WAF over all rows, best first on
    the unrounded means. An accuracy is a share of the decided pairs, so every row's accuracy carries
    the one interval of a share, the Wilson interval over ``n_decided`` pairs (the longer-text rule's
    accuracy is the share of pairs where the longer text was preferred, with the same interval).
    The paper's agreement between annotators is not a judge and has no row."""
    from helpers.stats import paper as paper_view

    reported = paper.table()
    columns = ["source", "judge", "strategy", "input_type", "pairs", "two_class_waf", "two_class_waf_lo",
               "two_class_waf_hi", "two_class_acc", "two_class_acc_lo", "two_class_acc_hi", "swap_consistency",
               "len_balanced_acc", "len_balanced_lo", "len_balanced_hi", "len_discordant_acc", "rank"]
    theirs = paper_view.reported_rows(reported, n_decided).assign(source=REPORTED, input_type="", pairs=n_decided) \
        if len(reported) else pd.DataFrame(columns=columns)
    keep = [*CELL, "len_balanced_acc", "len_balanced_lo", "len_balanced_hi", "len_discordant_acc"]
    mine = best_strategy(best)
    ours = mine.drop(columns=[c for c in keep if c not in CELL], errors="ignore").merge(length[keep], on=CELL, how="left")
    ours["source"] = mine["source_label"].to_numpy() if "source_label" in mine else SOURCE_LABELS[JUDGED]
    # a mean over R rounds of whole counts is a multiple of 1/R: recover it from the 2-decimal percent
    rounds = ours["rounds"].astype(float).clip(lower=1)
    successes = np.round(ours["two_class_acc"].astype(float) / 100 * n_decided * rounds) / rounds
    bounds = [metrics_wilson(k, n_decided) for k in successes]
    ours["two_class_acc_lo"], ours["two_class_acc_hi"] = [100 * b[0] for b in bounds], [100 * b[1] for b in bounds]
    ours["judge"] = ours["judge"].map(names.judge)
    rows = pd.concat([theirs, ours], ignore_index=True).reindex(columns=[*columns, "two_class_waf_unrounded"])
    rows["rank"] = paper_view.ci_rank(rows)
    return best_order(rows).reindex(columns=columns).reset_index(drop=True)


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
