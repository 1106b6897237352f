"""Run ``notebooks/01_infer.ipynb`` for every cell of a grid: ``python -m helpers.run.grid params/grid_<name>.yaml``.

A grid YAML names a notebook, a ``matrix`` (every combination of its lists is one cell) and
fixed ``parameters``. Each cell is one papermill run whose executed copy lands in
``reports/runs/<grid>/<cell>.ipynb`` (with a log beside it); a cell whose executed copy finished
without error is skipped, and the store resumes a cell that was interrupted.

Cells of the same judge form a lane that runs in order on one worker, so S2 describes once and
S3/S4 reuse its descriptions instead of racing to describe again on another GPU. Lanes run in
parallel, one process per GPU (``CUDA_VISIBLE_DEVICES``), or sequentially on CPU by default.
Executors are pluggable (``local`` here; a distributed one can be registered in ``EXECUTORS``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import queue
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from helpers import paths
from helpers.judges.registry import list_judges
from helpers.run import engine


class GridError(ValueError):
    """A grid file that cannot be run; the message names the file and the problem."""


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


def load_grid(file: str | Path, overrides: dict | None = None) -> Grid:
    """Read a grid YAML; ``overrides`` (from ``-p``) replace fixed parameters in every cell."""
    file = Path(file)
    if not file.is_file():
        raise GridError(f"grid file {file} not found")
    raw = yaml.safe_load(file.read_text()) or {}
    if not isinstance(raw, dict) or not isinstance(raw.get("matrix"), dict) or not raw["matrix"]:
        raise GridError(f"{file}: needs a 'matrix' mapping of parameter -> list of values")
    unknown = set(raw) - {"notebook", "executed_dir", "matrix", "parameters", "gpus", "description"}
    if unknown:
        raise GridError(f"{file}: unknown key(s) {', '.join(sorted(unknown))}")
    for key, values in raw["matrix"].items():
        if not isinstance(values, list) or not values:
            raise GridError(f"{file}: matrix.{key} must be a non-empty list")
    root = paths.project_root()
    notebook = root / raw.get("notebook", "notebooks/01_infer.ipynb")
    executed = root / raw.get("executed_dir", "reports/runs") / file.stem
    fixed = dict(raw.get("parameters") or {}) | dict(overrides or {})
    keys = list(raw["matrix"])
    cells = []
    for combo in itertools.product(*(raw["matrix"][k] for k in keys)):
        values = dict(zip(keys, combo, strict=True))
        cell_id = _cell_id(values)
        cells.append(Cell(cell_id, fixed | values, executed / f"{cell_id}.ipynb"))
    gpus = [str(g) for g in raw.get("gpus") or []]
    return Grid(file.stem, notebook, executed, cells, gpus)


RUNTIME_PARAMETERS = ("overwrite",)  # passed to a cell's run, but not what the cell is


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


RUN_ARGUMENTS = ("strategy", "order", "rounds", "dataset", "input_type", "judge_llm", "limit", "names", "seed")


def run_statuses(parameters: dict) -> dict[str, str]:
    """State of each run folder a cell writes (``engine.run_state``: complete, missing,
    other identity, failed, running, interrupted, incomplete)."""
    args = {k: parameters[k] for k in RUN_ARGUMENTS if k in parameters}
    root = engine.from_root(parameters.get("output_dir")) or paths.predictions_dir()
    identity = {k: parameters[k] for k in engine.IDENTITY_PARAMETERS if k in parameters}
    plans = engine.planned_runs(parameters["model"], **args, data_dir=engine.from_root(parameters.get("data_dir")),
                                output_dir=root, identity_parameters=identity, device=parameters.get("device"))
    return {plan["run_id"]: engine.run_state(plan, root) for plan in plans}


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


def run_local(grid: Grid, lanes: list[list[Cell]], gpus: list[str], workers: int,
              log: Callable[[str], None], overwrite: bool = False) -> list[dict]:
    """One worker per GPU (or ``workers`` CPU workers); each worker runs whole lanes."""
    slots: queue.Queue = queue.Queue()
    for slot in gpus or [None] * max(1, workers):
        slots.put(slot)

    def lane_job(lane: list[Cell]) -> list[dict]:
        slot = slots.get()
        try:
            results = []
            for cell in lane:
                log(f"start {cell.cell_id}" + (f" on GPU {slot}" if slot is not None else ""))
                results.append(run_cell(grid, cell, slot, overwrite))
                log(f"{results[-1]['status']} {cell.cell_id} ({results[-1]['seconds']} s)")
            return results
        finally:
            slots.put(slot)

    with ThreadPoolExecutor(max_workers=slots.qsize()) as pool:
        return [r for results in pool.map(lane_job, lanes) for r in results]


def run_ray(grid: Grid, lanes: list[list[Cell]], gpus: list[str], workers: int, log: Callable[[str], None],
            overwrite: bool = False) -> list[dict]:
    """Each lane as one Ray task on the cluster at ``$RAY_ADDRESS`` (or a local instance);
    imported lazily so that Ray stays optional."""
    from helpers.run import executors

    if overwrite:
        raise GridError("--overwrite is supported by the local executor only")
    return executors.grid_on_ray(grid, lanes, gpus, workers, log)


EXECUTORS: dict[str, Callable[..., list[dict]]] = {"local": run_local, "ray": run_ray}


def run_grid(file: str | Path, overrides: dict | None = None, gpus: list[str] | None = None, workers: int = 1,
             executor: str = "local", force: bool = False, dry_run: bool = False,
             log: Callable[[str], None] = print, overwrite: bool = False) -> pd.DataFrame:
    """Run every unfinished cell of a grid; one row per cell with its status. ``overwrite``:
    a cell whose run folder holds a run of another identity moves it aside and runs afresh
    (without it, such a cell fails with a message naming what changed)."""
    if executor not in EXECUTORS:
        raise GridError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    grid = load_grid(file, overrides)
    lanes, skipped = plan(grid, force)
    for entry in skipped:
        log(f"skip {entry['cell']}: {entry['reason']}")
    gpus = gpus if gpus is not None else (grid.gpus or detect_gpus())
    if dry_run:
        planned = [{"cell": c.cell_id, "status": "planned"} for lane in lanes for c in lane]
        return pd.DataFrame(skipped + planned)
    extra = {"overwrite": True} if overwrite else {}
    results = EXECUTORS[executor](grid, lanes, gpus, workers, log, **extra) if lanes else []
    return pd.DataFrame(skipped + results)


def _overrides(pairs: list[list[str]] | None) -> dict:
    return {key: yaml.safe_load(value) for key, value in pairs or []}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.run.grid", description=__doc__.splitlines()[0])
    parser.add_argument("grid", help="a grid YAML, e.g. params/grid_cpu.yaml")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
                        help="override a notebook parameter in every cell (value read as YAML)")
    parser.add_argument("--gpus", help="comma-separated GPU ids, one worker each (default: all visible)")
    parser.add_argument("--workers", type=int, default=1, help="parallel workers without GPUs (default 1)")
    parser.add_argument("--executor", default="local", help=f"one of {', '.join(EXECUTORS)}")
    parser.add_argument("--force", action="store_true", help="re-run cells that finished before")
    parser.add_argument("--dry-run", action="store_true", help="print the plan only")
    parser.add_argument("--overwrite", action="store_true",
                        help="move aside run folders made with another identity (changed data, prompt, judge) "
                             "and run those cells afresh")
    args = parser.parse_args(argv)
    gpus = [g.strip() for g in args.gpus.split(",") if g.strip()] if args.gpus else None
    try:
        table = run_grid(args.grid, _overrides(args.parameter), gpus, args.workers, args.executor,
                         args.force, args.dry_run, overwrite=args.overwrite)
    except GridError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(table.to_string(index=False) if not table.empty else "nothing to run")
    return 1 if (not table.empty and (table["status"] == "failed").any()) else 0


if __name__ == "__main__":
    sys.exit(main())
