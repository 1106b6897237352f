"""Launch work: the grid of notebook runs (``python -m helpers.run params/grid_<name>.yaml``) and
shards of judging, on this machine (``local``) or on a Ray cluster (``ray``).

**Grids.** A grid YAML names a notebook, a ``matrix`` (every combination of its lists is one cell)
and fixed ``parameters``. Each cell is one papermill run whose executed copy lands in
``reports/runs/<grid>/<cell>.ipynb`` (with a log beside it); a cell whose executed copy finished
without error and whose run folders are complete is skipped, and the store resumes a cell that was
interrupted. Cells of the same judge form a *lane* that runs in order on one worker, so S2
describes once and S3/S4 reuse its descriptions instead of racing to describe again on another
GPU. Lanes run in parallel, one worker per GPU (``CUDA_VISIBLE_DEVICES``), or on ``workers`` CPU
workers (1 by default), or each as one Ray task asking for its judge's GPUs.

**Shards.** A *shard* is one call of a module-level function (``"package.module:function"`` or the
function itself) with keyword arguments — for a tournament, "judge these comparisons with this
judge into this run folder of the store". Shards are independent and idempotent: each writes into
its own run folder of the resumable store (``helpers.run.store``), which skips keys already
present, so a shard that is re-run after its worker was lost — by Ray's task retries, or by
re-running the same command — finishes the missing rows and never duplicates one. That is the
only fault tolerance needed, and it is the store's, not the executor's.

``local``
    One scheduler for both (:func:`on_slots`): a thread per slot (a GPU id, or ``None`` for a CPU
    worker) takes the next job from a shared queue. A grid lane's cells are papermill processes
    started with ``CUDA_VISIBLE_DEVICES`` set to the slot's GPU; a GPU shard runs in a spawned
    single-process pool pinned to its GPU (CUDA starts fresh with only that GPU visible). Shards
    without GPUs run in this process one after another (``workers=1``, the default: nothing to
    pickle, easy to debug) or on ``workers`` spawned processes.

``ray``
    Ray tasks on an existing cluster (``address="auto"`` or ``"ray://host:10001"``, for a grid
    ``$RAY_ADDRESS``) or on a local instance started here (``address=None``). Each shard (a grid
    lane is one shard) asks for the GPUs its judge needs (``num_gpus``); Ray places it on a node
    with them and sets ``CUDA_VISIBLE_DEVICES`` itself. ``ray`` is imported only here, only when
    asked for. The store root must be a filesystem every node sees (NFS, a mounted bucket),
    because workers write their shard's rows there directly.

    For vLLM judges at cluster scale, Ray Data batch inference is the natural fit (a dataset of
    requests mapped through ``vllm.LLM`` replicas with ``map_batches`` and an actor pool, or
    ``ray.data.llm``'s processor), with the store writing its output; these shard tasks are the
    simple path that keeps the study's engine unchanged and suits CPU judges, API judges and
    one-model-per-GPU transformers judges.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import itertools
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from helpers import paths
from helpers.judges import fit
from helpers.judges.base import JudgeSpec
from helpers.judges.families import family_of
from helpers.judges.registry import decoding_line, engine_line, import_object, list_judges, load_spec
from helpers.run import engine

EXECUTORS = ("local", "ray")


class GridError(ValueError):
    """A grid file that cannot be run; the message names the file and the problem."""


class ExecutorError(RuntimeError):
    """The executor cannot run as asked (Ray missing, cluster unreachable); the message says why."""


# --------------------------------------------------------------------------- the one scheduler


def detect_gpus() -> list[str]:
    """GPU ids this process may use: ``CUDA_VISIBLE_DEVICES`` if set, else every CUDA device."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    try:
        import torch
    except ImportError:
        return []
    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def on_slots(jobs: Sequence[Any], slots: Sequence[str | None],
             open_slot: Callable[[str | None], AbstractContextManager[Callable[[Any], Any]]]) -> list[Any]:
    """Run every job, results in the order of ``jobs``: one thread per slot opens its worker
    (``open_slot(slot)`` yields a function ``job -> result``) and feeds it the next job from a
    shared queue until none is left. The first error stops every slot from taking more work
    and is re-raised here."""
    todo: queue.Queue = queue.Queue()
    for i, job in enumerate(jobs):
        todo.put((i, job))
    results: list[Any] = [None] * len(jobs)
    errors: list[BaseException] = []

    def feed(slot: str | None) -> None:
        try:
            with open_slot(slot) as work:
                while not errors:
                    try:
                        i, job = todo.get_nowait()
                    except queue.Empty:
                        return
                    results[i] = work(job)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=feed, args=(slot,), daemon=True) for slot in slots]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


# --------------------------------------------------------------------------- shards


@dataclass(frozen=True)
class Shard:
    """One unit of work: ``fn(**kwargs)``; ``key`` names it in logs and in Ray's dashboard."""

    key: str
    fn: str | Callable[..., Any]
    kwargs: dict = field(default_factory=dict)
    num_gpus: float = 0.0
    num_cpus: float = 1.0


def resolve(fn: str | Callable[..., Any]) -> Callable[..., Any]:
    """``"package.module:function"`` -> the function (workers import it by name)."""
    return fn if callable(fn) else import_object(fn)


def call(fn: str | Callable[..., Any], kwargs: dict) -> Any:
    """Run one shard (module-level, so every process pool and Ray worker can pickle it)."""
    return resolve(fn)(**kwargs)


def gpus_for(spec: JudgeSpec) -> float:
    """GPUs one shard of this judge needs: none for CPU and API judges, else ``options.num_gpus``
    (default 1; a 72B model sharded over 4 GPUs says 4)."""
    if spec.backend in ("cpu", "openai"):
        return 0.0
    return float(spec.options.get("num_gpus", 1))


def run_shards(
    shards: Sequence[Shard],
    executor: str = "local",
    *,
    workers: int = 1,
    gpus: Sequence[str] | None = None,
    address: str | None = None,
    max_retries: int = 3,
) -> list[Any]:
    """Run every shard; results in the order of ``shards``. See the module docstring."""
    if executor == "local":
        return shards_local(shards, workers=workers, gpus=gpus)
    if executor == "ray":
        return shards_on_ray(shards, address=address, max_retries=max_retries)
    raise ExecutorError(f"executor must be one of {EXECUTORS}, got {executor!r}")


def _pin_gpu(gpu: str) -> None:
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu


@contextmanager
def _process(slot: str | None) -> Iterator[Callable[[Shard], Any]]:
    """A spawned single-process pool, pinned to GPU ``slot`` when given."""
    pin = {"initializer": _pin_gpu, "initargs": (slot,)} if slot is not None else {}
    with ProcessPoolExecutor(1, mp_context=get_context("spawn"), **pin) as pool:
        yield lambda shard: pool.submit(call, shard.fn, shard.kwargs).result()


def shards_local(shards: Sequence[Shard], *, workers: int = 1, gpus: Sequence[str] | None = None) -> list[Any]:
    """This machine: one process per GPU for GPU shards, else sequential or ``workers`` processes."""
    gpus = list(detect_gpus() if gpus is None else gpus)
    if gpus and any(s.num_gpus > 0 for s in shards):
        return on_slots(shards, gpus, _process)
    if workers <= 1 or len(shards) <= 1:
        return [call(s.fn, s.kwargs) for s in shards]
    return on_slots(shards, [None] * workers, _process)


@contextmanager
def session(executor: str = "local", address: str | None = None) -> Iterator[None]:
    """Keep one Ray connection open across several :func:`run_shards` calls (starting a local
    instance takes tens of seconds); a no-op for ``local``."""
    if executor != "ray":
        yield
        return
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def shards_on_ray(shards: Sequence[Shard], *, address: str | None = None, max_retries: int = 3) -> list[Any]:
    """Ray tasks, one per shard, each asking for its GPUs and CPUs. Connects to ``address`` (or
    starts a local instance) unless Ray is already initialised in this process; an instance
    started here is shut down at the end."""
    try:
        import ray
    except ImportError as exc:
        raise ExecutorError("executor 'ray' needs Ray: pip install 'emoprefer-study[ray]' (or ray>=2.40)") from exc
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ExecutorError(f"could not start or reach Ray at {address or 'a local instance'}: {exc}") from exc
    try:
        task = ray.remote(call)
        refs = [
            task.options(num_gpus=s.num_gpus, num_cpus=s.num_cpus, max_retries=max_retries, name=s.key).remote(s.fn, s.kwargs)
            for s in shards
        ]
        return ray.get(refs)
    finally:
        if started:
            ray.shutdown()


# --------------------------------------------------------------------------- grids


@dataclass(frozen=True)
class Cell:
    """One notebook run: its parameters and where its executed copy goes."""

    cell_id: str
    parameters: dict
    output: Path

    @property
    def model(self) -> str:
        return str(self.parameters.get("model"))


@dataclass
class Grid:
    name: str
    notebook: Path
    executed_dir: Path
    cells: list[Cell]
    gpus: list[str] = field(default_factory=list)


def _cell_id(values: dict) -> str:
    text = "__".join("cpu" if v == "-" else str(v) for v in values.values())
    return "".join(c if c.isalnum() or c in "_.=-" else "-" for c in text)


GRID_KEYS: dict[str, tuple[type, ...]] = {"notebook": (str,), "executed_dir": (str,), "matrix": (dict,),
                                          "parameters": (dict,), "gpus": (list,), "description": (str,)}
"""The keys a grid YAML may have and the YAML types each may hold."""
_YAML_TYPES = {"str": (str,), "Path": (str,), "int": (int,), "float": (int, float), "bool": (bool,),
               "None": (type(None),), "EngineChoice": (str,), "JudgeSpec": (), "Sequence[str]": (list,)}


def _kind(value: object) -> str:
    return {dict: "a mapping", list: "a list", str: "text", bool: "true/false", int: "a whole number",
            float: "a number", type(None): "empty (null)"}.get(type(value), type(value).__name__)


def parameter_types() -> dict[str, tuple[type, ...]]:
    """The YAML types each run parameter accepts, read from ``RunConfig``'s annotations (the one
    schema of run parameters), so a grid is checked against the fields a run really has."""
    fields = {f.name: f.type for f in dataclasses.fields(engine.RunConfig)}
    out = {}
    for name in engine.RunConfig.notebook_parameters():
        parts = [p.strip() for p in str(fields[name]).split("|")]
        out[name] = tuple(t for p in parts for t in _YAML_TYPES.get(p, (object,)))
    return out


def _suggest(name: str, known) -> str:
    close = difflib.get_close_matches(str(name), list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else f"; known: {', '.join(sorted(known))}"


def _check_parameter(file: Path, where: str, name: object, value: object, types: dict) -> None:
    if name in engine.RENAMED:
        raise GridError(f"{file}: {where}: the run parameter {name!r} is now called {engine.RENAMED[name]!r}")
    if name not in types:
        raise GridError(f"{file}: {where}: unknown run parameter {name!r}{_suggest(name, types)}")
    allowed = types[name]
    if object in allowed:
        return
    if isinstance(value, bool) and bool not in allowed or not isinstance(value, allowed):
        expected = " or ".join(dict.fromkeys(_kind(t() if t is not type(None) else None) for t in allowed))
        raise GridError(f"{file}: {where}: {name} must be {expected}, not {_kind(value)} ({value!r})")


def _read_yaml(file: Path) -> object:
    """The grid file's YAML, or one GridError saying why it cannot be read."""
    if not file.is_file():
        raise GridError(f"grid file {file} not found" + (" (it is a folder)" if file.is_dir() else ""))
    try:
        text = file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise GridError(f"{file}: not a text file (byte 0x{file.read_bytes()[exc.start]:02X} at offset {exc.start} "
                        "is not UTF-8); a grid is a YAML text file") from None
    except OSError as exc:
        raise GridError(f"{file}: cannot be read ({exc.strerror or exc})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise GridError(f"{file}{where}: not valid YAML ({problem})") from None


def check_grid(file: Path, raw: object, overrides: dict | None = None) -> dict:
    """Every rule of a grid file, checked before anything runs: a mapping of the known keys
    (a misspelt one gets a suggestion), each of its type, a non-empty ``matrix`` of lists, and
    every parameter (matrix, fixed, ``-p``) a ``RunConfig`` field of the right type."""
    if raw is None:
        raise GridError(f"{file}: is empty; a grid needs a 'matrix' mapping of parameter -> list of values")
    if not isinstance(raw, dict):
        raise GridError(f"{file}: a grid is a mapping of keys ({', '.join(GRID_KEYS)}), not {_kind(raw)}")
    for key, value in raw.items():
        if key not in GRID_KEYS:
            raise GridError(f"{file}: unknown key {key!r}{_suggest(key, GRID_KEYS)}")
        if value is not None and not isinstance(value, GRID_KEYS[key]):
            raise GridError(f"{file}: {key} must be {_kind(GRID_KEYS[key][0]())}, not {_kind(value)} ({value!r})")
    if not isinstance(raw.get("matrix"), dict) or not raw["matrix"]:
        raise GridError(f"{file}: needs a 'matrix' mapping of parameter -> list of values")
    types = parameter_types()
    for key, values in raw["matrix"].items():
        if not isinstance(values, list) or not values:
            raise GridError(f"{file}: matrix.{key} must be a non-empty list")
        for value in values:
            _check_parameter(file, f"matrix.{key}", key, value, types)
    for key, value in (raw.get("parameters") or {}).items():
        _check_parameter(file, f"parameters.{key}", key, value, types)
    for key, value in (overrides or {}).items():
        _check_parameter(file, f"-p {key}", key, value, types)
    for gpu in raw.get("gpus") or []:
        if isinstance(gpu, bool) or not isinstance(gpu, (int, str)):
            raise GridError(f"{file}: gpus must list GPU ids (0, 1, ...), not {_kind(gpu)} ({gpu!r})")
    return raw


def load_grid(file: str | Path, overrides: dict | None = None) -> Grid:
    """Read a grid YAML (:func:`check_grid`); ``overrides`` (from ``-p``) replace fixed
    parameters in every cell, and every cell must make a valid ``RunConfig``."""
    file = Path(file)
    raw = check_grid(file, _read_yaml(file), overrides)
    root = paths.project_root()
    notebook = root / raw.get("notebook", "notebooks/01_infer.ipynb")
    executed = root / raw.get("executed_dir", "reports/runs") / file.stem
    fixed = dict(raw.get("parameters") or {}) | dict(overrides or {})
    keys = list(raw["matrix"])
    cells = []
    for combo in itertools.product(*(raw["matrix"][k] for k in keys)):
        values = dict(zip(keys, combo, strict=True))
        cell_id = _cell_id(values)
        try:
            engine.RunConfig.from_parameters(fixed | values)
        except (TypeError, ValueError) as exc:
            raise GridError(f"{file}: cell {cell_id}: {exc}") from None
        cells.append(Cell(cell_id, fixed | values, executed / f"{cell_id}.ipynb"))
    gpus = [str(g) for g in raw.get("gpus") or []]
    return Grid(file.stem, notebook, executed, cells, gpus)


RUNTIME_PARAMETERS = engine.RunConfig.RUNTIME  # passed to a cell's run, but not what the cell is


def finished(cell: Cell) -> bool:
    """Finished = the executed copy ran these very parameters without error AND every run
    folder the cell writes records the cell's identity (judge, prompts, data hashes, seed...)
    and holds every row the cell asks for (``engine.run_state``): a relabelled data file or an
    edited prompt makes the cell run again; deleting the predictions does too."""
    if not cell.output.is_file():
        return False
    try:
        meta = json.loads(cell.output.read_text()).get("metadata", {}).get("papermill", {})
    except (OSError, json.JSONDecodeError):
        return False
    if meta.get("exception") or meta.get("end_time") is None:
        return False
    ran = {k: v for k, v in (meta.get("parameters") or {}).items() if k not in RUNTIME_PARAMETERS}
    if ran != json.loads(json.dumps(cell.parameters)):
        return False
    try:
        return all(state == "complete" for state in run_statuses(cell.parameters).values())
    except Exception:  # noqa: BLE001 -- a cell whose identity cannot be computed is not finished; its run says why
        return False


def run_statuses(parameters: dict) -> dict[str, str]:
    """State of each run folder a cell writes (``engine.run_state``: complete, missing,
    other identity, failed, running, interrupted, incomplete). The cell's parameters become a
    ``RunConfig`` exactly as 01_infer makes one from them (``RunConfig.from_parameters``)."""
    config = engine.RunConfig.from_parameters(parameters)
    return {plan.run_id: engine.run_state(plan, config.root) for plan in engine.planned_runs(config)}


def run_cell(grid: Grid, cell: Cell, gpu: str | None, overwrite: bool = False) -> dict:
    """One papermill process (its own kernel), pinned to ``gpu`` when given; ``overwrite``
    lets the run move aside a folder of another identity instead of refusing."""
    cell.output.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    command = [
        sys.executable, "-m", "papermill", str(grid.notebook), str(cell.output),
        "-y", yaml.safe_dump(cell.parameters | ({"overwrite": True} if overwrite else {})),
        "--cwd", str(grid.notebook.parent),
    ]
    started = time.time()
    with open(cell.output.with_suffix(".log"), "w") as log:
        code = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
    status = "done" if code == 0 else "failed"
    return {"cell": cell.cell_id, "status": status, "gpu": gpu, "seconds": round(time.time() - started, 1),
            "log": str(cell.output.with_suffix(".log"))}


def plan(grid: Grid, force: bool = False) -> tuple[list[list[Cell]], list[dict]]:
    """Lanes of cells to run (grouped by judge, in grid order) and the cells skipped, with why."""
    known = set(list_judges())
    skipped, lanes = [], {}
    for cell in grid.cells:
        if cell.model not in known:
            skipped.append({"cell": cell.cell_id, "status": "skipped",
                            "reason": f"judge {cell.model!r} has no params/models/{cell.model}.yaml yet"})
        elif not force and finished(cell):
            skipped.append({"cell": cell.cell_id, "status": "skipped", "reason": "finished earlier"})
        else:
            lanes.setdefault(cell.model, []).append(cell)
    return list(lanes.values()), skipped


def cell_protocol(cell: Cell) -> dict:
    """What a planned cell will run (for ``--dry-run``): engine, input type, the judge's decoding
    protocol and, for S3/S4, the text LLM's."""
    spec = load_spec(cell.model)
    row = {"engine": engine_line(spec, str(cell.parameters.get("engine", "auto"))),
           "input_type": cell.parameters.get("input_type") or spec.input_type, "decoding": decoding_line(spec)}
    llm = cell.parameters.get("judge_llm")
    uses_llm = llm and cell.parameters.get("strategy") in ("S3", "S4", "all")
    if not uses_llm:
        row["judge_llm"] = "-"
    elif llm not in list_judges():
        row["judge_llm"] = f"{llm}: no params/models/{llm}.yaml (the run will stop)"
    else:
        row["judge_llm"] = f"{llm}: {decoding_line(load_spec(llm))}"
    return row


def fit_report(grid: Grid, lanes: list[list[Cell]], gpu: str, log: Callable[[str], None]) -> dict[str, str]:
    """For ``--dry-run``: one fit line per vLLM-capable judge of the plan (and its S3/S4 text LLM) on each of
    :data:`fit.GPUS`, and the judges that do not fit on ``gpu`` (judge -> the reason with its numbers), whose
    cells the plan refuses. A judge whose cells run on transformers is still sized (labelled so)."""
    from helpers.data import DataError

    judges: dict[str, str] = {}
    for lane in lanes:
        for cell in lane:
            judges.setdefault(cell.model, str(cell.parameters.get("engine", cell.parameters.get("backend", "auto"))))
            llm = cell.parameters.get("judge_llm")
            if llm and cell.parameters.get("strategy") in ("S3", "S4", "all") and llm in list_judges():
                judges.setdefault(str(llm), "auto")
    if not judges:
        return {}
    dataset = str(grid.cells[0].parameters.get("dataset", "emoprefer"))
    try:
        texts = fit.dataset_texts(dataset, grid.cells[0].parameters.get("data_dir"))
        log(f"fit (vLLM, helpers.judges.fit): longest {dataset} prompts in UTF-8 bytes (>= tokens): {texts}")
    except DataError as exc:
        texts = {"S1": 0, "judge": 0, "reason": 0}
        log(f"fit: the {dataset} pairs cannot be read ({str(exc).splitlines()[0]}); prompt text NOT counted")
    described = max((fit.decoding_max_tokens(load_spec(j)) for j in judges if load_spec(j).backend == "local"
                     and load_spec(j).input_type != "text"), default=None)
    refused: dict[str, str] = {}
    for name, choice in judges.items():
        spec = load_spec(name)
        if spec.backend != "local":
            continue
        if not family_of(spec).vllm:
            log(f"fit: {name}: family {spec.family!r} is not served by vLLM 0.33 (transformers only); not sized")
            continue
        on = engine_line(spec, choice if choice != "auto" else "auto")
        try:
            fits = fit.judge_fits(spec, texts, described if spec.input_type == "text" else None)
        except fit.FitError as exc:
            log(f"fit: {exc}")
            refused[name] = str(exc)
            continue
        for one in fits:
            log(f"fit: {one.line()}  [engine: {on}]")
            if one.gpu == gpu and not one.fits and on.startswith("vllm"):
                refused[name] = f"does not fit on {gpu} under vLLM: {one.reason}"
    return refused


def lanes_local(grid: Grid, lanes: list[list[Cell]], gpus: list[str], workers: int,
                log: Callable[[str], None], overwrite: bool = False) -> list[dict]:
    """One worker per GPU (or ``workers`` CPU workers); each worker runs whole lanes."""

    def open_slot(slot: str | None) -> AbstractContextManager[Callable[[list[Cell]], list[dict]]]:
        def run_lane_here(lane: list[Cell]) -> list[dict]:
            results = []
            for cell in lane:
                log(f"start {cell.cell_id}" + (f" on GPU {slot}" if slot is not None else ""))
                results.append(run_cell(grid, cell, slot, overwrite))
                log(f"{results[-1]['status']} {cell.cell_id} ({results[-1]['seconds']} s)")
            return results

        return nullcontext(run_lane_here)

    slots = gpus or [None] * max(1, workers)
    return [row for rows in on_slots(lanes, slots, open_slot) for row in rows]


def run_lane(grid: Grid, lane: list[Cell]) -> list[dict]:
    """The cells of one lane, in order, in this worker (Ray has set ``CUDA_VISIBLE_DEVICES``)."""
    return [run_cell(grid, cell, None) for cell in lane]


def grid_shards(grid: Grid, lanes: list[list[Cell]]) -> list[Shard]:
    """One shard per lane of a grid plan, asking for its judge's GPUs."""
    return [
        Shard(key=f"lane-{lane[0].model}", fn=run_lane, kwargs={"grid": grid, "lane": lane},
              num_gpus=gpus_for(load_spec(lane[0].model)))
        for lane in lanes
    ]


def lanes_on_ray(grid: Grid, lanes: list[list[Cell]], log: Callable[[str], None]) -> list[dict]:
    """Every lane as a Ray task at ``$RAY_ADDRESS`` (or a local instance); GPUs and workers are
    Ray's to manage."""
    log(f"submitting {len(lanes)} lane(s) to Ray at {os.environ.get('RAY_ADDRESS') or 'a local instance'}")
    return [row for rows in shards_on_ray(grid_shards(grid, lanes)) for row in rows]


def run_grid(file: str | Path, overrides: dict | None = None, gpus: list[str] | None = None, workers: int = 1,
             executor: str = "local", force: bool = False, dry_run: bool = False,
             log: Callable[[str], None] = print, overwrite: bool = False,
             gpu_size: str = next(iter(fit.GPUS))) -> pd.DataFrame:
    """Run every unfinished cell of a grid; one row per cell with its status. ``overwrite``:
    a cell whose run folder holds a run of another identity moves it aside and runs afresh
    (without it, such a cell fails with a message naming what changed). ``dry_run``: the plan, with a
    memory fit line per judge and GPU size (:func:`fit_report`); a cell whose vLLM judge does not fit
    ``gpu_size`` is ``refused`` with the numbers."""
    if executor not in EXECUTORS:
        raise GridError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    grid = load_grid(file, overrides)
    lanes, skipped = plan(grid, force)
    for entry in skipped:
        log(f"skip {entry['cell']}: {entry['reason']}")
    gpus = gpus if gpus is not None else (grid.gpus or detect_gpus())
    if dry_run:
        refused = fit_report(grid, lanes, gpu_size, log)
        planned = [{"cell": c.cell_id, "status": "refused" if refused.get(c.model) or refused.get(_llm_of(c)) else
                    "planned", **cell_protocol(c), "fit": refused.get(c.model) or refused.get(_llm_of(c)) or "ok"}
                   for lane in lanes for c in lane]
        return pd.DataFrame(skipped + planned)
    if not lanes:
        return pd.DataFrame(skipped)
    if executor == "ray":
        if overwrite:
            raise GridError("--overwrite is supported by the local executor only")
        return pd.DataFrame(skipped + lanes_on_ray(grid, lanes, log))
    return pd.DataFrame(skipped + lanes_local(grid, lanes, gpus, workers, log, overwrite))


def _llm_of(cell: Cell) -> str | None:
    uses = cell.parameters.get("strategy") in ("S3", "S4", "all")
    return str(cell.parameters["judge_llm"]) if uses and cell.parameters.get("judge_llm") else None


def _overrides(pairs: list[list[str]] | None, parser: argparse.ArgumentParser) -> dict:
    """``-p NAME VALUE`` pairs, each value read as YAML; one that is not YAML is a usage error."""
    out = {}
    for key, value in pairs or []:
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            parser.error(f"argument -p {key}: {value!r} is not a YAML value ({str(exc).splitlines()[0]}); "
                         "quote strings, e.g. -p name '\"text\"'")
    return out


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number >= 1")
    return int(text)


def _gpu_ids(text: str) -> list[str]:
    """CUDA device ids as CUDA_VISIBLE_DEVICES takes them: indices or GPU-/MIG- UUIDs."""
    ids = [g.strip() for g in text.split(",") if g.strip()]
    bad = [g for g in ids if not (g.isdigit() or re.fullmatch(r"(GPU|MIG)-[0-9A-Za-z/-]+", g))]
    if not ids or bad:
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated GPU indices (0,1) or GPU-/MIG- UUIDs")
    return ids


def main(argv: list[str] | None = None) -> int:
    """``python -m helpers.run GRID [options]``: run a grid; 2 for a bad grid, 1 if a cell failed."""
    parser = argparse.ArgumentParser(prog="python -m helpers.run",
                                     description="Run notebooks/01_infer.ipynb for every cell of a grid YAML.")
    parser.add_argument("grid", help="a grid YAML, e.g. params/grid_cpu.yaml")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
                        help="override a notebook parameter in every cell (value read as YAML)")
    parser.add_argument("--gpus", type=_gpu_ids, help="comma-separated GPU ids, one worker each (default: all visible)")
    parser.add_argument("--workers", type=_positive, default=1, help="parallel workers without GPUs (default 1)")
    parser.add_argument("--executor", default="local", choices=EXECUTORS, help=f"one of {', '.join(EXECUTORS)}")
    parser.add_argument("--force", action="store_true", help="re-run cells that finished before")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the plan only, with each judge's vLLM memory fit on an 80 GB and a 141 GB GPU; "
                             "a cell that does not fit --gpu-size is refused (exit 1)")
    parser.add_argument("--gpu-size", default=next(iter(fit.GPUS)), choices=list(fit.GPUS),
                        help="the GPU a dry run checks the fit on (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true",
                        help="move aside run folders made with another identity (changed data, prompt, judge) "
                             "and run those cells afresh")
    args = parser.parse_args(argv)
    overrides = _overrides(args.parameter, parser)
    try:
        table = run_grid(args.grid, overrides, args.gpus, args.workers, args.executor,
                         args.force, args.dry_run, overwrite=args.overwrite, gpu_size=args.gpu_size)
    except GridError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(table.to_string(index=False) if not table.empty else "nothing to run")
    return 1 if (not table.empty and table["status"].isin(["failed", "refused"]).any()) else 0
