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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
from tqdm import tqdm

from helpers import paths, prompts
from helpers.data import (
    DataError,
    check_name,
    data_sha256,
    dataset_spec,
    load_pairs,
    missing_media,
    swap_pairs,
)
from helpers.digest import sha256_hex
from helpers.judges.base import ENGINES, Backend, JudgeSpec
from helpers.judges.registry import load_spec, make_backend, make_pair_judge, resolve_backend
from helpers.run.identity import build_identity, check_identity, identity_sha256, label_files
from helpers.run.results import load_run, parse_report, run_metrics
from helpers.run.session import RunSession, prediction_row, row_key
from helpers.run.store import load_steps, make_run_id, now, read_jsonl, read_manifest, secrets_from_env
from helpers.run.strategies import STRATEGIES, Item, Pipeline, resolve_sharing, strategy_record

ORDER_CHOICES = {"normal": ("normal",), "reverse": ("reverse",), "both": ("normal", "reverse")}
BackendChoice = str | Callable[[JudgeSpec], Backend]
ROLE_NAMES = {"mllm": "judge", "llm": "llm"}  # pipeline roles as the manifest's ``backends`` names them
UNPARSED_WARN_PCT = 50.0  # a run with more answers than this (percent) matching no parser rule ends with a warning
PATH_PARAMETERS = ("media_dir", "output_dir", "data_dir")  # read from the project root when relative


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


def select_pairs(pairs: pd.DataFrame, names: Sequence[str] | None = None, limit: int | None = None) -> pd.DataFrame:
    """The requested subset in file order: ``names`` first, then the first ``limit``."""
    out = pairs
    if names is not None:
        unknown = sorted(set(names) - set(pairs["name"]))
        if unknown:
            raise DataError(f"{len(unknown)} requested name(s) not in the pairs: {', '.join(unknown[:20])}")
        out = out[out["name"].isin(set(names))]
    if limit is not None:
        out = out.head(int(limit))
    return out.reset_index(drop=True)


def prepare_pairs(pairs: pd.DataFrame) -> pd.DataFrame:
    """Validate a caller's pairs table and add ``media_name`` (default: ``name``)."""
    missing = [c for c in ("name", "a1", "a2") if c not in pairs.columns]
    if missing:
        raise DataError(f"pairs table lacks column(s) {', '.join(missing)}")
    out = pairs.copy()
    if "media_name" not in out.columns:
        out["media_name"] = out["name"]
    if out["name"].duplicated().any():
        raise DataError(f"pairs table: duplicate name {out.loc[out['name'].duplicated(), 'name'].iloc[0]!r}")
    for column in ("name", "media_name"):
        out[column].map(check_name)
    return out


def order_tables(dataset: str, pairs: pd.DataFrame | None, data_dir) -> dict[str, pd.DataFrame]:
    """Both orders: the official files for a dataset, or a swapped copy of the caller's pairs."""
    if pairs is None:
        normal = prepare_pairs(load_pairs(dataset, "normal", data_dir))
        reverse = prepare_pairs(load_pairs(dataset, "reverse", data_dir))
    else:
        normal = prepare_pairs(pairs)
        reverse = swap_pairs(normal)
    return {"normal": normal, "reverse": reverse}


def items_for(table: pd.DataFrame, order: str, rounds: int) -> list[Item]:
    return [
        Item(row.name, row.media_name, order, rnd, row.a1, row.a2, label)
        for rnd in range(rounds)
        for row, label in zip(table.itertuples(index=False), labels_of(table), strict=True)
    ]


def labels_of(table: pd.DataFrame) -> list[str | None]:
    """Human labels where the pairs have them (tournament pairs may not): None, never NaN."""
    if "preference" not in table.columns:
        return [None] * len(table)
    return [None if pd.isna(v) else str(v) for v in table["preference"]]


def check_media(names: Sequence[str], media_dir, input_type: str) -> None:
    """Stop before any model loads if a needed media file is missing, listing all of them."""
    missing = missing_media(sorted(set(names)), media_dir, input_type)
    if missing:
        listing = "\n  ".join(str(p) for p in missing)
        raise DataError(
            f"{len(missing)} media file(s) missing for input_type {input_type!r} in {media_dir}:\n  {listing}\n"
            "Supply them, or restrict the run with limit/names to samples whose media are present."
        )


def resolve_strategies(spec: JudgeSpec, strategy: str) -> list[str]:
    """The strategies a run executes: CPU judges always run as ``-``; ``all`` is the judge's list."""
    if spec.backend == "cpu":
        return ["-"]
    strategies = list(spec.strategies) if strategy == "all" else [strategy]
    bad = [s for s in strategies if s not in STRATEGIES]
    if bad:
        raise ValueError(f"strategy must be one of {STRATEGIES} or 'all' for judge {spec.name!r}, got {bad[0]!r}")
    return strategies


# --------------------------------------------------------------------------- manifest


def pairs_sha256(tables: dict[str, pd.DataFrame]) -> str:
    """Content hash of ALL caller-supplied pairs, labels included (no files to hash): a subset
    run and the full run of the same pairs share it; a relabelled or edited pair changes it."""
    columns = [c for c in ("name", "media_name", "a1", "a2", "preference") if c in tables["normal"].columns]
    text = tables["normal"][columns].to_csv(index=False)
    return sha256_hex(text)


def spec_record(spec: JudgeSpec | None) -> dict | None:
    """The judge's YAML fields: checkpoint id or path, generation settings, the NAME of the key
    variable (never its value)."""
    if spec is None:
        return None
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in spec.__dict__.items()}


# --------------------------------------------------------------------------- running


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
    backend: BackendChoice = "auto"
    batch_size: int | None = None
    limit: int | None = None
    names: Sequence[str] | None = None
    media_dir: str | Path | None = None
    output_dir: str | Path | None = None
    seed: int = 0
    data_dir: str | Path | None = None
    pairs: pd.DataFrame | None = None
    run_id: str | None = None
    llm_backend: BackendChoice | None = None
    progress: bool = True
    overwrite: bool = False
    unparsed_warn_pct: float = UNPARSED_WARN_PCT
    share_descriptions: str | bool = "auto"
    device: str | None = None

    PROGRAMMATIC: ClassVar[tuple[str, ...]] = ("pairs", "run_id", "llm_backend", "progress")
    """Fields only code passes (a table, a folder name, a callable backend, a progress bar): not
    notebook parameters."""
    RUNTIME: ClassVar[tuple[str, ...]] = ("overwrite",)
    """Fields that say how to run, not what the run is (a grid cell is the same cell with or without)."""

    def __post_init__(self) -> None:
        if self.strategy not in (*STRATEGIES, "all", "-"):
            raise ValueError(f"strategy must be one of {STRATEGIES}, 'all' or '-', got {self.strategy!r}")
        if self.order not in ORDER_CHOICES:
            raise ValueError(f"order must be one of {tuple(ORDER_CHOICES)}, got {self.order!r}")
        if int(self.rounds) < 1:
            raise ValueError(f"rounds must be at least 1, got {self.rounds}")
        for name in ("backend", "llm_backend"):
            choice = getattr(self, name)
            if not (callable(choice) or choice in ENGINES or (name == "llm_backend" and choice is None)):
                raise ValueError(f"{name} must be one of {ENGINES} (or a callable spec -> Backend), got {choice!r}")
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
        wanted = {k: parameters[k] for k in cls.notebook_parameters() if k in parameters}
        wanted.update({k: from_root(wanted[k]) for k in PATH_PARAMETERS if k in wanted})
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
    """What a :class:`RunConfig` resolves to before any model loads: the judge (and S3/S4 text
    LLM) as they will run, the strategies, orders and input type, the data's hashes and whether
    S2-S4 share descriptions across orders. ``secrets`` and ``backends`` are filled in by
    :func:`run` once it starts judging."""

    config: RunConfig
    spec: JudgeSpec
    llm_spec: JudgeSpec | None
    strategies: tuple[str, ...]
    orders: tuple[str, ...]
    input_type: str
    data_sha256: dict
    identity_data: dict
    descriptions_shared: bool | None
    secrets: dict = dataclasses.field(default_factory=dict)
    backends: dict = dataclasses.field(default_factory=dict)

    @property
    def root(self) -> Path:
        return self.config.root

    @property
    def dataset(self) -> str:
        return self.config.dataset

    @property
    def rounds(self) -> int:
        return self.config.rounds

    @property
    def seed(self) -> int:
        return self.config.seed

    @property
    def parameters(self) -> dict:
        return self.config.parameters(self.descriptions_shared)


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """One run folder a run writes: its id, identity (and digest), scope and the row keys it must hold."""

    run_id: str
    strategy: str
    llm: JudgeSpec | None
    identity: dict
    identity_sha256: str
    scope: dict
    expected: frozenset[str]


def _backend_factory(spec: JudgeSpec, backend: BackendChoice) -> tuple[Callable[[], Backend], str]:
    if callable(backend):
        return (lambda: backend(spec)), getattr(backend, "__name__", "custom")
    kind = resolve_backend(spec, backend)
    return (lambda: make_backend(spec, kind)), kind


def _engine_kind(spec: JudgeSpec, backend: BackendChoice) -> str:
    """The engine a run's identity records: the resolved backend kind; ``custom`` for a caller's
    own ``spec -> Backend`` callable (tests, custom servers), whose engine the caller vouches for."""
    return "custom" if callable(backend) else resolve_backend(spec, backend)


def _engines(config: RunConfig, spec: JudgeSpec, llm_spec: JudgeSpec | None) -> dict[str, str | None]:
    """The engines of the judge (``mllm``) and of its text LLM (``llm``), as identities record them."""
    llm_choice = None if llm_spec is None else config.llm_backend or _llm_backend_choice(config.backend, llm_spec)
    return {"mllm": _engine_kind(spec, config.backend),
            "llm": None if llm_spec is None else _engine_kind(llm_spec, llm_choice)}


def _llm_backend_choice(backend: BackendChoice, llm_spec: JudgeSpec) -> BackendChoice:
    """The text LLM follows the judge's backend choice, except that an API judge's ``openai``
    does not drag a local text LLM onto an endpoint it does not have."""
    if backend == "openai" and llm_spec.backend != "openai":
        return "auto"
    return backend


def prepare_run(config: RunConfig) -> tuple[RunContext, dict, pd.DataFrame, dict]:
    """Everything a run is before any model loads: ``(context, full tables, chosen pairs,
    chosen tables per order)``. Shared by :func:`run` and :func:`planned_runs`, so a grid
    computes a cell's identity exactly as the run would. The description-sharing choice enters
    the identity resolved (``descriptions_shared``), and only for the strategies that describe
    (S2-S4). ``config.device`` places local judges (``with_device``); ``config.batch_size``
    reaches the spec, because backends chunk by their spec's batch size."""
    spec = config.model if isinstance(config.model, JudgeSpec) else load_spec(config.model)
    if config.batch_size:
        spec = dataclasses.replace(spec, batch_size=int(config.batch_size))
    spec = with_device(spec, config.device)
    full = order_tables(config.dataset, config.pairs, config.data_dir)
    chosen = select_pairs(full["normal"], config.names, config.limit)
    tables = {o: t.set_index("name").loc[chosen["name"]].reset_index() for o, t in full.items()}
    strategies = resolve_strategies(spec, config.strategy)
    llm_spec = None
    if spec.backend != "cpu" and any(strategy_record(s).uses_llm for s in strategies):
        judge_llm = config.judge_llm
        llm_spec = with_device(judge_llm if isinstance(judge_llm, JudgeSpec) else load_spec(judge_llm or "qwen25"),
                               config.device)
    if config.pairs is None:
        hashes, files = data_sha256(config.dataset, config.data_dir), dataset_spec(config.dataset).files
    else:
        hashes, files = {"pairs": pairs_sha256(full)}, None
    context = RunContext(
        config=config, spec=spec, llm_spec=llm_spec, strategies=tuple(strategies),
        orders=ORDER_CHOICES[config.order],
        input_type="text" if spec.backend == "cpu" else (config.input_type or spec.input_type),
        data_sha256=hashes, identity_data=label_files(hashes, files),
        descriptions_shared=None if spec.backend == "cpu" else resolve_sharing(config.share_descriptions, spec),
    )
    return context, full, chosen, tables


def run_plans(context: RunContext, tables: dict) -> list[RunPlan]:
    """One plan per run folder (``config.run_id`` names a single strategy's folder, or prefixes several)."""
    spec, run_id, plans = context.spec, context.config.run_id, []
    for strategy in context.strategies:
        llm = context.llm_spec if strategy_record(strategy).uses_llm else None
        rid = make_run_id(spec.name, strategy, context.input_type, context.dataset, llm.name if llm else None,
                          context.seed)
        if run_id:
            rid = run_id if len(context.strategies) == 1 else f"{run_id}__{strategy}"
        identity = build_identity(
            spec=spec, strategy=strategy, input_type=context.input_type, dataset=context.dataset,
            seed=context.seed, data_sha256=context.identity_data, llm_spec=llm,
            parameters=_identity_parameters(context, strategy), engine=_engines(context.config, spec, llm)["mllm"],
            llm_engine=_engines(context.config, spec, llm)["llm"])
        names = sorted(tables["normal"]["name"])
        scope = {"samples": len(names), "samples_sha256": sha256_hex("\n".join(names)),
                 "orders": list(context.orders), "rounds": context.rounds}
        expected = frozenset(row_key(strategy, o, r, n) for o in context.orders for r in range(context.rounds)
                             for n in tables[o]["name"])
        plans.append(RunPlan(run_id=rid, strategy=strategy, llm=llm, identity=identity,
                             identity_sha256=identity_sha256(identity), scope=scope, expected=expected))
    return plans


def _identity_parameters(context: RunContext, strategy: str) -> dict:
    """The run parameters that shape this strategy's answers: whether S2-S4 describe once for
    both orders or per order changes their descriptions (and so their verdicts)."""
    return {"descriptions_shared": context.descriptions_shared} if strategy_record(strategy).describes else {}


def planned_runs(config: RunConfig) -> list[RunPlan]:
    """The run folders ``run(config)`` writes, each with its identity and the row keys it must
    hold (what ``helpers.run.launch`` compares before it calls a cell finished)."""
    context, _, _, tables = prepare_run(config)
    return run_plans(context, tables)


def run_state(plan: RunPlan, root: str | Path | None = None) -> str:
    """``complete`` only when the folder records this very identity and holds every row of the
    plan; otherwise ``missing``, ``other identity``, or the folder's own status (``failed``,
    ``running``, ``interrupted``, ``incomplete``)."""
    folder = (Path(root) if root is not None else paths.predictions_dir()) / plan.run_id
    manifest = read_manifest(folder)
    if manifest is None:
        return "missing"
    if manifest.get("identity_sha256") != plan.identity_sha256:
        return "other identity"
    held = {r["key"] for r in read_jsonl(folder / "predictions.jsonl")}
    if plan.expected <= held:
        return "complete"
    status = manifest.get("status")
    return status if status in ("failed", "running", "interrupted") else "incomplete"


def _precheck(plans: list[RunPlan], context: RunContext) -> None:
    """Refuse before any model loads (and before S1 of an ``all`` run writes anything) when a
    folder of this run holds a run of another identity; the locked check in each folder repeats it."""
    if context.config.overwrite:
        return
    for plan in plans:
        folder = context.root / plan.run_id
        predictions = folder / "predictions.jsonl"
        has_rows = predictions.is_file() and predictions.stat().st_size > 0
        check_identity(folder, read_manifest(folder) or {}, plan.identity, has_rows)


# --------------------------------------------------------------------------- running


def run(model: str | JudgeSpec | RunConfig, strategy: str = "all", **settings: Any) -> pd.DataFrame:
    """Judge the pairs with ``model``; returns one summary row per run folder written.

    ``run(model, strategy, **settings)`` builds the :class:`RunConfig` (an unknown setting is a
    TypeError naming it); ``run(config)`` takes one ready-made.

    ``strategy``: S1..S4, ``all`` (the judge's strategies) or ``-`` (CPU judges, which ignore
    the strategy). ``backend``: auto / transformers / vllm / openai, or a callable
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
    if isinstance(model, RunConfig):
        if settings or strategy != "all":
            raise TypeError("run(config) takes no further settings; change them with dataclasses.replace(config, ...)")
        config = model
    else:
        config = RunConfig(model, strategy, **settings)
    context, full, chosen, tables = prepare_run(config)
    spec, llm_spec = context.spec, context.llm_spec
    context = dataclasses.replace(
        context, secrets=secrets_from_env([spec.api_key_env, getattr(llm_spec, "api_key_env", None)]))
    plans = run_plans(context, tables)
    _precheck(plans, context)
    if spec.backend == "cpu":
        if config.strategy not in ("all", "-"):
            print(f"note: {spec.name!r} is a CPU judge that reads the texts itself; strategy {config.strategy!r} "
                  "is recorded as '-'")
        return pd.DataFrame([run_cpu(full, set(chosen["name"]), context, plans[0])])
    input_type = context.input_type
    check_media(chosen["media_name"], config.media_dir, input_type)
    mllm_factory, mllm_kind = _backend_factory(spec, config.backend)
    llm_factory, llm_kind = (None, None) if llm_spec is None else _backend_factory(
        llm_spec, config.llm_backend or _llm_backend_choice(config.backend, llm_spec))
    cached = {
        s["key"]: s["text"] for s in load_steps(context.root)
        if s.get("judge") == spec.name and s.get("input_type") == input_type
    }
    pipeline = Pipeline(
        spec, mllm_factory, input_type=input_type, dataset=config.dataset, media_dir=config.media_dir,
        seed=context.seed, llm_spec=llm_spec, llm=llm_factory, steps=cached, batch_size=config.batch_size,
        progress=config.progress, share_descriptions=context.descriptions_shared,
        engines=_engines(config, spec, llm_spec),
    )
    context = dataclasses.replace(context, backends={"judge": mllm_kind, "llm": llm_kind})
    summaries = []
    try:
        for plan in plans:
            summaries.append(run_strategy(pipeline, plan, tables, context))
    finally:
        pipeline.close()
    return pd.DataFrame(summaries)


def with_device(spec: JudgeSpec, device: str | None) -> JudgeSpec:
    """A local judge placed on ``device`` (the backends' ``options.device``); others unchanged."""
    if not device or spec.backend != "local":
        return spec
    return dataclasses.replace(spec, options={**spec.options, "device": device})


def _refusal(folder: Path, manifest: dict, identity: dict, done: set) -> None:
    """The engine's rule for resuming: the same identity, or an empty folder (``check_identity``)."""
    check_identity(folder, manifest, identity, bool(done))


def _open(plan: RunPlan, context: RunContext, backends: dict) -> RunSession:
    """The run folder of ``plan``, checked and started (moved aside first under ``overwrite``)."""
    session = RunSession(plan.run_id, context.root, identity=plan.identity, identity_sha256=plan.identity_sha256,
                         scope=plan.scope, secrets=context.secrets, overwrite=context.config.overwrite,
                         refuse=_refusal).open()
    if session.moved is not None:
        print(f"note: overwrite=True: the run folder {session.folder} held another run; moved it to {session.moved}")
    try:
        session.start({
            "judge": context.spec.name, "strategy": plan.strategy, "input_type": context.input_type,
            "dataset": context.dataset, "parameters": context.parameters, "rounds": context.rounds,
            "orders": list(context.orders), "seed": context.seed, "judge_spec": spec_record(context.spec),
            "llm_spec": spec_record(plan.llm), "backends": backends, "prompt_hashes": prompts.prompt_hashes(),
            "data_sha256": context.data_sha256,
        })
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
    report = parse_report(store.rows())
    warning = _parse_warning(store.run_id, report, float(context.config.unparsed_warn_pct))
    status = session.close(plan.expected, parse=report, warnings=[warning] if warning else [])
    if warning:
        warnings.warn(store.redact(warning), UnparsedAnswersWarning, stacklevel=4)
    return {"run_id": store.run_id, "strategy": plan.strategy, "dataset": context.dataset,
            "status": status, "rows": len(store.done), "rows_new": session.written,
            "missing": len(plan.expected - store.done), "calls": dict(session.calls),
            "unparsed_pct": report["unparsed_pct"], "folder": str(store.folder)}


def run_strategy(pipeline: Pipeline, plan: RunPlan, tables: dict, context: RunContext) -> dict:
    """One strategy into its own run folder, skipping rows already stored."""
    backends = {"judge": context.backends["judge"]} | ({"llm": context.backends["llm"]} if plan.llm else {})
    with _open(plan, context, backends) as session:
        items = [it for o in context.orders for it in items_for(tables[o], o, context.rounds)]
        todo = [it for it in items if row_key(plan.strategy, it.order, it.round, it.name) not in session.done]
        before = Counter(pipeline.calls)

        def checkpoint() -> None:
            """Keep the manifest's call counts current, so a killed session still tells its cost,
            and record each backend's own description once it has been built and used."""
            info = {ROLE_NAMES[role]: value for role, value in pipeline.backend_info.items()}
            session.checkpoint(Counter(pipeline.calls) - before, info)

        def keep_steps(records: list[dict]) -> None:
            session.append_steps(records)
            checkpoint()

        def keep(rows: list[dict]) -> None:
            session.append(rows)
            checkpoint()

        try:
            pipeline.predict(plan.strategy, todo, keep, run_id=plan.run_id, on_steps=keep_steps)
        finally:
            session.calls = Counter(pipeline.calls) - before
        return _close(session, plan, context)


def run_cpu(full: dict, chosen: set[str], context: RunContext, plan: RunPlan) -> dict:
    """A CPU judge reads each order's whole table (cross-fitted judges fit on the other folds,
    so a subset run gives the same labels as a full one) and keeps the chosen pairs; one batch
    per order and round, each followed by a manifest checkpoint."""
    spec = context.spec
    judge = make_pair_judge(spec)
    with _open(plan, context, {"judge": "cpu"}) as session:
        info = {"judge": {"backend": "cpu", "judge_class": spec.options.get("judge_class")}}
        jobs = [(o, r) for o in context.orders for r in range(context.rounds)]
        for order, rnd in tqdm(jobs, desc=f"{spec.name}", disable=not context.config.progress):
            _cpu_job(judge, full[order], chosen, order, rnd, context, session, plan.run_id)
            session.checkpoint(backend_info=info)
        return _close(session, plan, context)


def _cpu_job(judge, table: pd.DataFrame, chosen: set[str], order: str, rnd: int, context: RunContext,
             session: RunSession, rid: str) -> int:
    """One order and round of a CPU judge; returns the rows written (0 when all were stored)."""
    spec = context.spec
    keep = table["name"].isin(chosen).to_numpy()
    keys = [row_key("-", order, rnd, n) for n in table["name"]]
    if all(k in session.done for k, kept in zip(keys, keep, strict=True) if kept):
        return 0
    started = now()
    labels = judge.predict(table.drop(columns="media_name"), seed=context.seed + rnd)
    if not labels.index.equals(table.index):
        raise ValueError(f"CPU judge {spec.name!r} returned labels not indexed like the pairs it was given")
    session.calls["cpu"] += int(keep.sum())
    rows = [
        prediction_row(judge=spec.name, strategy="-", input_type="text", order=order, round=rnd, name=row.name,
                       gt=gt, pred=str(label), parse_rule="direct", raw=str(label), latency_s=0.0,
                       created_at=started, run_id=rid, dataset=context.dataset, media_name=row.media_name,
                       seed=context.seed + rnd)
        for row, gt, label, kept in zip(table.itertuples(index=False), labels_of(table), labels, keep, strict=True)
        if kept
    ]
    return session.append(rows)


__all__ = ["run", "RunConfig", "RunContext", "RunPlan", "planned_runs", "run_state", "prepare_run", "run_plans",
           "parse_report", "UnparsedAnswersWarning", "UNPARSED_WARN_PCT", "from_root",
           "run_metrics", "load_run", "select_pairs", "prepare_pairs", "check_media"]
