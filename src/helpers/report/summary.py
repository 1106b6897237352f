"""What the report says about itself: headline numbers, judges run or not, limitations, provenance.

``notebooks/09_summary.ipynb`` calls these to write the abstract, the judges chapter, the
limitations and the reproducibility appendix. They read only what earlier steps left behind
(``reports/tables/metrics.csv``, the predictions store and its run manifests, ``params/``), so
every sentence states what *this* run produced, and absences (no MLLM judge, no v2 data, a
missing chapter) become limitations instead of silent gaps. The paper's numbers appear only as
quotes labelled "reported by the paper".
"""

from __future__ import annotations

import html
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pandas as pd

from helpers import data, paths
from helpers.judges.registry import list_judges, load_spec
from helpers.prompts import load_prompts, prompts_file
from helpers.report import split_front_matter
from helpers.report.setup import Analysis
from helpers.run import store
from helpers.stats.metrics import best_strategy

PAPER_ROUNDS = 2
ANALYSIS_NOTEBOOKS = ("02_metrics", "03_consistency", "04_voting", "05_ranking", "06_confound", "07_tournament")
PACKAGES = (
    "emoprefer-study", "numpy", "pandas", "scipy", "scikit-learn", "statsmodels", "matplotlib", "seaborn",
    "papermill", "nbformat", "markdown", "torch", "transformers", "sentence-transformers", "av", "vllm",
)
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


def infer_command(judge: str, media_dir: str | None = MEDIA_PLACEHOLDER) -> str:
    """The papermill command a user runs to add a judge's predictions to the store."""
    command = f"papermill notebooks/01_infer.ipynb out.ipynb -p model {judge} -p strategy all"
    return command + (f" -p media_dir {media_dir}" if media_dir else "")


# --------------------------------------------------------------------------- inputs


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


def human_bound(paper: dict | None) -> float | None:
    """The human consistency bound the paper reports (``human_consistency_bound``, else the first
    number under a key naming 'human')."""
    def walk(node, inside: bool) -> float | None:
        if isinstance(node, (int, float)) and not isinstance(node, bool) and inside:
            return float(node)
        if isinstance(node, dict):
            for key, value in node.items():
                found = walk(value, inside or "human" in str(key).lower())
                if found is not None:
                    return found
        return None
    if not paper:
        return None
    if isinstance(paper.get("human_consistency_bound"), (int, float)):
        return float(paper["human_consistency_bound"])
    return walk(paper, False)


def paper_best(paper: dict | None) -> dict | None:
    """The paper's best judge by two-class WAF, from its reported table."""
    rows = [r for r in (paper or {}).get("judges", []) if isinstance(r, dict) and "two_class_waf" in r]
    return max(rows, key=lambda r: r["two_class_waf"]) if rows else None


def read_manifests(predictions_dir: Path) -> list[dict]:
    """Each run's manifest (with its folder name as ``run_id`` and its stored row count); folders
    without predictions (e.g. tournament designs kept beside the runs) are not runs."""
    runs = []
    for folder in sorted(p for p in Path(predictions_dir).glob("*") if (p / "predictions.jsonl").is_file()):
        manifest_path = folder / "manifest.json"
        manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
        rows = len(store.read_jsonl(folder / "predictions.jsonl"))
        runs.append({"run_id": folder.name, "stored_rows": rows, "manifest": manifest})
    return runs


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
        registry=read_registry(), overview=runs_overview(store.load_predictions(predictions_root)),
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


def _pct(value: float) -> str:
    return f"{value:.2f}"


def _ci(row: pd.Series, column: str = "two_class_waf") -> str:
    lo, hi = row.get(f"{column}_lo"), row.get(f"{column}_hi")
    return f" (95% CI {_pct(lo)}–{_pct(hi)})" if pd.notna(lo) and pd.notna(hi) else ""


def _cell(row: pd.Series) -> str:
    strategy = "" if row["strategy"] in ("-", "", None) or pd.isna(row["strategy"]) else f", {row['strategy']}"
    return f"`{row['judge']}`{strategy}, {row['input_type']} input"


def best_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Each judge's best cell (:func:`helpers.stats.metrics.best_strategy`), best judge first; judges
    that tie are ordered by name, so the abstract names the same one on every build."""
    best = best_strategy(table)
    return best.sort_values(["two_class_waf", "judge"], ascending=[False, True]).reset_index(drop=True)


def abstract_markdown(context: Context) -> str:
    """The abstract: the question, then what this run measured, quoting computed numbers only."""
    parts = [
        "Can a multimodal large language model (MLLM) stand in for the people who judge which of two "
        "emotion descriptions of a video is better? We reproduce EmoPrefer (ICLR 2026) as a notebook-first, "
        "re-executable study and extend it with uncertainty estimates, a confound audit and judge-based "
        "ranking of description systems."
    ]
    checked = context.data_checked
    if checked is not None and not checked.normal.empty:
        parts.append(f"The data are the {len(checked.normal)} preference pairs of `{context.dataset}`.")
    metrics = context.metrics
    if metrics is None or metrics.empty:
        parts.append("No judge metrics were computed in this build (`reports/tables/metrics.csv` is absent), "
                     "so no headline result can be stated.")
    else:
        best = best_rows(metrics)
        top = best.iloc[0]
        kind = "a CPU baseline" if top["judge"] in context.cpu_judges else "an MLLM judge"
        if top["judge"] == "length":
            kind = "the baseline that simply prefers the longer description"
        parts.append(
            f"Of the {best['judge'].nunique()} judges scored on this run, the highest two-class weighted F1 "
            f"(WAF) is {_pct(top['two_class_waf'])}{_ci(top)}, reached by {_cell(top)} ({kind})."
        )
        length = best[best["judge"] == "length"]
        if not length.empty and top["judge"] != "length":
            row = length.iloc[0]
            parts.append(
                f"A judge that simply prefers the longer description reaches {_pct(row['two_class_waf'])}"
                f"{_ci(row)} two-class WAF."
            )
        if not context.model_judges_run:
            parts.append("No MLLM judge ran on this machine (no GPU, no video media), so MLLM results "
                         "appear only as numbers reported by the paper.")
    reported = paper_best(context.paper)
    if reported is not None:
        parts.append(f"For reference, the paper's best judge, {reported['judge']} ({reported.get('strategy', '')}), "
                     f"reaches {_pct(reported['two_class_waf'])} two-class WAF (reported by the paper).")
    if context.human is not None:
        parts.append(f"The paper reports a human consistency bound of {_pct(context.human)} "
                     "(reported by the paper, not recomputed here).")
    parts.append("Every number in this report is computed by the executed notebooks of this build; "
                 "the appendix lists the data hashes, code revision and commands that reproduce it.")
    return " ".join(parts)


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
            status = "not run in this build"
        rows.append({"judge": spec.judge, "runs on": where, "input": spec.input_type,
                     "model": spec.checkpoint or "—", "status": status})
    for judge in sorted(set(ran.index) - set(context.registry["judge"])):
        got = ran.loc[judge]
        rows.append({"judge": judge, "runs on": "?", "input": "?", "model": "not in params/models/",
                     "status": _ran(got) + imported.get(judge, "")})
    return pd.DataFrame(rows, columns=["judge", "runs on", "input", "model", "status"])


def _ran(got: pd.Series) -> str:
    strategies = "" if got["strategies"] == "-" else f"{got['strategies']}; "
    return f"ran: {strategies}{got['rounds']} round(s), {got['pairs']} pairs"


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


def git_revision(root: Path | None = None) -> str:
    """The commit the build ran from, marked when the working tree had uncommitted changes."""
    root = root or paths.project_root()
    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""
    revision = git("rev-parse", "HEAD")
    if not revision:
        return "no git commit (not a git checkout, or no commit yet)"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return revision + (" with uncommitted changes" if dirty else "")


def package_versions(names=PACKAGES) -> pd.DataFrame:
    rows = [{"package": "python", "version": sys.version.split()[0]}]
    for name in names:
        try:
            rows.append({"package": name, "version": metadata.version(name)})
        except metadata.PackageNotFoundError:
            rows.append({"package": name, "version": "not installed"})
    return pd.DataFrame(rows)


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
        f"Code revision: `{git_revision()}`. Predictions store: {len(context.manifests)} run(s).",
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



def styled(table: pd.DataFrame):
    """A summary table as the report shows it: no index, text left-aligned (these tables are
    mostly text), hashes in monospace and allowed to wrap so the table fits the page."""
    style = (table.style.hide(axis="index")
             .set_properties(**{"text-align": "left"})
             .set_table_styles([{"selector": "th", "props": [("text-align", "left")]}]))
    if "sha256" in table.columns:
        style = style.set_properties(subset=["sha256"], **{"font-family": "monospace", "word-break": "break-all"})
    return style
