"""Benchmark: vectorised Bradley-Terry bootstrap vs refitting a statsmodels Logit per replicate.

50 systems, 20,000 comparisons (10% ties), 1,000 bootstrap replicates. statsmodels is timed on
a subset of replicates and extrapolated (a full run takes minutes). Both fits must give the same
point ratings to 1e-6, and the same replicate ratings on the timed subset (the replicates are
drawn identically: multinomial counts over comparisons, expanded into rows for statsmodels).

Run: ``.venv/bin/python benchmarks/bench_bradley_terry.py [--sm-replicates 20]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from helpers.stats.bt import aggregate_wins, bradley_terry, encode_comparisons, fit_win_matrices
from helpers.stats.simulate import synthetic_comparisons

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from synthetic import statsmodels_strengths  # noqa: E402 - the tests' reference fit, one definition


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", type=int, default=50)
    parser.add_argument("--comparisons", type=int, default=20_000)
    parser.add_argument("--replicates", type=int, default=1_000)
    parser.add_argument("--sm-replicates", type=int, default=20, help="statsmodels replicates actually timed")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    strengths = np.linspace(-2, 2, args.systems)
    comparisons = synthetic_comparisons(strengths, args.comparisons, tie_rate=0.1, seed=args.seed)
    systems = sorted(set(comparisons["system_a"]) | set(comparisons["system_b"]))
    reference = systems[0]

    start = time.perf_counter()
    ratings = bradley_terry(comparisons, n_boot=args.replicates, seed=args.seed, reference=reference)
    ours = time.perf_counter() - start

    point_sm = statsmodels_strengths(comparisons, systems, reference)
    point_ours = ratings.set_index("system").loc[systems, "log_strength"].to_numpy()
    point_diff = float(np.abs(point_sm - point_ours).max())

    # replicate-level check and timing: the same resamples, refitted by statsmodels row by row
    index = {s: k for k, s in enumerate(systems)}
    i, j, outcome, w = encode_comparisons(comparisons, index, None)
    rng = np.random.default_rng(args.seed + 1)
    draws = [rng.integers(0, len(comparisons), len(comparisons)) for _ in range(args.sm_replicates)]
    start = time.perf_counter()
    sm_boot = [statsmodels_strengths(comparisons.iloc[d], systems, reference) for d in draws]
    sm_time = (time.perf_counter() - start) / args.sm_replicates * args.replicates
    rep_diff = 0.0
    for d, theta_sm in zip(draws, sm_boot, strict=True):
        counts = np.bincount(d, minlength=len(comparisons)).astype(float)[None]
        theta = fit_win_matrices(aggregate_wins(i, j, outcome, w, counts, len(systems)), index[reference])[0]
        rep_diff = max(rep_diff, float(np.abs(theta - theta_sm).max()))

    print(f"{args.systems} systems x {args.comparisons} comparisons x {args.replicates} bootstrap replicates")
    print(f"vectorised Bradley-Terry (fit + bootstrap): {ours:.2f} s")
    print(f"statsmodels Logit per replicate: {sm_time:.1f} s "
          f"(extrapolated from {args.sm_replicates} replicates, point fit not included)")
    print(f"speed-up: {sm_time / ours:.1f}x")
    print(f"max |rating difference| point fit: {point_diff:.2e}; replicates: {rep_diff:.2e} (log-strength units)")
    ok = point_diff < 1e-6 and rep_diff < 1e-6
    print("same ratings to 1e-6:", "yes" if ok else "NO")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
