"""Run one judge over a set of pairs: every strategy, order and round, into the store.

``run`` is what ``notebooks/01_infer.ipynb`` calls. It takes a dataset name (the benchmark) or
any pairs table (tournaments pass their own), checks the media before loading any model, and
writes one run folder per strategy, so S3/S4 can be added later without touching S1/S2 and a
killed run resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
from tqdm import tqdm

from helpers import paths, prompts
from helpers.data import RunPairs, check_media, is_pair_file, prepare_pairs, run_pairs, select_pairs
from helpers.judges.base import ENGINES, STRATEGIES, JudgeSpec
from helpers.judges.registry import EngineChoice, RunJudges, make_pair_judge, run_judges
from helpers.run.identity import RunPlan, check_folders, check_identity, plan_runs
from helpers.run.results import load_run, parse_report, run_metrics
from helpers.run.store import (
    MEDIA_ERROR,
    RunManifest,
    RunSession,
    load_steps,
    now,
    prediction_row,
    read_jsonl,
    read_manifest,
    row_key,
)
from helpers.run.strategies import Item, Pipeline, derangement

MEDIA_SETTINGS = ("real", "none", "mismatched")
"""``media``: what a model judge is shown -- its pair's own clip (``real``), no media (``none``: the text prompt
alone, in the family's text-only chat template) or another pair's clip (``mismatched``: a seeded derangement,
:func:`helpers.run.strategies.derangement`). Does the judge watch the video? A run with ``none`` or
``mismatched`` is part of the run identity and the run id (``media=none``) and is kept out of the judge's
metrics; the report compares it with the ``real`` run (``helpers.stats.media``)."""
ORDER_CHOICES = {"normal": ("normal",), "reverse": ("reverse",), "both": ("normal", "reverse")}
ROLE_NAMES = {"mllm": "judge", "llm": "llm"}  # pipeline roles as the manifest's ``engines`` names them
UNPARSED_WARN_PCT = 50.0  # a run with more answers than this (percent) matching no parser rule ends with a warning
PATH_PARAMETERS = ("media_dir", "output_dir", "data_dir")  # read from the project root when relative
RENAMED = {"backend": "engine", "llm_backend": "llm_engine"}
"""Run settings that changed name (the engine choice was called ``backend``, a word the judge
YAML uses for where a judge runs: local, openai, cpu)."""


class UnparsedAnswersWarning(UserWarning):
    """Most of a run's answers matched no parser rule and were scored ``same`` by default."""


# --------------------------------------------------------------------------- inputs


def from_root(path: str | Path | None) -> Path | None:
    """A user's relative path, read from the project root: notebooks run with their own
    folder as the working directory, but people write paths from the repository root."""
    if path is None or path == "":
        return None
    path = Path(path).expanduser()
    return path if path.is_absolute() else paths.project_root() / path


def check_renamed(settings: Mapping[str, Any]) -> None:
    """Refuse a setting by its old name, saying the new one: ignoring ``-p backend vllm`` would
    run on another engine than asked without a word."""
    old = [name for name in RENAMED if name in settings]
    if old:
        raise TypeError("; ".join(f"the run setting {name!r} is now called {RENAMED[name]!r}" for name in old))


# --------------------------------------------------------------------------- what a run is


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Every setting of one run, checked when it is made (see :func:`run` for what each means).

    The one schema of run parameters: 01_infer's parameters cell, a grid cell's parameters
    (``helpers.run.launch``) and a tournament shard all become one of these (``from_parameters``),
    and tests hold the notebook's cell and the tournament's flags to its fields, so a new setting
    is one new field here."""

    model: str | JudgeSpec
    strategy: str = "all"
    order: str = "both"
    rounds: int = 2
    dataset: str = "emoprefer"
    input_type: str | None = None
    judge_llm: str | JudgeSpec | None = "qwen25"
    engine: EngineChoice = "auto"
    batch_size: int | None = None
    limit: int | None = None
    names: Sequence[str] | None = None
    media_dir: str | Path | None = None
    output_dir: str | Path | None = None
    seed: int = 0
    data_dir: str | Path | None = None
    pairs: pd.DataFrame | None = None
    run_id: str | None = None
    llm_engine: EngineChoice | None = None
    progress: bool = True
    overwrite: bool = False
    unparsed_warn_pct: float = UNPARSED_WARN_PCT
    share_descriptions: str | bool = "auto"
    device: str | None = None
    retry_errors: bool = False
    media: str = "real"

    PROGRAMMATIC: ClassVar[tuple[str, ...]] = ("pairs", "run_id", "llm_engine", "progress")
    """Fields only code passes (a table, a folder name, a callable engine, a progress bar): not
    notebook parameters."""
    RUNTIME: ClassVar[tuple[str, ...]] = ("overwrite", "retry_errors")
    """Fields that say how to run, not what the run is (a grid cell is the same cell with or without)."""

    def __post_init__(self) -> None:
        if self.strategy not in (*STRATEGIES, "all", "-"):
            raise ValueError(f"strategy must be one of {STRATEGIES}, 'all' or '-', got {self.strategy!r}")
        if self.order not in ORDER_CHOICES:
            raise ValueError(f"order must be one of {tuple(ORDER_CHOICES)}, got {self.order!r}")
        if int(self.rounds) < 1:
            raise ValueError(f"rounds must be at least 1, got {self.rounds}")
        for name in ("engine", "llm_engine"):
            choice = getattr(self, name)
            if not (callable(choice) or choice in ENGINES or (name == "llm_engine" and choice is None)):
                raise ValueError(f"{name} must be one of {ENGINES} (or a callable spec -> Backend), got {choice!r}")
        if self.media not in MEDIA_SETTINGS:
            raise ValueError(f"media must be one of {MEDIA_SETTINGS}, got {self.media!r}")
        object.__setattr__(self, "rounds", int(self.rounds))
        object.__setattr__(self, "seed", int(self.seed))

    @classmethod
    def notebook_parameters(cls) -> dict[str, Any]:
        """The settings a notebook or a grid cell passes, with their defaults (``model`` first,
        without one): what 01_infer's parameters cell must list."""
        return {f.name: (None if f.default is dataclasses.MISSING else f.default) for f in dataclasses.fields(cls)
                if f.name not in cls.PROGRAMMATIC}

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, Any], **programmatic: Any) -> RunConfig:
        """A config from notebook/grid parameters (relative paths read from the project root);
        other keys of ``parameters`` (a notebook's globals) are ignored, a missing ``model`` is an error."""
        if "model" not in parameters:
            raise TypeError("run parameters need 'model' (a judge name: params/models/<model>.yaml)")
        check_renamed(parameters)
        wanted = {k: parameters[k] for k in cls.notebook_parameters() if k in parameters}
        wanted.update({k: from_root(wanted[k]) for k in PATH_PARAMETERS if k in wanted})
        if is_pair_file(wanted.get("dataset", "")):  # a pair file, read from the root like the other paths
            wanted["dataset"] = str(from_root(wanted["dataset"]))
        return cls(**wanted, **programmatic)

    @property
    def root(self) -> Path:
        """The store root the run writes into."""
        return Path(self.output_dir) if self.output_dir is not None else paths.predictions_dir()

    def parameters(self, descriptions_shared: bool | None) -> dict:
        """The settings as the manifest records them (JSON-ready; ``pairs`` only as given or not)."""
        def plain(value: Any) -> Any:
            if isinstance(value, JudgeSpec):
                return value.name
            if isinstance(value, Path):
                return str(value)
            if callable(value):
                return getattr(value, "__name__", "custom")
            return list(value) if isinstance(value, tuple | list) else value

        record = {name: plain(getattr(self, name)) for name in self.notebook_parameters()}
        return record | {"pairs_given": self.pairs is not None, "descriptions_shared": descriptions_shared}


@dataclasses.dataclass(frozen=True)
class RunContext:
    """What a :class:`RunConfig` resolves to before any model loads: its judges as they will run
    (``helpers.judges.registry.RunJudges``) and its pairs (``helpers.data.RunPairs``). Shared by
    :func:`run` and :func:`planned_runs`, so a grid computes a cell's identity exactly as the run
    would."""

    config: RunConfig
    judges: RunJudges
    pairs: RunPairs

    @property
    def orders(self) -> tuple[str, ...]:
        return ORDER_CHOICES[self.config.order]

    @property
    def dataset(self) -> str:
        """The name the run's folders and rows carry (``file-<stem>`` for a pair file)."""
        return self.pairs.dataset or self.config.dataset

    @property
    def media_dir(self) -> Path | None:
        """The run's media folder: as given, else a registered pair file's own folder (MER2026's
        ``video/`` and ``audio/`` sit beside its CSVs)."""
        source = self.pairs.pair_file
        if self.config.media_dir is None and source is not None and source.name:
            return source.path.parent
        return None if self.config.media_dir is None else Path(self.config.media_dir)

    def plans(self) -> list[RunPlan]:
        """The run folders this run writes, each with its identity and the row keys it must hold."""
        c = self.config
        return plan_runs(self.judges, self.pairs, dataset=self.dataset, seed=c.seed, orders=self.orders,
                         rounds=c.rounds, run_id=c.run_id, media=c.media)

    def manifest(self, plan: RunPlan) -> dict:
        """What a run folder's manifest says about the run beside its identity and scope."""
        c, j = self.config, self.judges
        engines = {"judge": j.engines["mllm"]} | ({"llm": j.engines["llm"]} if plan.llm else {})
        return {"judge": j.spec.name, "strategy": plan.strategy, "input_type": j.input_type, "dataset": self.dataset,
                "parameters": c.parameters(j.descriptions_shared), "rounds": c.rounds, "orders": list(self.orders),
                "seed": c.seed, "judge_spec": spec_record(j.spec), "llm_spec": spec_record(plan.llm),
                "engines": engines, "prompt_hashes": prompts.prompt_hashes(), "data_sha256": self.pairs.data_sha256,
                "pair_file": str(self.pairs.pair_file.path) if self.pairs.pair_file else None,
                "labelled": self.pairs.labelled}


def spec_record(spec: JudgeSpec | None) -> dict | None:
    """The judge's YAML fields: checkpoint id or path, generation settings, the NAME of the key
    variable (never its value)."""
    if spec is None:
        return None
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in spec.__dict__.items()}


def prepare_run(config: RunConfig) -> RunContext:
    """Everything a run is before any model loads: its judges, then its pairs."""
    judges = run_judges(config.model, strategy=config.strategy, judge_llm=config.judge_llm,
                        input_type=config.input_type, batch_size=config.batch_size, device=config.device,
                        engine=config.engine, llm_engine=config.llm_engine,
                        share_descriptions=config.share_descriptions)
    pairs = run_pairs(config.dataset, config.pairs, config.data_dir, config.names, config.limit)
    return RunContext(config=config, judges=judges, pairs=pairs)


def planned_runs(config: RunConfig) -> list[RunPlan]:
    """The run folders ``run(config)`` writes, each with its identity and the row keys it must
    hold (what ``helpers.run.launch`` compares before it calls a cell finished)."""
    return prepare_run(config).plans()


def run_state(plan: RunPlan, root: str | Path | None = None) -> str:
    """``complete`` only when the folder records this very identity and holds every row of the
    plan; otherwise ``missing``, ``other identity``, or the folder's own status (``failed``,
    ``running``, ``interrupted``, ``incomplete``)."""
    folder = (Path(root) if root is not None else paths.predictions_dir()) / plan.run_id
    manifest = read_manifest(folder)
    if manifest is None:
        return "missing"
    if manifest.identity_sha256 != plan.identity_sha256:
        return "other identity"
    held = {r["key"] for r in read_jsonl(folder / "predictions.jsonl")}
    if plan.expected <= held:
        return "complete"
    status = manifest.status
    return status if status in ("failed", "running", "interrupted") else "incomplete"


# --------------------------------------------------------------------------- running


def run(model: str | JudgeSpec | RunConfig, strategy: str = "all", **settings: Any) -> pd.DataFrame:
    """Judge the pairs with ``model``; returns one summary row per run folder written.

    ``run(model, strategy, **settings)`` builds the :class:`RunConfig` (an unknown setting is a
    TypeError naming it); ``run(config)`` takes one ready-made.

    ``strategy``: S1..S4, ``all`` (the judge's strategies) or ``-`` (CPU judges, which ignore
    the strategy). ``engine``: auto / transformers / vllm / openai, or a callable
    ``spec -> Backend`` (tests, custom servers). ``pairs`` replaces the dataset files (a
    ``media_name`` column names each pair's media when several pairs share a video).
    A run folder is resumed only by a run of the same identity (``helpers.run.identity``);
    ``overwrite=True`` moves a folder of another identity aside instead of refusing.
    ``unparsed_warn_pct``: warn (and record in the manifest) when more than this share of a
    run's answers matched no parser rule.
    ``share_descriptions``: ``auto`` (the paper: one description for both orders only where
    decoding is deterministic), True or False; part of the run's identity. ``device``: e.g.
    ``cpu`` to run a local model on the CPU on purpose (otherwise a >= 1 B model that finds no
    GPU stops with what to install).
    """
    context = prepare_run(_config(model, strategy, settings))
    judges, config = context.judges, context.config
    plans = context.plans()
    if not config.overwrite:
        check_folders(plans, config.root)
    if judges.cpu:
        if config.strategy not in ("all", "-"):
            print(f"note: {judges.spec.name!r} is a CPU judge that reads the texts itself; strategy "
                  f"{config.strategy!r} is recorded as '-'")
        return pd.DataFrame([run_cpu(context, plans[0])])
    if config.media != "none":
        shown = media_map(context)
        check_media(sorted({shown.get(m, m) for m in context.pairs.media_names}), context.media_dir,
                    judges.input_type)
    pipeline = Pipeline(
        judges.spec, judges.factories["mllm"], input_type=judges.input_type, dataset=context.dataset,
        media_dir=context.media_dir, seed=config.seed, llm_spec=judges.llm_spec, llm=judges.factories["llm"],
        steps=cached_steps(config.root, judges), batch_size=config.batch_size, progress=config.progress,
        share_descriptions=judges.descriptions_shared, engines=judges.engines, media=config.media,
        media_map=media_map(context))
    try:
        return pd.DataFrame([run_strategy(pipeline, plan, context) for plan in plans])
    finally:
        pipeline.close()


def media_map(context: RunContext) -> dict[str, str]:
    """For ``media="mismatched"``: each sample's media -> the clip it is shown instead, a derangement of the
    media of the WHOLE pairs table seeded by the run's seed (so a run that grows from ``limit=10`` to the
    full set keeps every mapping); empty otherwise."""
    if context.config.media != "mismatched":
        return {}
    return derangement(sorted(set(context.pairs.full["normal"]["media_name"])), context.config.seed)


def _config(model: str | JudgeSpec | RunConfig, strategy: str, settings: dict[str, Any]) -> RunConfig:
    if isinstance(model, RunConfig):
        if settings or strategy != "all":
            raise TypeError("run(config) takes no further settings; change them with dataclasses.replace(config, ...)")
        return model
    check_renamed(settings)
    return RunConfig(model, strategy, **settings)


def cached_steps(root: Path, judges: RunJudges) -> dict[str, str]:
    """Descriptions and reasoning of this judge and input type already in the store (any run folder)."""
    return {s["key"]: s["text"] for s in load_steps(root)
            if s.get("judge") == judges.spec.name and s.get("input_type") == judges.input_type}


def _refusal(folder: Path, manifest: RunManifest | None, identity: dict, done: set) -> None:
    """The engine's rule for resuming: the same identity, or an empty folder (``check_identity``)."""
    check_identity(folder, manifest.identity if manifest is not None else None, identity, bool(done))


def _open(plan: RunPlan, context: RunContext) -> RunSession:
    """The run folder of ``plan``, checked and started (moved aside first under ``overwrite``)."""
    details = context.manifest(plan)
    session = RunSession(plan.run_id, context.config.root, identity=plan.identity,
                         identity_sha256=plan.identity_sha256, scope=plan.scope, secrets=context.judges.secrets,
                         overwrite=context.config.overwrite, refuse=_refusal,
                         retry_errors=bool(context.config.retry_errors)).open()
    if session.store.retried:
        print(f"note: retry_errors=True: {session.store.retried} media_error row(s) of {session.folder} set aside "
              "(retried_errors.jsonl) and judged again")
    if session.moved is not None:
        print(f"note: overwrite=True: the run folder {session.folder} held another run; moved it to {session.moved}")
    try:
        session.start(details)
    except BaseException:
        session.store.close()
        raise
    return session


def _parse_warning(run_id: str, report: dict, threshold: float) -> str | None:
    pct = report["unparsed_pct"]
    if pct is None or pct <= threshold:
        return None
    return (f"warning: {pct:.1f}% of the {report['rows']} answers of run {run_id} matched no rule of the parser "
            f"and were scored as 'same' (threshold {threshold:g}%): the judge is not answering with a1/a2/same, "
            f"so its metrics mean little. First raw answers: {report['examples']!r}. Check the model or endpoint, "
            "the prompt and the generation settings (e.g. max_tokens).")


def _close(session: RunSession, plan: RunPlan, context: RunContext) -> dict:
    """End a session: status, parse report and warning in the manifest; the run's summary row."""
    store = session.store
    rows = store.rows()
    report = parse_report([r for r in rows if r.get("status", "ok") == "ok"])
    report["media_error_n"] = sum(r.get("status") == MEDIA_ERROR for r in rows)
    warning = _parse_warning(store.run_id, report, float(context.config.unparsed_warn_pct))
    status = session.close(plan.expected, parse=report, warnings=[warning] if warning else [])
    if warning:
        warnings.warn(store.redact(warning), UnparsedAnswersWarning, stacklevel=4)
    return {"run_id": store.run_id, "strategy": plan.strategy, "dataset": context.dataset,
            "status": status, "rows": len(store.done), "rows_new": session.written,
            "missing": len(plan.expected - store.done), "calls": dict(session.calls),
            "unparsed_pct": report["unparsed_pct"], "media_error_n": report["media_error_n"],
            "folder": str(store.folder)}


def labels_of(table: pd.DataFrame) -> list[str | None]:
    """Human labels where the pairs have them (tournament pairs may not): None, never NaN."""
    if "preference" not in table.columns:
        return [None] * len(table)
    return [None if pd.isna(v) else str(v) for v in table["preference"]]


def items_for(table: pd.DataFrame, order: str, rounds: int) -> list[Item]:
    """Every pair of one order in every round: the units that become predictions rows."""
    return [
        Item(row.name, row.media_name, order, rnd, row.a1, row.a2, label)
        for rnd in range(rounds)
        for row, label in zip(table.itertuples(index=False), labels_of(table), strict=True)
    ]


def run_strategy(pipeline: Pipeline, plan: RunPlan, context: RunContext) -> dict:
    """One strategy into its own run folder, skipping rows already stored."""
    tables, rounds = context.pairs.tables, context.config.rounds
    with _open(plan, context) as session:
        items = [it for o in context.orders for it in items_for(tables[o], o, rounds)]
        todo = [it for it in items if row_key(plan.strategy, it.order, it.round, it.name) not in session.done]
        before, backoffs_before = Counter(pipeline.calls), len(pipeline.backoffs)

        def checkpoint(answered: bool = True) -> None:
            """Keep the manifest's call counts current, so a killed session still tells its cost,
            and record each backend's own description once it has been built and used, each
            out-of-memory back-off and each undecodable media file."""
            info = {ROLE_NAMES[role]: value for role, value in pipeline.backend_info.items()}
            session.checkpoint(Counter(pipeline.calls) - before, info, backoffs=pipeline.backoffs[backoffs_before:],
                               media_errors=pipeline.media_errors, answered=answered)

        def keep_steps(records: list[dict]) -> None:
            session.append_steps(records)
            checkpoint()

        def keep(rows: list[dict]) -> None:
            session.append(rows)
            checkpoint()

        try:
            pipeline.predict(plan.strategy, todo, keep, run_id=plan.run_id, on_steps=keep_steps,
                             on_sending=session.sending)
        finally:
            session.calls = Counter(pipeline.calls) - before
            if session.store.locked:  # the back-offs before a failure are on record too; a batch that was
                checkpoint(answered=False)  # out when it failed stays counted as in flight
        return _close(session, plan, context)


def run_cpu(context: RunContext, plan: RunPlan) -> dict:
    """A CPU judge reads each order's whole table (cross-fitted judges fit on the other folds,
    so a subset run gives the same labels as a full one) and keeps the chosen pairs; one batch
    per order and round, each followed by a manifest checkpoint."""
    spec = context.judges.spec
    judge = make_pair_judge(spec)
    chosen = set(context.pairs.names)
    with _open(plan, context) as session:
        info = {"judge": {"backend": "cpu", "judge_class": spec.options.get("judge_class")}}
        jobs = [(o, r) for o in context.orders for r in range(context.config.rounds)]
        for order, rnd in tqdm(jobs, desc=f"{spec.name}", disable=not context.config.progress):
            _cpu_job(judge, context.pairs.full[order], chosen, order, rnd, context, session, plan.run_id)
            session.checkpoint(backend_info=info)
        return _close(session, plan, context)


def _cpu_job(judge, table: pd.DataFrame, chosen: set[str], order: str, rnd: int, context: RunContext,
             session: RunSession, rid: str) -> int:
    """One order and round of a CPU judge; returns the rows written (0 when all were stored)."""
    spec, dataset, seed = context.judges.spec, context.dataset, context.config.seed
    keep = table["name"].isin(chosen).to_numpy()
    keys = [row_key("-", order, rnd, n) for n in table["name"]]
    if all(k in session.done for k, kept in zip(keys, keep, strict=True) if kept):
        return 0
    started = now()
    train = context.pairs.train
    if train is None:  # media_name stays: learned judges group their folds by video
        labels = judge.predict(table, seed=seed + rnd)
    else:  # probe pairs: a learning judge fits on the human labels of the dataset they were made from
        labels = judge.predict_trained(table, train[order], seed=seed + rnd)  # folds by video, as on v1
    if not labels.index.equals(table.index):
        raise ValueError(f"CPU judge {spec.name!r} returned labels not indexed like the pairs it was given")
    session.calls["cpu"] += int(keep.sum())
    humans = labels_of(table)
    rows = [
        prediction_row(judge=spec.name, strategy="-", input_type="text", order=order, round=rnd, name=row.name,
                       gt=gt, pred=str(label), parse_rule="direct", raw=str(label), latency_s=0.0,
                       created_at=started, run_id=rid, dataset=dataset, media_name=row.media_name, seed=seed + rnd)
        for row, gt, label, kept in zip(table.itertuples(index=False), humans, labels, keep, strict=True)
        if kept
    ]
    return session.append(rows)


__all__ = ["run", "RunConfig", "RunContext", "RunPlan", "planned_runs", "run_state", "prepare_run",
           "parse_report", "UnparsedAnswersWarning", "UNPARSED_WARN_PCT", "from_root",
           "run_metrics", "load_run", "select_pairs", "prepare_pairs", "check_media"]
