"""Simulated judges and comparisons with known properties, and the ranking-fidelity simulation:
how many comparisons a judge of given accuracy and swap consistency needs for the Bradley–Terry
ranking of M systems to match the true one (Kendall tau), in one order or both.

A simulated judge is a mixture, per pair and round, of two behaviours:

- with probability ``1 - s`` it is *position-biased*: it answers ``a1`` (the description shown
  first) in whichever order it sees the pair, so its normal and reverse answers disagree once
  mapped back;
- otherwise it *reads the content*: it gives one verdict about the two descriptions, the same in
  both orders, right with probability ``p_c``.

With ``p_c = (p - (1 - s) / 2) / s`` the two-class accuracy is ``p`` in each order (position
bias is right half the time when truths fall evenly on both sides) and the swap consistency is
``s``, which is what the paper measures. ``p <= (1 + s) / 2`` is therefore required. Rounds are
independent draws, so round consistency falls below 1 as a real sampled judge's does.
(Synthetic predictions tables in the store's schema, for tests, are ``tests/synthetic.py``.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from helpers.stats.bt import adaptive_pairs, fit_win_matrices, rating_covariance


def content_accuracy(accuracy: float, swap_consistency: float) -> float:
    """Accuracy of the content-reading behaviour that yields ``accuracy`` overall."""
    if not 0 < swap_consistency <= 1:
        raise ValueError(f"swap consistency must be in (0, 1], got {swap_consistency}")
    p_c = (accuracy - (1 - swap_consistency) / 2) / swap_consistency
    if not 0 <= p_c <= 1:
        raise ValueError(
            f"accuracy {accuracy} and swap consistency {swap_consistency} are incompatible: "
            f"a judge this inconsistent is right about half the time when biased, so need "
            f"(1 - s)/2 <= p <= (1 + s)/2"
        )
    return p_c


# --------------------------------------------------------------------------- comparisons


def bt_probability(strengths: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """P(i beats j) under Bradley-Terry with log-strengths."""
    return 1.0 / (1.0 + np.exp(strengths[j] - strengths[i]))


def random_matchups(n_systems: int, n: int, rng: np.random.Generator, size: tuple[int, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uniformly random pairs of distinct systems (per leading ``size``)."""
    i = rng.integers(0, n_systems, size=size + (n,))
    j = (i + rng.integers(1, n_systems, size=size + (n,))) % n_systems
    return i, j


def synthetic_comparisons(
    strengths: Mapping[str, float] | Sequence[float],
    n_comparisons: int,
    tie_rate: float = 0.0,
    seed: int = 0,
) -> pd.DataFrame:
    """``system_a, system_b, winner`` drawn from Bradley-Terry with the given log-strengths
    (a mapping name -> strength, or a list named ``s00, s01...``); a share ``tie_rate`` of
    comparisons is replaced by ties, which carry no information about the order."""
    if not isinstance(strengths, Mapping):
        strengths = {f"s{k:02d}": float(v) for k, v in enumerate(strengths)}
    names = np.array(list(strengths), dtype=object)
    theta = np.array(list(strengths.values()), dtype=float)
    rng = np.random.default_rng(seed)
    i, j = random_matchups(len(names), n_comparisons, rng)
    a_wins = rng.random(n_comparisons) < bt_probability(theta, i, j)
    winner = np.where(a_wins, "a", "b").astype(object)
    winner[rng.random(n_comparisons) < tie_rate] = "tie"
    return pd.DataFrame({"system_a": names[i], "system_b": names[j], "winner": winner})


# --------------------------------------------------------------------------- ranking fidelity


def kendall_tau_rows(estimates: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Kendall's tau between each row of ``estimates (R, M)`` and ``truth (M,)`` (no ties in
    truth), vectorised: (concordant - discordant) / pairs; tied estimates count zero."""
    upper = np.triu_indices(len(truth), k=1)
    true_sign = np.sign(truth[upper[1]] - truth[upper[0]])
    est_sign = np.sign(estimates[:, upper[1]] - estimates[:, upper[0]])
    return (est_sign * true_sign).sum(axis=1) / len(true_sign)


def judged_win_matrices(
    strengths: np.ndarray, n_comparisons: int, accuracy: float, swap_consistency: float = 1.0,
    both_orders: bool = False, n_reps: int = 100, rng: np.random.Generator | None = None,
) -> np.ndarray:
    """``(n_reps, M, M)`` win matrices from a simulated judge (the judge model of this module's docstring).

    Each comparison: two random systems; the true preference drawn from Bradley-Terry with
    ``strengths``; shown to the judge with a random side first. With probability
    ``1 - swap_consistency`` the judge is position-biased and names the first-shown system,
    otherwise it reads the content and is right with the accuracy that makes its overall
    accuracy ``accuracy``. ``both_orders``: the judge sees both orders (2 calls) and a
    disagreement between them becomes a tie, as normal-reverse voting with two votes does.
    """
    rng = rng or np.random.default_rng(0)
    m = len(strengths)
    p_content = content_accuracy(accuracy, swap_consistency)
    i, j = random_matchups(m, n_comparisons, rng, size=(n_reps,))
    truth_i = rng.random(i.shape) < 1.0 / (1.0 + np.exp(strengths[j] - strengths[i]))
    content_i = np.where(rng.random(i.shape) < p_content, truth_i, ~truth_i)
    biased = rng.random(i.shape) >= swap_consistency
    if both_orders:
        i_share = np.where(biased, 0.5, content_i.astype(float))
    else:
        first_is_i = rng.random(i.shape) < 0.5
        i_share = np.where(biased, first_is_i, content_i).astype(float)
    offset = (np.arange(n_reps) * m * m)[:, None]
    flat = np.bincount((offset + i * m + j).ravel(), weights=i_share.ravel(), minlength=n_reps * m * m)
    flat += np.bincount((offset + j * m + i).ravel(), weights=(1 - i_share).ravel(), minlength=n_reps * m * m)
    return flat.reshape(n_reps, m, m)


def fidelity_curve(
    n_systems: int = 10,
    n_comparisons: Sequence[int] = (50, 100, 200, 400, 800, 1600, 3200, 6400),
    accuracies: Sequence[float] = (0.6, 0.67, 0.75, 0.9, 1.0),
    swap_consistency: float = 1.0,
    both_orders: bool = False,
    spread: float = math.log(10),
    n_reps: int = 100,
    seed: int = 0,
    prior: float = 0.1,
) -> pd.DataFrame:
    """Kendall tau between fitted and true strengths vs number of comparisons, per accuracy.

    True log-strengths are evenly spaced over ``spread`` (ln 10: the best system beats the worst
    10:1, i.e. 400 Elo points). ``prior`` virtual ties per system pair keep fits finite when few
    comparisons leave a system undefeated. Returns mean tau, its 2.5/97.5% quantiles over
    replicates, the share of replicates with tau >= 0.9, and the judge calls spent.
    """
    strengths = np.linspace(-spread / 2, spread / 2, n_systems)
    rng = np.random.default_rng(seed)
    rows = []
    for accuracy in accuracies:
        for n in n_comparisons:
            wins = judged_win_matrices(strengths, n, accuracy, swap_consistency, both_orders, n_reps, rng)
            tau = kendall_tau_rows(fit_win_matrices(wins, 0, prior), strengths)
            rows.append({
                "accuracy": accuracy, "swap_consistency": swap_consistency, "both_orders": both_orders,
                "n_comparisons": n, "calls": n * (2 if both_orders else 1),
                "tau_mean": float(np.nanmean(tau)), "tau_lo": float(np.nanquantile(tau, 0.025)),
                "tau_hi": float(np.nanquantile(tau, 0.975)), "share_tau_ge_0_9": float(np.nanmean(tau >= 0.9)),
            })
    return pd.DataFrame(rows)


def comparisons_needed(curve: pd.DataFrame, target: float = 0.9, column: str = "tau_mean") -> pd.DataFrame:
    """Per simulated judge, the fewest comparisons on the grid whose ``column`` reaches
    ``target`` (NaN when none does), with the judge calls that costs."""
    keys = ["accuracy", "swap_consistency", "both_orders"]
    rows = []
    for key, group in curve.groupby(keys, sort=True):
        ok = group[group[column] >= target].sort_values("n_comparisons")
        rows.append({**dict(zip(keys, key, strict=True)), "target": target,
                     "n_comparisons": ok["n_comparisons"].iloc[0] if len(ok) else np.nan,
                     "calls": ok["calls"].iloc[0] if len(ok) else np.nan})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- adaptive vs uniform designs


def judge_verdicts(strengths: np.ndarray, i: np.ndarray, j: np.ndarray, accuracy: float, swap_consistency: float,
                   both_orders: bool, rng: np.random.Generator) -> np.ndarray:
    """The share of a win that system ``i`` gets in each comparison ``(i, j)`` from the simulated
    judge of this module (1, 0, or 0.5 for a tie when both orders disagree)."""
    p_content = content_accuracy(accuracy, swap_consistency)
    truth_i = rng.random(i.shape) < 1.0 / (1.0 + np.exp(strengths[j] - strengths[i]))
    content_i = np.where(rng.random(i.shape) < p_content, truth_i, ~truth_i)
    biased = rng.random(i.shape) >= swap_consistency
    if both_orders:
        return np.where(biased, 0.5, content_i.astype(float))
    first_is_i = rng.random(i.shape) < 0.5
    return np.where(biased, first_is_i, content_i).astype(float)


def _add_wins(wins: np.ndarray, i: np.ndarray, j: np.ndarray, share: np.ndarray) -> None:
    m = wins.shape[0]
    wins += np.bincount(i * m + j, share, m * m).reshape(m, m) + np.bincount(j * m + i, 1 - share, m * m).reshape(m, m)


def design_run(strengths: np.ndarray, batch: int, n_batches: int, accuracy: float, swap_consistency: float,
               adaptive: bool, rng: np.random.Generator, both_orders: bool = True, prior: float = 0.1,
               explore: float = 0.05) -> np.ndarray:
    """One simulated tournament judged in ``n_batches`` batches of ``batch`` comparisons:
    uniformly random pairs, or (``adaptive``) a uniform first batch and then after each batch a
    Bradley–Terry refit and the next batch from :func:`helpers.stats.bt.adaptive_pairs`, as
    ``python -m helpers.tournament judge --adaptive`` does. Returns Kendall's tau against the
    true order after each batch."""
    m = len(strengths)
    wins = np.zeros((m, m))
    taus = np.empty(n_batches)
    theta = None
    for k in range(n_batches):
        if adaptive and theta is not None:
            i, j = adaptive_pairs(theta, rating_covariance(wins, theta, prior), batch, rng, explore)
        else:
            i, j = random_matchups(m, batch, rng)
        _add_wins(wins, i, j, judge_verdicts(strengths, i, j, accuracy, swap_consistency, both_orders, rng))
        theta = fit_win_matrices(wins, 0, prior)
        taus[k] = kendall_tau_rows(theta[None, :], strengths)[0]
    return taus


def adaptive_vs_uniform(
    n_systems: Sequence[int] = (10, 50), accuracy: float = 0.75, swap_consistency: float = 0.9,
    batches: Mapping[int, tuple[int, int]] | None = None, n_reps: int = 20, spread: float = math.log(10),
    seed: int = 0, both_orders: bool = True,
) -> pd.DataFrame:
    """Mean Kendall tau (and its 2.5/97.5% quantiles over ``n_reps`` replicates) after each batch
    of a uniform and an adaptive design, for each number of systems (true log-strengths evenly
    spread over ``spread``) and one simulated judge. ``batches`` maps a number of systems to
    ``(batch size, number of batches)``. Both designs of a replicate face the same systems and
    the same judge; each design draws from its own seeded stream."""
    batches = dict(batches or {10: (250, 40), 50: (2500, 40)})
    rows = []
    for m in n_systems:
        size, count = batches[m]
        strengths = np.linspace(-spread / 2, spread / 2, m)
        for design in ("uniform", "adaptive"):
            rng = np.random.default_rng([seed, m])
            taus = np.array([design_run(strengths, size, count, accuracy, swap_consistency, design == "adaptive", rng,
                                        both_orders) for _ in range(n_reps)])
            for k in range(count):
                rows.append({"n_systems": m, "design": design, "accuracy": accuracy,
                             "swap_consistency": swap_consistency, "both_orders": both_orders,
                             "n_comparisons": size * (k + 1), "calls": size * (k + 1) * (2 if both_orders else 1),
                             "tau_mean": float(taus[:, k].mean()), "tau_lo": float(np.quantile(taus[:, k], 0.025)),
                             "tau_hi": float(np.quantile(taus[:, k], 0.975))})
    return pd.DataFrame(rows)


def comparisons_to_reach(curve: pd.DataFrame, target: float = 0.9) -> pd.DataFrame:
    """Per number of systems and design, the comparisons at which the mean tau first reaches
    ``target`` (linear interpolation between batches; NaN when it never does), and the ratio
    uniform / adaptive: how many times fewer comparisons the adaptive design needs."""
    rows = []
    for (m, design), group in curve.groupby(["n_systems", "design"], sort=True):
        group = group.sort_values("n_comparisons")
        n, tau = group["n_comparisons"].to_numpy(float), group["tau_mean"].to_numpy()
        hit = np.flatnonzero(tau >= target)
        if not len(hit):
            needed = np.nan
        elif hit[0] == 0:
            needed = n[0]
        else:
            k = hit[0]
            needed = n[k - 1] + (target - tau[k - 1]) * (n[k] - n[k - 1]) / (tau[k] - tau[k - 1])
        rows.append({"n_systems": m, "design": design, "target": target, "n_comparisons": needed})
    table = pd.DataFrame(rows).pivot(index="n_systems", columns="design", values="n_comparisons").reset_index()
    table.columns.name = None
    table["target"] = target
    table["ratio_uniform_to_adaptive"] = table["uniform"] / table["adaptive"]
    return table[["n_systems", "target", "uniform", "adaptive", "ratio_uniform_to_adaptive"]]


# --------------------------------------------------------------------------- the saving over many seeds


SPREADS = {"close": math.log(3), "paper-like": math.log(10), "far": math.log(100)}
"""True log-strength spread best-to-worst of the simulated systems: 190, 400 (the earlier
simulation's) and 800 Elo points; evenly spaced in between."""
HORIZONS = {(10, "close"): (200, 60), (10, "paper-like"): (100, 60), (10, "far"): (50, 60),
            (50, "close"): (4000, 60), (50, "paper-like"): (1000, 60), (50, "far"): (500, 60)}
"""Per number of systems and spread, ``(batch size, number of batches)`` of a simulated design:
long enough for the uniform design to reach tau 0.9 in most seeds, fine enough to place it."""


def _batched_covariance(wins: np.ndarray, theta: np.ndarray, prior: float) -> np.ndarray:
    """:func:`helpers.stats.bt.rating_covariance` for a batch of win matrices ``(S, M, M)``."""
    from helpers.stats.bt import _win_terms

    terms, _ = _win_terms(wins, prior)
    info = terms(theta, True, np.arange(len(wins)))[1]
    m = wins.shape[1]
    cov = np.zeros_like(info)
    cov[:, 1:, 1:] = np.linalg.inv(info[:, 1:, 1:] + 1e-9 * np.eye(m - 1))
    return cov


def design_runs(strengths: np.ndarray, batch: int, n_batches: int, accuracy: float, swap_consistency: float,
                adaptive: bool, seeds: Sequence[int], prior: float = 0.1, explore: float = 0.05,
                both_orders: bool = True) -> np.ndarray:
    """:func:`design_run` for many seeds at once -> Kendall tau ``(seeds, n_batches)``: one
    batched Bradley–Terry fit per batch for all seeds (the same maxima as one fit each), each
    seed drawing its pairs and verdicts from its own stream ``default_rng([seed, M, adaptive])``,
    so a seed's tournament does not depend on which other seeds run beside it."""
    from helpers.stats.bt import fit_win_matrices, pair_weights

    m, n_seeds = len(strengths), len(seeds)
    rngs = [np.random.default_rng([int(seed), m, int(adaptive)]) for seed in seeds]
    wins = np.zeros((n_seeds, m, m))
    taus = np.empty((n_seeds, n_batches))
    offset = (np.arange(n_seeds) * m * m)[:, None]
    theta = None
    for k in range(n_batches):
        if adaptive and theta is not None:
            cov = _batched_covariance(wins, theta, prior)
            draws = []
            for s, rng in enumerate(rngs):
                i, j, weight = pair_weights(theta[s], cov[s], explore)
                pick = rng.choice(len(weight), size=batch, p=weight)
                draws.append((i[pick], j[pick]))
            i, j = (np.stack(x) for x in zip(*draws, strict=True))
        else:
            i, j = (np.stack(x) for x in zip(*(random_matchups(m, batch, rng) for rng in rngs), strict=True))
        share = np.stack([judge_verdicts(strengths, i[s], j[s], accuracy, swap_consistency, both_orders, rng)
                          for s, rng in enumerate(rngs)])
        flat = np.bincount((offset + i * m + j).ravel(), share.ravel(), n_seeds * m * m)
        flat += np.bincount((offset + j * m + i).ravel(), (1 - share).ravel(), n_seeds * m * m)
        wins += flat.reshape(n_seeds, m, m)
        theta = fit_win_matrices(wins, 0, prior)
        taus[:, k] = kendall_tau_rows(theta, strengths)
    return taus


def _first_reach(n: np.ndarray, tau: np.ndarray, target: float) -> float:
    """Comparisons at which ``tau`` first reaches ``target``, interpolated between batches (NaN: never)."""
    hit = np.flatnonzero(tau >= target)
    if not len(hit):
        return np.nan
    k = hit[0]
    if k == 0:
        return float(n[0])
    return float(n[k - 1] + (target - tau[k - 1]) * (n[k] - n[k - 1]) / (tau[k] - tau[k - 1]))


def adaptive_savings(accuracy: float, swap_consistency: float, n_systems: Sequence[int] = (10, 50),
                     spreads: Mapping[str, float] | None = None, n_seeds: int = 20, target: float = 0.9,
                     horizons: Mapping[tuple[int, str], tuple[int, int]] | None = None) -> pd.DataFrame:
    """Per seed, number of systems and strength spread: the comparisons a uniform and an
    adaptive design need before Kendall tau against the true order reaches ``target``, and the
    saving uniform / adaptive. Seeds ``0 .. n_seeds - 1``; both designs of a seed face the same
    systems and judge. A design that does not reach the target within the horizon gives NaN."""
    spreads = dict(spreads or SPREADS)
    horizons = dict(horizons or HORIZONS)
    rows = []
    for m in n_systems:
        for label, spread in spreads.items():
            size, count = horizons[(m, label)]
            n = size * np.arange(1, count + 1)
            strengths = np.linspace(-spread / 2, spread / 2, m)
            taus = {design: design_runs(strengths, size, count, accuracy, swap_consistency, design == "adaptive",
                                        range(n_seeds)) for design in ("uniform", "adaptive")}
            for seed in range(n_seeds):
                need = {design: _first_reach(n, taus[design][seed], target) for design in taus}
                rows.append({"n_systems": m, "spread": label, "spread_log": spread, "seed": seed, "target": target,
                             "uniform": need["uniform"], "adaptive": need["adaptive"],
                             "saving": need["uniform"] / need["adaptive"]})
    return pd.DataFrame(rows)


def saving_summary(per_seed: pd.DataFrame, level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per number of systems and spread: the median saving over seeds with the ``level`` range of
    the seeds' savings (what one tournament may see) and a percentile bootstrap interval of the
    median (how well the seeds pin the median down), the median comparisons of each design, and
    how many seeds reached the target in both designs (the median is over those)."""
    from helpers.stats.metrics import bootstrap_weights

    alpha = (1 - level) / 2
    rows = []
    for (m, label), group in per_seed.groupby(["n_systems", "spread"], sort=False):
        saving = group["saving"].dropna().to_numpy()
        row = {"n_systems": m, "spread": label, "spread_elo": round(float(group["spread_log"].iloc[0]) * 400 / math.log(10)),
               "seeds": len(group), "seeds_reached": len(saving), "target": group["target"].iloc[0],
               "uniform_median": float(group["uniform"].median()), "adaptive_median": float(group["adaptive"].median()),
               **dict.fromkeys(("saving_median", "saving_lo", "saving_hi", "median_ci_lo", "median_ci_hi"), np.nan)}
        if len(saving):
            draws = np.asarray(bootstrap_weights(len(saving), n_boot, seed), dtype=int)
            medians = np.array([np.median(np.repeat(saving, w)) for w in draws])
            row.update(saving_median=float(np.median(saving)),
                       saving_lo=float(np.quantile(saving, alpha)), saving_hi=float(np.quantile(saving, 1 - alpha)),
                       median_ci_lo=float(np.quantile(medians, alpha)), median_ci_hi=float(np.quantile(medians, 1 - alpha)))
        rows.append(row)
    return pd.DataFrame(rows)
