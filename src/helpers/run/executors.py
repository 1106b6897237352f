"""Where shards of judging work run: on this machine (``local``) or on a Ray cluster (``ray``).

A *shard* is one call of a module-level function (``"package.module:function"`` or the function
itself) with keyword arguments — for a tournament, "judge these comparisons with this judge into
this run folder of the store". Shards are independent and idempotent: each writes into its own
run folder of the resumable store (``helpers.run.store``), which skips keys already present, so a
shard that is re-run after its worker was lost — by Ray's task retries, or by re-running the
same command — finishes the missing rows and never duplicates one. That is the only fault
tolerance needed, and it is the store's, not the executor's.

``local``
    With GPUs visible and shards that need them: one worker process per GPU, each started with
    ``CUDA_VISIBLE_DEVICES`` set to its GPU, pulling the next shard when it finishes one.
    Without GPUs: in this process one after another (``workers=1``, the default: nothing to
    pickle, easy to debug) or a process pool of ``workers`` processes.

``ray``
    Ray tasks on an existing cluster (``address="auto"`` or ``"ray://host:10001"``) or on a
    local instance started here (``address=None``). Each shard is a task asking for the GPUs its
    judge needs (``num_gpus``); Ray places it on a node with them and sets
    ``CUDA_VISIBLE_DEVICES`` itself. ``ray`` is imported only here, only when asked for. The
    store root must be a filesystem every node sees (NFS, a mounted bucket), because workers
    write their shard's rows there directly.

    For vLLM judges at cluster scale, Ray Data batch inference is the natural fit (a dataset of
    requests mapped through ``vllm.LLM`` replicas with ``map_batches`` and an actor pool, or
    ``ray.data.llm``'s processor), with the store writing its output; these shard tasks are the
    simple path that keeps the study's engine unchanged and suits CPU judges, API judges and
    one-model-per-GPU transformers judges.

How ``helpers.run.grid`` uses it: the grid's executors take ``(grid, lanes, gpus, workers, log)``;
:func:`grid_on_ray` has that signature and runs each lane (the cells of one judge, in order, so
S3/S4 reuse S2's descriptions) as one Ray task with its judge's GPUs. Registering it is one line
in ``helpers/grid.py``: ``EXECUTORS["ray"] = executors.grid_on_ray``. The cluster address comes
from ``RAY_ADDRESS`` (unset: a local Ray instance).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import Any

from helpers.judges.base import JudgeSpec
from helpers.run.grid import detect_gpus

EXECUTORS = ("local", "ray")


class ExecutorError(RuntimeError):
    """The executor cannot run as asked (Ray missing, cluster unreachable); the message says why."""


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
    if callable(fn):
        return fn
    from helpers.judges.registry import import_object

    return import_object(fn)


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
        return run_local(shards, workers=workers, gpus=gpus)
    if executor == "ray":
        return run_ray(shards, address=address, max_retries=max_retries)
    raise ExecutorError(f"executor must be one of {EXECUTORS}, got {executor!r}")


def run_local(shards: Sequence[Shard], *, workers: int = 1, gpus: Sequence[str] | None = None) -> list[Any]:
    """This machine: one process per GPU for GPU shards, else sequential or a process pool."""
    gpus = list(detect_gpus() if gpus is None else gpus)
    if gpus and any(s.num_gpus > 0 for s in shards):
        return _per_gpu(shards, gpus)
    if workers <= 1 or len(shards) <= 1:
        return [call(s.fn, s.kwargs) for s in shards]
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(call, s.fn, s.kwargs) for s in shards]
        return [f.result() for f in futures]


def _pin_gpu(gpu: str) -> None:
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu


def _per_gpu(shards: Sequence[Shard], gpus: list[str]) -> list[Any]:
    """One single-process pool per GPU (spawned, so CUDA starts fresh with only that GPU visible);
    a thread per GPU feeds its process the next shard from a shared queue."""
    todo: queue.Queue = queue.Queue()
    for i, shard in enumerate(shards):
        todo.put((i, shard))
    results: list[Any] = [None] * len(shards)
    errors: list[BaseException] = []

    def feed(gpu: str) -> None:
        with ProcessPoolExecutor(1, mp_context=get_context("spawn"), initializer=_pin_gpu, initargs=(gpu,)) as pool:
            while not errors:
                try:
                    i, shard = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    results[i] = pool.submit(call, shard.fn, shard.kwargs).result()
                except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                    errors.append(exc)

    threads = [threading.Thread(target=feed, args=(gpu,), daemon=True) for gpu in gpus]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


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


def run_ray(shards: Sequence[Shard], *, address: str | None = None, max_retries: int = 3) -> list[Any]:
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


# --------------------------------------------------------------------------- helpers.run.grid on Ray


def run_lane(grid: Any, lane: list) -> list[dict]:
    """The cells of one lane, in order, in this worker (Ray has set ``CUDA_VISIBLE_DEVICES``)."""
    from helpers.run.grid import run_cell

    return [run_cell(grid, cell, None) for cell in lane]


def grid_shards(grid: Any, lanes: list[list]) -> list[Shard]:
    """One shard per lane of a ``helpers.run.grid`` plan, asking for its judge's GPUs."""
    from helpers.judges.registry import load_spec

    return [
        Shard(key=f"lane-{lane[0].model}", fn=run_lane, kwargs={"grid": grid, "lane": lane},
              num_gpus=gpus_for(load_spec(lane[0].model)))
        for lane in lanes
    ]


def grid_on_ray(grid: Any, lanes: list[list], gpus: list[str], workers: int, log: Callable[[str], None]) -> list[dict]:
    """A ``helpers.run.grid`` executor: every lane as a Ray task (``gpus``/``workers`` are Ray's to
    manage on a cluster and are ignored)."""
    log(f"submitting {len(lanes)} lane(s) to Ray at {os.environ.get('RAY_ADDRESS') or 'a local instance'}")
    results = run_ray(grid_shards(grid, lanes))
    return [row for rows in results for row in rows]
