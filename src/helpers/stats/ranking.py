"""Bradley-Terry rankings of systems from pairwise comparisons, with bootstrap CIs, and the
ranking-fidelity simulation (how many judged comparisons rank M systems correctly).

Why a hand-written fitter when statsmodels has ``Logit``: a bootstrap needs a thousand refits,
and Bradley-Terry only depends on the aggregated win matrix ``W[i, j]`` (weighted wins of i over
j; a tie is half a win each way). Every replicate is therefore a small ``M x M`` matrix, and
Newton's method on all replicates at once (batched ``numpy.linalg.solve``) replaces a thousand
``N``-row logistic regressions. ``benchmarks/bench_bradley_terry.py`` checks both speed and that
the ratings equal statsmodels' to 1e-6; the tests check the equality too.

Scale: ``log_strength`` theta with ``P(i beats j) = 1 / (1 + exp(theta_j - theta_i))``; ``rating``
is the Elo-like ``anchor + 400 / ln 10 * (theta - theta_reference)`` (400 points = 10:1 odds).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import sparse, stats

from helpers.stats.simulate import content_accuracy, random_matchups

ELO_SCALE = 400 / math.log(10)
WINNERS = ("a", "b", "tie")


# --------------------------------------------------------------------------- fitting


def _check_comparisons(comparisons: pd.DataFrame) -> None:
    missing = {"system_a", "system_b", "winner"} - set(comparisons.columns)
    if missing:
        raise ValueError(f"comparisons table lacks column(s) {', '.join(sorted(missing))}")
    bad = ~comparisons["winner"].isin(WINNERS)
    if bad.any():
        row = comparisons.index[bad][0]
        raise ValueError(f"comparisons row {row}: winner {comparisons.at[row, 'winner']!r} is not one of a, b, tie")
    same = comparisons["system_a"] == comparisons["system_b"]
    if same.any():
        row = comparisons.index[same][0]
        raise ValueError(f"comparisons row {row}: a system compared with itself ({comparisons.at[row, 'system_a']!r})")


def clipped_newton_step(info: np.ndarray, grad: np.ndarray, done: np.ndarray, clip: float = 3.0) -> np.ndarray:
    """A batch of Newton steps ``solve(info, grad)`` clipped to ``±clip`` and zero where a
    replicate has converged. Clipping keeps early iterations far from the optimum from
    overshooting and leaves the fixed point unchanged; plain and style-controlled BT share it
    so both keep the same safeguards."""
    step = np.linalg.solve(info, grad[..., None])[..., 0]
    step = np.clip(step, -clip, clip)
    step[done] = 0.0
    return step


def fit_win_matrices(
    wins: np.ndarray, reference: int = 0, prior: float = 0.0, tol: float = 1e-10, max_iter: int = 200,
) -> np.ndarray:
    """Maximum-likelihood log-strengths for a batch of win matrices ``(B, M, M)`` -> ``(B, M)``,
    with ``theta[:, reference] = 0``. ``prior`` adds that many virtual ties between every two
    systems (a gauge-free regulariser that keeps estimates finite when a system wins or loses
    everything). Replicates that do not converge (no finite maximum) come back as NaN.

    Newton's method on the concave log-likelihood; steps are clipped to +-3 so that early
    iterations far from the optimum cannot overshoot, which leaves the fixed point unchanged.
    """
    wins = np.asarray(wins, dtype=float)
    if wins.ndim == 2:
        return fit_win_matrices(wins[None], reference, prior, tol, max_iter)[0]
    n_boot, m, _ = wins.shape
    wins = wins + prior / 2 * (1 - np.eye(m))
    games = wins + wins.transpose(0, 2, 1)
    free = np.array([k for k in range(m) if k != reference])
    theta = np.zeros((n_boot, m))
    done = np.zeros(n_boot, dtype=bool)
    total_wins = wins.sum(axis=2)
    jitter = 1e-12 * max(float(games.max()), 1.0) * np.eye(m - 1)
    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(theta[:, None, :] - theta[:, :, None]))  # p[b, i, j] = P(i beats j)
        grad = total_wins - (games * p).sum(axis=2)
        v = games * p * (1 - p)
        info = -v
        info[:, np.arange(m), np.arange(m)] = v.sum(axis=2)
        step = clipped_newton_step(info[:, free][:, :, free] + jitter, grad[:, free], done)
        theta[:, free] += step
        done |= np.abs(step).max(axis=1) < tol
        if done.all():
            break
    bad = ~done | ~np.isfinite(theta).all(axis=1) | (np.abs(theta).max(axis=1) > 50)
    theta[bad] = np.nan
    return theta


def win_matrix(
    comparisons: pd.DataFrame, systems: Sequence[str] | None = None, weights: Sequence[float] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Weighted win matrix ``W[i, j]`` (wins of i over j; a tie half each way) and the systems."""
    _check_comparisons(comparisons)
    systems = list(systems) if systems is not None else sorted(set(comparisons["system_a"]) | set(comparisons["system_b"]))
    index = {s: k for k, s in enumerate(systems)}
    i, j, outcome, w = encode_comparisons(comparisons, index, weights)
    return aggregate_wins(i, j, outcome, w, np.ones((1, len(i))), len(systems))[0], systems


def encode_comparisons(comparisons: pd.DataFrame, index: dict[str, int], weights) -> tuple[np.ndarray, ...]:
    unknown = (set(comparisons["system_a"]) | set(comparisons["system_b"])) - set(index)
    if unknown:
        raise ValueError(f"systems not in the systems list: {', '.join(sorted(map(str, unknown)))}")
    i = comparisons["system_a"].map(index).to_numpy()
    j = comparisons["system_b"].map(index).to_numpy()
    outcome = comparisons["winner"].map({w: k for k, w in enumerate(WINNERS)}).to_numpy()
    w = np.ones(len(i)) if weights is None else np.asarray(weights, dtype=float)
    if len(w) != len(i) or (w < 0).any():
        raise ValueError("weights must be one non-negative number per comparison")
    return i, j, outcome, w


def aggregate_wins(i, j, outcome, w, counts: np.ndarray, m: int) -> np.ndarray:
    """Win matrices ``(B, M, M)`` from per-comparison multiplicities ``counts (B, N)``."""
    a_share = np.select([outcome == 0, outcome == 1], [1.0, 0.0], 0.5) * w
    rows = np.arange(len(i))
    to_flat = sparse.csr_matrix(
        (np.concatenate([a_share, w - a_share]), (np.concatenate([rows, rows]), np.concatenate([i * m + j, j * m + i]))),
        shape=(len(i), m * m),
    )
    return np.asarray((to_flat.T @ counts.T).T).reshape(-1, m, m)


def _connected(wins: np.ndarray) -> bool:
    graph = sparse.csr_matrix((wins + wins.T) > 0)
    return sparse.csgraph.connected_components(graph, directed=False)[0] == 1


def bradley_terry(
    comparisons: pd.DataFrame,
    weights: Sequence[float] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    reference: str | None = None,
    level: float = 0.95,
    prior: float = 0.0,
    anchor: float = 1000.0,
) -> pd.DataFrame:
    """Bradley-Terry ratings with percentile bootstrap CIs (comparisons resampled).

    ``comparisons``: ``system_a, system_b, winner`` in {a, b, tie}; ties count half a win each.
    ``weights``: optional per-comparison weights. ``reference``: the system whose log-strength
    is 0 and rating is ``anchor`` (default: the alphabetically first system). Returns one row
    per system, best first: ``system, comparisons, wins, log_strength(_lo/_hi), rating(_lo/_hi)``.
    """
    _check_comparisons(comparisons)
    systems = sorted(set(comparisons["system_a"]) | set(comparisons["system_b"]), key=str)
    if len(systems) < 2:
        raise ValueError("Bradley-Terry needs comparisons between at least two systems")
    reference = systems[0] if reference is None else reference
    if reference not in systems:
        raise ValueError(f"reference system {reference!r} is not among the compared systems")
    ref = systems.index(reference)
    index = {s: k for k, s in enumerate(systems)}
    i, j, outcome, w = encode_comparisons(comparisons, index, weights)
    m = len(systems)
    point = aggregate_wins(i, j, outcome, w, np.ones((1, len(i))), m)
    if prior == 0 and not _connected(point[0]):
        raise ValueError("the comparisons do not connect all systems, so their strengths are not comparable; "
                         "pass prior > 0 to regularise or add comparisons")
    theta = fit_win_matrices(point, ref, prior)[0]
    if np.isnan(theta).any():
        raise ValueError("no finite Bradley-Terry fit: some system wins or loses all its comparisons; pass prior > 0")
    out = pd.DataFrame({"system": systems, "comparisons": point[0].sum(axis=0) + point[0].sum(axis=1),
                        "wins": point[0].sum(axis=1), "log_strength": theta})
    alpha = (1 - level) / 2
    if n_boot > 0:
        boot = bootstrap_strengths(i, j, outcome, w, m, ref, n_boot, seed, prior)
        failed = np.isnan(boot).any(axis=1).mean()
        if failed > 0:
            warnings.warn(f"{failed:.1%} of bootstrap replicates had no finite fit and were dropped", stacklevel=2)
        out["log_strength_lo"], out["log_strength_hi"] = np.nanquantile(boot, [alpha, 1 - alpha], axis=0)
    else:
        out["log_strength_lo"] = out["log_strength_hi"] = np.nan
    for suffix in ("", "_lo", "_hi"):
        out[f"rating{suffix}"] = anchor + ELO_SCALE * out[f"log_strength{suffix}"]
    out.attrs.update(reference=reference, anchor=anchor, n_boot=n_boot, level=level)
    return out.sort_values("log_strength", ascending=False).reset_index(drop=True)


def bootstrap_strengths(i, j, outcome, w, m: int, ref: int, n_boot: int, seed: int, prior: float = 0.0,
                        chunk: int = 250) -> np.ndarray:
    """``(n_boot, M)`` log-strengths, each replicate refitted on comparisons drawn with
    replacement. Draws are multinomial counts over distinct (i, j, outcome, weight) cells, which
    is the same distribution as drawing comparisons one by one, at a fraction of the cost."""
    cells, inverse = np.unique(np.stack([i, j, outcome, w]), axis=1, return_inverse=True)
    share = np.bincount(inverse.ravel(), minlength=cells.shape[1]) / len(i)
    ci, cj, co = (cells[k].astype(int) for k in range(3))
    rng = np.random.default_rng(seed)
    out = []
    for start in range(0, n_boot, chunk):
        counts = rng.multinomial(len(i), share, size=min(chunk, n_boot - start)).astype(float)
        out.append(fit_win_matrices(aggregate_wins(ci, cj, co, cells[3], counts, m), ref, prior))
    return np.concatenate(out)


def statsmodels_strengths(comparisons: pd.DataFrame, systems: Sequence[str], reference: str) -> np.ndarray:
    """The same model as a statsmodels ``Logit`` (y = 1 if a wins, 0.5 for a tie; design +1 for
    a, -1 for b, reference column dropped): the independent check for :func:`bradley_terry`."""
    import statsmodels.api as sm

    index = {s: k for k, s in enumerate(systems)}
    n, m = len(comparisons), len(systems)
    design = np.zeros((n, m))
    design[np.arange(n), comparisons["system_a"].map(index).to_numpy()] += 1
    design[np.arange(n), comparisons["system_b"].map(index).to_numpy()] -= 1
    keep = [k for k in range(m) if k != index[reference]]
    y = comparisons["winner"].map({"a": 1.0, "b": 0.0, "tie": 0.5}).to_numpy()
    fit = sm.Logit(y, design[:, keep]).fit(disp=0, method="newton", tol=1e-12, maxiter=100)
    theta = np.zeros(m)
    theta[keep] = fit.params
    return theta


def leaderboard(ratings: pd.DataFrame, digits: int = 0) -> pd.DataFrame:
    """Ranked, human-readable view of :func:`bradley_terry` output."""
    fmt = f"{{:.{digits}f}}"
    board = pd.DataFrame({
        "rank": np.arange(1, len(ratings) + 1),
        "system": ratings["system"],
        "rating": ratings["rating"].map(fmt.format),
        "95% CI": [f"[{fmt.format(lo)}, {fmt.format(hi)}]" if np.isfinite(lo) else "-"
                   for lo, hi in zip(ratings["rating_lo"], ratings["rating_hi"], strict=True)],
        "comparisons": ratings["comparisons"].round(1),
        "win rate %": (100 * ratings["wins"] / ratings["comparisons"]).round(1),
    })
    return board.set_index("rank")


# --------------------------------------------------------------------------- rank agreement


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Kendall's tau-b and its p-value (scipy)."""
    result = stats.kendalltau(x, y)
    return float(result.statistic), float(result.pvalue)


def kendall_tau_rows(estimates: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Kendall's tau between each row of ``estimates (R, M)`` and ``truth (M,)`` (no ties in
    truth), vectorised: (concordant - discordant) / pairs; tied estimates count zero."""
    upper = np.triu_indices(len(truth), k=1)
    true_sign = np.sign(truth[upper[1]] - truth[upper[0]])
    est_sign = np.sign(estimates[:, upper[1]] - estimates[:, upper[0]])
    return (est_sign * true_sign).sum(axis=1) / len(true_sign)


# --------------------------------------------------------------------------- fidelity simulation


def judged_win_matrices(
    strengths: np.ndarray, n_comparisons: int, accuracy: float, swap_consistency: float = 1.0,
    both_orders: bool = False, n_reps: int = 100, rng: np.random.Generator | None = None,
) -> np.ndarray:
    """``(n_reps, M, M)`` win matrices from a simulated judge (see :mod:`helpers.stats.simulate`).

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


# --------------------------------------------------------------------------- labels -> comparisons


def label_comparisons(pairs: pd.DataFrame, labels: pd.Series | None = None) -> pd.DataFrame:
    """Each pair as a comparison between the systems that wrote its two descriptions
    (``model1`` wrote a1, ``model2`` wrote a2): a1 -> a wins, a2 -> b wins, same -> tie.
    ``labels`` (indexed by name, normal frame) replaces the human ``preference``."""
    if not {"model1", "model2"} <= set(pairs.columns):
        raise ValueError("pairs have no model1/model2 columns: the with-modelnames file is needed")
    verdict = pairs["preference"] if labels is None else pairs["name"].map(labels)
    keep = verdict.isin(["a1", "a2", "same"]).to_numpy()
    return pd.DataFrame({
        "name": pairs["name"].to_numpy()[keep],
        "system_a": pairs["model1"].to_numpy()[keep], "system_b": pairs["model2"].to_numpy()[keep],
        "winner": verdict[keep].map({"a1": "a", "a2": "b", "same": "tie"}).to_numpy(),
    })
