"""Run one judge over a set of pairs: every strategy, order and round, into the store.

``run`` is what ``notebooks/01_infer.ipynb`` calls. It takes a dataset name (the benchmark) or
any pairs table (tournaments pass their own), checks the media before loading any model, and
writes one run folder per strategy, so S3/S4 can be added later without touching S1/S2 and a
killed run resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import platform
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from helpers import metrics, paths, prompts
from helpers.data import DataError, check_name, data_sha256, load_pairs, missing_media, swap_pairs
from helpers.judges.base import Backend, JudgeSpec
from helpers.judges.registry import load_spec, make_backend, make_pair_judge, resolve_backend
from helpers.store import RunStore, StoreError, load_predictions, load_steps, make_run_id, now
from helpers.strategies import STRATEGIES, Item, Pipeline, row_key

ORDER_CHOICES = {"normal": ("normal",), "reverse": ("reverse",), "both": ("normal", "reverse")}
PACKAGES = ("pandas", "numpy", "scikit-learn", "torch", "torchvision", "transformers", "vllm", "openai",
            "sentence-transformers", "papermill", "qwen-omni-utils", "av")
BackendChoice = str | Callable[[JudgeSpec], Backend]
ROLE_NAMES = {"mllm": "judge", "llm": "llm"}  # pipeline roles as the manifest's ``backends`` names them


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


def planned_run_ids(model: str | JudgeSpec, strategy: str = "all", input_type: str | None = None,
                    dataset: str = "emoprefer", judge_llm: str | JudgeSpec | None = "qwen25", seed: int = 0) -> list[str]:
    """The run folders ``run`` with these arguments writes (so a grid can tell a finished cell)."""
    spec = model if isinstance(model, JudgeSpec) else load_spec(model)
    llm = getattr(judge_llm, "name", judge_llm) or "qwen25"
    if spec.backend == "cpu":
        return [make_run_id(spec.name, "-", "text", dataset, None, int(seed))]
    return [
        make_run_id(spec.name, s, input_type or spec.input_type, dataset, llm if s in ("S3", "S4") else None, int(seed))
        for s in resolve_strategies(spec, strategy)
    ]


# --------------------------------------------------------------------------- manifest


def git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=paths.project_root(), capture_output=True,
                             text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def pairs_sha256(tables: dict[str, pd.DataFrame]) -> str:
    """Content hash of caller-supplied pairs (no files to hash)."""
    text = tables["normal"][["name", "media_name", "a1", "a2"]].to_csv(index=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def spec_record(spec: JudgeSpec | None) -> dict | None:
    """The judge's YAML fields: checkpoint id or path, generation settings, the NAME of the key
    variable (never its value)."""
    if spec is None:
        return None
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in spec.__dict__.items()}


# --------------------------------------------------------------------------- running


def _backend_factory(spec: JudgeSpec, backend: BackendChoice) -> tuple[Callable[[], Backend], str]:
    if callable(backend):
        return (lambda: backend(spec)), getattr(backend, "__name__", "custom")
    kind = resolve_backend(spec, backend)
    return (lambda: make_backend(spec, kind)), kind


def _llm_backend_choice(backend: BackendChoice, llm_spec: JudgeSpec) -> BackendChoice:
    """The text LLM follows the judge's backend choice, except that an API judge's ``openai``
    does not drag a local text LLM onto an endpoint it does not have."""
    if backend == "openai" and llm_spec.backend != "openai":
        return "auto"
    return backend


def run(
    model: str | JudgeSpec,
    strategy: str = "all",
    order: str = "both",
    rounds: int = 2,
    dataset: str = "emoprefer",
    input_type: str | None = None,
    judge_llm: str | JudgeSpec | None = "qwen25",
    backend: BackendChoice = "auto",
    batch_size: int | None = None,
    limit: int | None = None,
    media_dir: str | Path | None = None,
    output_dir: str | Path | None = None,
    seed: int = 0,
    data_dir: str | Path | None = None,
    *,
    pairs: pd.DataFrame | None = None,
    names: Sequence[str] | None = None,
    run_id: str | None = None,
    llm_backend: BackendChoice | None = None,
    progress: bool = True,
    share_descriptions: str | bool = "auto",
    device: str | None = None,
) -> pd.DataFrame:
    """Judge the pairs with ``model``; returns one summary row per run folder written.

    ``strategy``: S1..S4, ``all`` (the judge's strategies) or ``-`` (CPU judges, which ignore
    the strategy). ``backend``: auto / transformers / vllm / openai, or a callable
    ``spec -> Backend`` (tests, custom servers). ``pairs`` replaces the dataset files (a
    ``media_name`` column names each pair's media when several pairs share a video).
    ``share_descriptions``: ``auto`` (the paper: one description for both orders only where
    decoding is deterministic), True or False; part of the run's identity. ``device``: e.g.
    ``cpu`` to run a local model on the CPU on purpose (otherwise a >= 1 B model that finds no
    GPU stops with what to install).
    """
    spec = model if isinstance(model, JudgeSpec) else load_spec(model)
    if batch_size:  # backends chunk by their spec's batch size, so the override must reach the spec
        spec = dataclasses.replace(spec, batch_size=int(batch_size))
    spec = with_device(spec, device)
    if order not in ORDER_CHOICES:
        raise ValueError(f"order must be one of {tuple(ORDER_CHOICES)}, got {order!r}")
    if int(rounds) < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    rounds, seed = int(rounds), int(seed)
    full = order_tables(dataset, pairs, data_dir)
    chosen = select_pairs(full["normal"], names, limit)
    tables = {o: t.set_index("name").loc[chosen["name"]].reset_index() for o, t in full.items()}
    context = {
        "spec": spec, "dataset": dataset, "rounds": rounds, "seed": seed, "orders": ORDER_CHOICES[order],
        "root": Path(output_dir) if output_dir is not None else paths.predictions_dir(),
        "data_sha256": data_sha256(dataset, data_dir) if pairs is None else {"pairs": pairs_sha256(tables)},
        "parameters": {
            "model": spec.name, "strategy": strategy, "order": order, "rounds": rounds, "dataset": dataset,
            "input_type": input_type, "judge_llm": getattr(judge_llm, "name", judge_llm), "batch_size": batch_size,
            "limit": limit, "names": list(names) if names is not None else None, "seed": seed,
            "media_dir": str(media_dir) if media_dir else None, "data_dir": str(data_dir) if data_dir else None,
            "pairs_given": pairs is not None, "share_descriptions": share_descriptions, "device": device,
        },
    }
    strategies = resolve_strategies(spec, strategy)
    if spec.backend == "cpu":
        if strategy not in ("all", "-"):
            print(f"note: {spec.name!r} is a CPU judge that reads the texts itself; strategy {strategy!r} is recorded as '-'")
        return pd.DataFrame([run_cpu(full, set(chosen["name"]), context, run_id, progress)])
    input_type = input_type or spec.input_type
    check_media(chosen["media_name"], media_dir, input_type)
    llm_spec = None
    if {"S3", "S4"} & set(strategies):
        llm_spec = with_device(judge_llm if isinstance(judge_llm, JudgeSpec) else load_spec(judge_llm or "qwen25"),
                               device)
    mllm_factory, mllm_kind = _backend_factory(spec, backend)
    llm_factory, llm_kind = (None, None) if llm_spec is None else _backend_factory(
        llm_spec, llm_backend or _llm_backend_choice(backend, llm_spec))
    cached = {
        s["key"]: s["text"] for s in load_steps(context["root"])
        if s.get("judge") == spec.name and s.get("input_type") == input_type
    }
    pipeline = Pipeline(
        spec, mllm_factory, input_type=input_type, dataset=dataset, media_dir=media_dir, seed=seed,
        llm_spec=llm_spec, llm=llm_factory, steps=cached, batch_size=batch_size, progress=progress,
        share_descriptions=share_descriptions,
    )
    context["parameters"]["descriptions_shared"] = pipeline.share_descriptions
    context.update(input_type=input_type, llm_spec=llm_spec, backends={"judge": mllm_kind, "llm": llm_kind},
                   strategies=strategies)
    summaries = []
    try:
        for name in strategies:
            summaries.append(run_strategy(pipeline, name, tables, context, run_id))
    finally:
        pipeline.close()
    return pd.DataFrame(summaries)


def with_device(spec: JudgeSpec, device: str | None) -> JudgeSpec:
    """A local judge placed on ``device`` (the backends' ``options.device``); others unchanged."""
    if not device or spec.backend != "local":
        return spec
    return dataclasses.replace(spec, options={**spec.options, "device": device})


# What makes a judge's answers what they are: a run folder made with other values must not be
# resumed, or old and new answers would mix in one table under one judge name.
IDENTITY_FIELDS = ("family", "checkpoint", "generation")


def _check_same_judge(store: RunStore, manifest: dict, spec: JudgeSpec, llm: JudgeSpec | None) -> None:
    for role, now_spec in (("judge_spec", spec), ("llm_spec", llm)):
        before = manifest.get(role)
        if not before or now_spec is None:
            continue
        current = spec_record(now_spec)
        changed = [f for f in IDENTITY_FIELDS if before.get(f) != current.get(f)]
        if changed:
            raise StoreError(
                f"run folder {store.folder} holds answers of {now_spec.name!r} made with other "
                f"{', '.join(changed)} ({', '.join(f'{f}={before.get(f)!r}' for f in changed)}); "
                "resuming would mix two models under one name. Give the judge a new name, "
                "pass another output_dir, or move that folder away."
            )


def _open_manifest(store: RunStore, context: dict, strategy: str, llm: JudgeSpec | None, backends: dict) -> dict:
    manifest = store.read_manifest()
    _check_same_judge(store, manifest, context["spec"], llm)
    manifest.update({
        "run_id": store.run_id, "judge": context["spec"].name, "strategy": strategy,
        "input_type": context["input_type"], "dataset": context["dataset"], "parameters": context["parameters"],
        "rounds": context["rounds"], "orders": list(context["orders"]), "seed": context["seed"],
        "judge_spec": spec_record(context["spec"]), "llm_spec": spec_record(llm), "backends": backends,
        "prompt_hashes": prompts.prompt_hashes(), "data_sha256": context["data_sha256"],
        "git_revision": git_revision(), "packages": package_versions(), "platform": platform.platform(),
        "python_executable": sys.executable, "status": "running",
    })
    manifest.setdefault("sessions", []).append({"started": now(), "ended": None, "rows_written": 0, "calls": {}})
    manifest.setdefault("created", now())
    store.write_manifest(manifest)
    return manifest


def _close_manifest(store: RunStore, manifest: dict, written: int, calls: Counter, expected: set[str]) -> dict:
    session = manifest["sessions"][-1]
    session.update(ended=now(), rows_written=written, calls=dict(calls), repaired_bytes=store.repaired_bytes)
    total: Counter[str] = Counter()
    for past in manifest["sessions"]:
        total.update(past.get("calls", {}))
    missing = len(expected - store.done)
    manifest.update(calls_total=dict(total), rows=len(store.done), status="complete" if not missing else "incomplete",
                    updated=now())
    store.write_manifest(manifest)
    return {"run_id": store.run_id, "strategy": manifest["strategy"], "rows": len(store.done), "rows_new": written,
            "missing": missing, "calls": dict(calls), "folder": str(store.folder)}


def run_strategy(pipeline: Pipeline, strategy: str, tables: dict, context: dict, run_id: str | None) -> dict:
    """One strategy into its own run folder, skipping rows already stored."""
    llm = context["llm_spec"] if strategy in ("S3", "S4") else None
    rid = make_run_id(context["spec"].name, strategy, context["input_type"], context["dataset"],
                      llm.name if llm else None, context["seed"])
    if run_id:
        rid = run_id if len(context["strategies"]) == 1 else f"{run_id}__{strategy}"
    with RunStore(rid, context["root"]) as store:
        backends = {"judge": context["backends"]["judge"]} | ({"llm": context["backends"]["llm"]} if llm else {})
        manifest = _open_manifest(store, context, strategy, llm, backends)
        items = [it for o in context["orders"] for it in items_for(tables[o], o, context["rounds"])]
        expected = {row_key(strategy, it.order, it.round, it.name) for it in items}
        todo = [it for it in items if row_key(strategy, it.order, it.round, it.name) not in store.done]
        before = Counter(pipeline.calls)
        written = 0
        pipeline.backend_info = {}  # this strategy's backends only: reused steps name theirs in their own run

        def checkpoint() -> None:
            """Keep the manifest's call counts current, so a killed session still tells its cost,
            and record each backend's own description once it has been built and used."""
            manifest["sessions"][-1].update(calls=dict(Counter(pipeline.calls) - before), rows_written=written)
            if pipeline.backend_info:
                info = {ROLE_NAMES[role]: value for role, value in pipeline.backend_info.items()}
                manifest["sessions"][-1]["backend_info"] = info
                manifest["backend_info"] = {**manifest.get("backend_info", {}), **info}
            store.write_manifest(manifest)

        def keep_steps(records: list[dict]) -> None:
            store.append_steps(records)
            checkpoint()

        def keep(rows: list[dict]) -> None:
            nonlocal written
            written += store.append_predictions([{**row, "run_id": rid} for row in rows])
            checkpoint()

        pipeline.on_steps = keep_steps

        pipeline.predict(strategy, todo, keep)
        return _close_manifest(store, manifest, written, Counter(pipeline.calls) - before, expected)


def run_cpu(full: dict, chosen: set[str], context: dict, run_id: str | None, progress: bool) -> dict:
    """A CPU judge reads each order's whole table (cross-fitted judges fit on the other folds,
    so a subset run gives the same labels as a full one) and keeps the chosen pairs; one batch
    per order and round."""
    spec = context["spec"]
    context = {**context, "input_type": "text", "llm_spec": None}
    judge = make_pair_judge(spec)
    rid = run_id or make_run_id(spec.name, "-", "text", context["dataset"], None, context["seed"])
    with RunStore(rid, context["root"]) as store:
        manifest = _open_manifest(store, context, "-", None, {"judge": "cpu"})
        manifest["backend_info"] = {"judge": {"backend": "cpu", "judge_class": spec.options.get("judge_class")}}
        calls: Counter[str] = Counter()
        expected, written = set(), 0
        jobs = [(o, r) for o in context["orders"] for r in range(context["rounds"])]
        for order, rnd in tqdm(jobs, desc=f"{spec.name}", disable=not progress):
            table = full[order]
            keep = table["name"].isin(chosen).to_numpy()
            keys = [row_key("-", order, rnd, n) for n in table["name"]]
            expected.update(k for k, kept in zip(keys, keep, strict=True) if kept)
            if expected <= store.done:
                continue
            started = now()
            labels = judge.predict(table.drop(columns="media_name"), seed=context["seed"] + rnd)
            if not labels.index.equals(table.index):
                raise ValueError(f"CPU judge {spec.name!r} returned labels not indexed like the pairs it was given")
            calls["cpu"] += int(keep.sum())
            rows = [
                cpu_row(spec.name, key, order, rnd, row, gt, str(label), context, rid, started)
                for key, row, gt, label, kept in zip(keys, table.itertuples(index=False), labels_of(table), labels,
                                                     keep, strict=True)
                if kept
            ]
            written += store.append_predictions(rows)
        return _close_manifest(store, manifest, written, calls, expected)


def cpu_row(judge: str, key: str, order: str, rnd: int, row, gt: str | None, label: str, context: dict, rid: str,
            created: str) -> dict:
    if label not in ("a1", "a2", "same"):
        raise ValueError(f"CPU judge {judge!r} returned {label!r} for {row.name!r}; expected a1, a2 or same")
    return {
        "key": key, "judge": judge, "strategy": "-", "input_type": "text", "order": order, "round": rnd,
        "name": row.name, "gt": gt, "pred": label, "parse_rule": "direct",
        "raw": label, "latency_s": 0.0, "created_at": created, "run_id": rid, "dataset": context["dataset"],
        "llm": None, "media_name": row.media_name, "seed": context["seed"] + rnd, "steps": {},
    }


# --------------------------------------------------------------------------- summary


def run_metrics(predictions: pd.DataFrame) -> pd.DataFrame:
    """Two-class WAF per order (mean over rounds, x100) and swap consistency (x100) per
    judge cell: the paper's definitions, via ``helpers.metrics``."""
    rows = []
    for (judge, strategy, input_type), cell in predictions.groupby(["judge", "strategy", "input_type"]):
        row = {"judge": judge, "strategy": strategy, "input_type": input_type}
        for order in ("normal", "reverse"):
            part = cell[cell["order"] == order]
            scores = [metrics.two_class(g["gt"], g["pred"])["waf"] for _, g in part.groupby("round")]
            row[f"two_class_waf_{order}"] = 100 * pd.Series(scores, dtype=float).mean()
        swap = metrics.swap_consistency_rounds(cell) if set(cell["order"]) == {"normal", "reverse"} else pd.Series()
        row["swap_consistency"] = 100 * swap.mean() if len(swap) else float("nan")
        row["rounds"] = cell["round"].nunique()
        row["pairs"] = cell["name"].nunique()
        rows.append(row)
    return pd.DataFrame(rows)


def load_run(summary: pd.DataFrame, output_dir: str | Path | None = None) -> pd.DataFrame:
    """The predictions of the runs listed in a ``run`` summary."""
    table = load_predictions(output_dir)
    return table[table["run_id"].isin(set(summary["run_id"]))].reset_index(drop=True)


__all__ = ["run", "planned_run_ids", "from_root", "run_metrics", "load_run", "select_pairs", "prepare_pairs", "check_media"]
