"""Tournament benchmark (not a timed test): how long ranking and judging take at challenge scale.

1. Bradley–Terry with 1,000 bootstrap replicates on 50 systems × 100,000 comparisons: plain BT
   (``helpers.stats.bt.bradley_terry``, on win matrices), the cell fitter without covariates (same
   model; the two must agree), and style control (the length covariate, which makes nearly every
   comparison its own cell, so this is the expensive one).
2. The tournament pipeline's overhead per comparison with a CPU judge (``length``): design,
   pairs table, judging both orders through the engine into the store, reading back, and turning
   verdicts into comparisons. A CPU judge costs almost nothing itself, so this is the price of
   the machinery that a model judge adds to its own generation time.

    .venv/bin/python benchmarks/bench_tournament.py [--systems 50] [--comparisons 100000]
        [--n-boot 1000] [--samples 400] [--pipeline-systems 6] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import numpy as np
import pandas as pd

from helpers import tournament as T
from helpers.stats import bt as S
from helpers.stats.bt import bradley_terry


def planted(n_systems: int, n: int, seed: int = 0) -> pd.DataFrame:
    """Comparisons from known strengths with a length effect (gamma = 1.5) and 5% ties."""
    rng = np.random.default_rng(seed)
    theta = rng.normal(0, 1, n_systems)
    verbosity = rng.normal(0, 0.15, n_systems)
    a = rng.integers(0, n_systems, n)
    b = (a + rng.integers(1, n_systems, n)) % n_systems
    ld = np.clip(verbosity[a] - verbosity[b] + rng.normal(0, 0.2, n), -0.99, 0.99)
    p = 1 / (1 + np.exp(-(theta[a] - theta[b] + 1.5 * ld)))
    u = rng.random(n)
    winner = np.where(u < 0.05, "tie", np.where(rng.random(n) < p, "a", "b"))
    names = np.array([f"sys{i:02d}" for i in range(n_systems)])
    return pd.DataFrame({"system_a": names[a], "system_b": names[b], "winner": winner, "length_diff": ld})


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def bench_bt(n_systems: int, n: int, n_boot: int) -> dict:
    comps = planted(n_systems, n)
    plain, t_plain = timed(lambda: bradley_terry(comps, n_boot=n_boot, seed=0))
    ours, t_ours = timed(lambda: S.fit_bt(comps, n_boot=n_boot, seed=0))
    style, t_style = timed(lambda: S.fit_bt(comps, ("length_diff",), n_boot=n_boot, seed=0))
    a = plain.set_index("system")["log_strength"]
    b = ours.ratings.set_index("system")["log_strength"].loc[a.index]
    return {
        "systems": n_systems, "comparisons": n, "n_boot": n_boot,
        "plain_ranking_module_s": round(t_plain, 2), "plain_tournament_fitter_s": round(t_ours, 2),
        "style_control_s": round(t_style, 2),
        "max_abs_diff_plain_fits": float(np.abs(a - b).max()),
        "length_coef": float(style.coefficients["coef"].iloc[0]),
        "length_coef_ci": [float(style.coefficients["coef_lo"].iloc[0]), float(style.coefficients["coef_hi"].iloc[0])],
    }


def synthetic_table(n_samples: int, n_systems: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [(f"v{i:05d}", f"sys{k}", "word " * int(rng.integers(5, 60)))
            for i in range(n_samples) for k in range(n_systems)]
    return pd.DataFrame(rows, columns=list(T.COLUMNS))


def bench_pipeline(n_samples: int, n_systems: int) -> dict:
    import helpers.run.engine  # noqa: F401 - one-time import, reported separately from per-comparison costs

    entries = synthetic_table(n_samples, n_systems)
    design, t_design = timed(lambda: T.design_pairs(entries, seed=0))
    pairs, t_pairs = timed(lambda: T.to_pairs(design.pairs, entries))
    with tempfile.TemporaryDirectory() as root:
        _, t_judge = timed(lambda: T.judge_tournament(pairs, ["length"], root, tag="bench", rounds=1))
        preds, t_read = timed(lambda: T.tournament_predictions(root, pairs))
        comps, t_comp = timed(lambda: T.comparisons_from_predictions(preds, pairs))
    n = len(pairs)
    stages = {"design": t_design, "pairs": t_pairs, "judge_both_orders_into_store": t_judge,
              "read_store": t_read, "to_comparisons": t_comp}
    return {
        "samples": n_samples, "systems": n_systems, "comparisons": n, "stored_rows": len(preds),
        "seconds": {k: round(v, 3) for k, v in stages.items()},
        "microseconds_per_comparison": {k: round(1e6 * v / n, 1) for k, v in stages.items()},
        "total_microseconds_per_comparison": round(1e6 * sum(stages.values()) / n, 1),
        "comparisons_out": len(comps),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", type=int, default=50)
    parser.add_argument("--comparisons", type=int, default=100_000)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=400, help="pipeline: samples in the synthetic tournament")
    parser.add_argument("--pipeline-systems", type=int, default=6)
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    args = parser.parse_args()
    _, t_import = timed(lambda: __import__("helpers.run.engine"))
    results = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_average_1min": os.getloadavg()[0]},
        "engine_import_s": round(t_import, 2),
        "bradley_terry": bench_bt(args.systems, args.comparisons, args.n_boot),
        "pipeline_length_judge": bench_pipeline(args.samples, args.pipeline_systems),
    }
    print(json.dumps(results, indent=2))
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
