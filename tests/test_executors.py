"""Executors: shards of judging run on this machine or on Ray and land in the same store, with
the same rows either way; a lost shard re-run adds exactly the missing rows."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd
import pytest

from helpers import tournament as T
from helpers.judges.registry import load_spec
from helpers.run.launch import ExecutorError, Shard, gpus_for, run_shards
from helpers.run.store import read_jsonl

VOLATILE = ["created_at", "latency_s"]


def small_tournament() -> pd.DataFrame:
    rows = [(f"s{i}", system, "word " * (3 + i + 4 * k)) for i in range(5)
            for k, system in enumerate(("alpha", "beta", "gamma"))]
    table = pd.DataFrame(rows, columns=list(T.COLUMNS))
    return T.to_pairs(T.design_pairs(table).pairs, table)


def stored_rows(root) -> pd.DataFrame:
    table = pd.concat([pd.DataFrame(read_jsonl(f)) for f in sorted(root.glob("*/predictions.jsonl"))])
    return table.drop(columns=VOLATILE).sort_values(["run_id", "key"]).reset_index(drop=True)


def test_local_shards_return_in_order_and_unknown_executors_are_named():
    shards = [Shard(key=str(i), fn="builtins:pow", kwargs={"base": i, "exp": 2}) for i in range(4)]
    assert run_shards(shards, "local") == [0, 1, 4, 9]
    assert run_shards(shards, "local", workers=2) == [0, 1, 4, 9]  # a process pool, same order
    with pytest.raises(ExecutorError, match="executor must be one of"):
        run_shards(shards, "dask")


def test_each_gpu_gets_its_own_process_with_only_that_gpu_visible():
    shards = [Shard(key=str(i), fn="os:getenv", kwargs={"key": "CUDA_VISIBLE_DEVICES"}, num_gpus=1) for i in range(3)]
    seen = run_shards(shards, "local", gpus=["0", "1"])
    assert set(seen) <= {"0", "1"} and len(seen) == 3


def test_cpu_and_api_judges_ask_for_no_gpu():
    assert gpus_for(load_spec("length")) == 0
    assert gpus_for(load_spec("gpt4o")) == 0
    assert gpus_for(load_spec("qwen25omni")) >= 1


def test_a_grid_on_ray_is_one_task_per_judge_lane_asking_for_that_judges_gpus():
    from helpers.run.launch import grid_shards, load_grid, plan, run_lane

    grid = load_grid(Path(__file__).resolve().parents[1] / "params" / "grid_paper.yaml")
    lanes, _ = plan(grid, force=True)
    shards = grid_shards(grid, lanes)
    assert [s.key for s in shards] == [f"lane-{lane[0].model}" for lane in lanes]
    assert all(s.fn is run_lane and s.kwargs["lane"] == lane for s, lane in zip(shards, lanes, strict=True))
    assert all(s.num_gpus == gpus_for(load_spec(lane[0].model)) for s, lane in zip(shards, lanes, strict=True))


@pytest.fixture(scope="module")
def ray_instance():
    """A local Ray instance for this module (2 CPUs, no GPU), started once and shut down after.

    Ray gives a new node 30 s to register (hard-coded in ``ray._private.node``) and its raylet a
    short while to hear from the dashboard agent; on a busy 2-core machine the agent alone can take
    longer than that to import. So the raylet is told to wait longer (two RAY_* settings, restored
    afterwards) and the registration poll retries patiently; if Ray still cannot start, the test
    is skipped with Ray's reason."""
    ray = pytest.importorskip("ray", reason="ray is not installed (extra 'ray')")
    services = ray._private.services
    original = services.get_node

    def patient_get_node(*args, **kwargs):
        deadline = time.monotonic() + 180
        while True:
            try:
                return original(*args, **kwargs)
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    patience = {"RAY_raylet_start_wait_time_s": "180", "RAY_agent_register_timeout_ms": "180000"}
    saved = {key: os.environ.get(key) for key in patience}
    os.environ.update(patience)
    services.get_node = patient_get_node
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    except Exception as exc:  # noqa: BLE001 - any start failure means: cannot test here
        pytest.skip(f"a local Ray instance could not start: {exc}")
    finally:
        services.get_node = original
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_gives_exactly_the_rows_local_gives_and_a_lost_shard_reruns_without_duplicates(ray_instance, tmp_path):
    pairs = small_tournament()
    judges = ["length", "random"]
    T.judge_tournament(pairs, judges, tmp_path / "local", tag="t", shards=2, rounds=2, seed=7, executor="local")
    T.judge_tournament(pairs, judges, tmp_path / "ray", tag="t", shards=2, rounds=2, seed=7, executor="ray")
    local, on_ray = stored_rows(tmp_path / "local"), stored_rows(tmp_path / "ray")
    assert len(local) == len(judges) * len(pairs) * 2 * 2
    pd.testing.assert_frame_equal(on_ray, local)

    # a worker died after writing part of its shard: re-running the same call completes it
    [shard_file] = (tmp_path / "ray").glob(f"random__*t-{T.pairs_digest(pairs)}.s1of2*/predictions.jsonl")
    lines = shard_file.read_text().splitlines(keepends=True)
    shard_file.write_text("".join(lines[: len(lines) // 3]))
    T.judge_tournament(pairs, judges, tmp_path / "ray", tag="t", shards=2, rounds=2, seed=7, executor="ray")
    pd.testing.assert_frame_equal(stored_rows(tmp_path / "ray"), local)
    assert ray_instance.is_initialized()  # an instance the caller started is left running
