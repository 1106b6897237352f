"""Bradley–Terry ratings from pairwise comparisons: one Newton fitter, optional covariates
("style control"), bootstrap CIs, CI-aware ranks and rank agreement.

Model: ``P(a beats b) = sigmoid(theta_a - theta_b + sum_j gamma_j x_j)``, a tie half a win each
way. Without covariates this is plain Bradley–Terry (:func:`bradley_terry`); with the normalised
length difference ``(len_a - len_b) / (len_a + len_b)`` as covariate it is style control, as
Chatbot Arena does it (:func:`fit_bt`): ``theta`` is then what a system wins beyond what its
length buys, and ``gamma`` says how much the judge rewards length.

Why a hand-written fitter when statsmodels has ``Logit``: a bootstrap needs a thousand refits.
:func:`_newton` runs Newton's method on a whole batch of bootstrap replicates at once (batched
``numpy.linalg.solve``), with steps clipped to ±3 so that early iterations far from the optimum
cannot overshoot (the fixed point is unchanged). It is fed the score and information of the
batch by one of two evaluations of the same likelihood:

- plain BT depends on the data only through the win matrix ``W[i, j]`` (weighted wins of i over
  j), so every replicate is a small ``M x M`` matrix (:func:`fit_win_matrices`);
- a covariate makes nearly every comparison its own cell, so the score and information are
  accumulated over cells by sparse-dense products (:func:`_design`), no indicator matrix per
  replicate.

The two agree without covariates (tested); ``benchmarks/bench_bradley_terry.py`` checks speed
and that plain ratings equal statsmodels' to 1e-6, ``benchmarks/bench_tournament.py`` times
style control on 50 systems × 100,000 comparisons.

Scale: ``log_strength`` theta relative to the reference system; ``rating`` is the Elo-like
``anchor + 400 / ln 10 * (theta - theta_reference)`` (400 points = 10:1 odds).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import sparse, stats
from scipy.special import expit

from helpers.data import DataError

ELO_SCALE = 400 / math.log(10)
ELO_BASE = 1000.0
WINNERS = ("a", "b", "tie")
SCORE = {"a": 1.0, "b": 0.0, "tie": 0.5}
CLIP = 3.0  # largest Newton step per parameter
TOL = 1e-10  # converged when no parameter moves more than this
CELL_TOL = 1e-9  # the covariate fitter's historical tolerance: the report's style-controlled CIs depend on it in the last digits
MAX_ABS_THETA = 50.0  # a log-strength beyond this means no finite maximum (a system wins or loses all)
WIN_MATRIX_BATCH = 250  # bootstrap replicates fitted at once as win matrices
CELL_BUDGET = 4_000_000  # cells x replicates fitted at once with covariates


class ComparisonError(DataError, ValueError):
    """A comparisons table that Bradley–Terry cannot rate (bad rows, unconnected systems, no finite fit)."""


@dataclass
class BTFit:
    """Ratings (log-strength relative to ``reference``, Elo-like scale, bootstrap CIs, CI-aware
    ranks) and the covariates' coefficients with their CIs."""

    ratings: pd.DataFrame
    coefficients: pd.DataFrame
    reference: str
    n_boot: int


# --------------------------------------------------------------------------- checks


def check_comparisons(comparisons: pd.DataFrame) -> list[str]:
    """Refuse a table with missing columns, a winner outside a/b/tie, a system compared with
    itself, or fewer than two systems; return the systems, sorted."""
    missing = {"system_a", "system_b", "winner"} - set(comparisons.columns)
    if missing:
        raise ComparisonError(f"comparisons table lacks column(s) {', '.join(sorted(missing))}")
    bad = ~comparisons["winner"].isin(WINNERS)
    if bad.any():
        row = comparisons.index[bad][0]
        raise ComparisonError(f"comparisons row {row}: winner {comparisons.at[row, 'winner']!r} is not one of a, b, tie")
    same = comparisons["system_a"] == comparisons["system_b"]
    if same.any():
        row = comparisons.index[same][0]
        raise ComparisonError(f"comparisons row {row}: a system compared with itself ({comparisons.at[row, 'system_a']!r})")
    systems = sorted(set(comparisons["system_a"]) | set(comparisons["system_b"]), key=str)
    if len(systems) < 2:
        raise ComparisonError("Bradley-Terry needs comparisons between at least two systems")
    return systems


def _reference_index(systems: list[str], reference: str | None) -> tuple[str, int]:
    reference = systems[0] if reference is None else reference
    if reference not in systems:
        raise ComparisonError(f"reference system {reference!r} is not among the compared systems ({', '.join(systems)})")
    return reference, systems.index(reference)


def check_connected(i: np.ndarray, j: np.ndarray, w: np.ndarray, systems: list[str]) -> None:
    """Ratings of systems never linked by (positively weighted) comparisons are not comparable:
    refuse, naming the groups (scipy's connected components)."""
    keep = w > 0
    graph = sparse.csr_matrix((np.ones(int(keep.sum())), (i[keep], j[keep])), shape=(len(systems), len(systems)))
    n_groups, label = sparse.csgraph.connected_components(graph, directed=False)
    if n_groups > 1:
        listing = "; ".join(", ".join(s for s, g in zip(systems, label, strict=True) if g == k)
                            for k in dict.fromkeys(label))
        raise ComparisonError(f"the comparisons do not connect all systems: they split into unconnected groups "
                              f"({listing}), so ratings across groups are undefined; pass prior > 0 to regularise "
                              "or add comparisons")


# --------------------------------------------------------------------------- the fitter


def _jitter(counts: np.ndarray) -> float:
    """A ridge too small to move the optimum that keeps the information matrix invertible."""
    return 1e-12 * max(float(counts.max()), 1.0)


def _newton(terms: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], beta: np.ndarray, free: np.ndarray,
            penalty: np.ndarray, jitter: float, n_sys: int, tol: float = TOL, max_iter: int = 200) -> np.ndarray:
    """Newton's method on a batch of concave log-likelihoods at once: ``terms(beta)`` gives the
    score ``(B, K)`` and information ``(B, K, K)`` at ``beta (B, K)``; only the ``free``
    parameters move (the reference system's log-strength stays 0); ``penalty`` is a ridge per
    parameter. Replicates that do not converge, or whose log-strengths (the first ``n_sys``
    parameters) run past :data:`MAX_ABS_THETA`, come back as NaN (no finite maximum)."""
    done = np.zeros(len(beta), dtype=bool)
    ridge = np.diag(penalty[free] + jitter)
    for _ in range(max_iter):
        grad, info = terms(beta)
        step = np.linalg.solve(info[:, free][:, :, free] + ridge, (grad - penalty * beta)[:, free][..., None])[..., 0]
        step = np.clip(step, -CLIP, CLIP)
        step[done] = 0.0
        beta[:, free] += step
        done |= np.abs(step).max(axis=1) < tol
        if done.all():
            break
    bad = ~done | ~np.isfinite(beta).all(axis=1) | (np.abs(beta[:, :n_sys]).max(axis=1) > MAX_ABS_THETA)
    beta[bad] = np.nan
    return beta


def fit_win_matrices(
    wins: np.ndarray, reference: int = 0, prior: float = 0.0, tol: float = TOL, max_iter: int = 200,
) -> np.ndarray:
    """Maximum-likelihood log-strengths for a batch of win matrices ``(B, M, M)`` -> ``(B, M)``,
    with ``theta[:, reference] = 0``. ``prior`` adds that many virtual ties between every two
    systems (a gauge-free regulariser that keeps estimates finite when a system wins or loses
    everything). Replicates without a finite maximum come back as NaN."""
    wins = np.asarray(wins, dtype=float)
    if wins.ndim == 2:
        return fit_win_matrices(wins[None], reference, prior, tol, max_iter)[0]
    n_boot, m, _ = wins.shape
    wins = wins + prior / 2 * (1 - np.eye(m))
    games = wins + wins.transpose(0, 2, 1)
    total_wins = wins.sum(axis=2)
    diag = np.arange(m)

    def terms(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = 1.0 / (1.0 + np.exp(theta[:, None, :] - theta[:, :, None]))  # p[b, i, j] = P(i beats j)
        v = games * p * (1 - p)
        info = -v
        info[:, diag, diag] = v.sum(axis=2)
        return total_wins - (games * p).sum(axis=2), info

    free = np.array([k for k in range(m) if k != reference])
    return _newton(terms, np.zeros((n_boot, m)), free, np.zeros(m), _jitter(games), m, tol, max_iter)


def _design(a, b, z, n_sys: int) -> tuple[sparse.csr_matrix, sparse.csr_matrix]:
    """Sparse matrices that turn the score and information over cells into three sparse-dense products.

    ``X`` (cells × parameters): +1 for system a, -1 for b, then the covariates: ``X @ beta`` is
    the linear predictor and ``X.T @ r`` the score. ``Q`` (cells × statistics) maps the
    per-cell information weights ``v`` to the sums the information matrix is made of: ``v`` per
    ordered system pair (a, b), ``±v·z_j`` per system, and ``v·z_j·z_l``.
    """
    n, p = len(a), z.shape[1]
    rows = np.arange(n)
    x_rows = np.concatenate([rows, rows, np.repeat(rows, p)])
    x_cols = np.concatenate([a, b, np.tile(n_sys + np.arange(p), n)])
    x_vals = np.concatenate([np.ones(n), -np.ones(n), z.ravel()])
    design = sparse.csr_matrix((x_vals, (x_rows, x_cols)), shape=(n, n_sys + p))
    m2, q_rows, q_cols, q_vals = n_sys * n_sys, [rows], [a * n_sys + b], [np.ones(n)]
    for j in range(p):
        q_rows += [rows, rows]
        q_cols += [m2 + j * n_sys + a, m2 + j * n_sys + b]
        q_vals += [z[:, j], -z[:, j]]
        for m in range(p):
            q_rows.append(rows)
            q_cols.append(np.full(n, m2 + p * n_sys + j * p + m))
            q_vals.append(z[:, j] * z[:, m])
    sums = sparse.csr_matrix(
        (np.concatenate(q_vals), (np.concatenate(q_rows), np.concatenate(q_cols))), shape=(n, m2 + p * n_sys + p * p)
    )
    return design, sums


def fit_cells(a, b, y, z, weights, n_sys: int, ref: int, l2: float, start: np.ndarray | None = None) -> np.ndarray:
    """Logistic MLE of ``y ~ theta[a] - theta[b] + z·gamma`` over cells, for a batch of weight
    vectors at once (rows of ``weights``: the data, or bootstrap replicates) -> ``(B, M + p)``.
    Cells run down the rows and replicates across the columns. A ridge ``l2`` on ``gamma`` keeps
    it finite when a covariate separates the outcomes (a judge that only follows length does
    exactly that). ``start`` (e.g. the point estimate for bootstrap replicates) saves most
    iterations."""
    n_rep, p = weights.shape[0], z.shape[1]
    k = n_sys + p
    design, sums_of = _design(a, b, z, n_sys)
    w = np.ascontiguousarray(weights.T)  # cells x replicates
    m2, diag = n_sys * n_sys, np.arange(n_sys)

    def terms(beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mu = expit(design @ np.ascontiguousarray(beta.T))
        grad = (design.T @ (w * (y[:, None] - mu))).T
        sums = (sums_of.T @ (w * mu * (1 - mu))).T  # replicates x statistics
        vab = sums[:, :m2].reshape(n_rep, n_sys, n_sys)
        info = np.zeros((n_rep, k, k))
        info[:, :n_sys, :n_sys] = -(vab + vab.transpose(0, 2, 1))
        info[:, diag, diag] = vab.sum(axis=2) + vab.sum(axis=1)
        if p:
            cross = sums[:, m2:m2 + p * n_sys].reshape(n_rep, p, n_sys)
            info[:, :n_sys, n_sys:] = cross.transpose(0, 2, 1)
            info[:, n_sys:, :n_sys] = cross
            info[:, n_sys:, n_sys:] = sums[:, m2 + p * n_sys:].reshape(n_rep, p, p)
        return grad, info

    free = np.r_[np.arange(ref), np.arange(ref + 1, k)]
    penalty = np.r_[np.zeros(n_sys), np.full(p, l2)]
    beta = np.zeros((n_rep, k)) if start is None else np.tile(start, (n_rep, 1))
    return _newton(terms, beta, free, penalty, _jitter(weights), n_sys, tol=CELL_TOL)


# --------------------------------------------------------------------------- data -> win matrices and cells


def encode_comparisons(comparisons: pd.DataFrame, index: dict[str, int], weights) -> tuple[np.ndarray, ...]:
    """System indices of a and b, the outcome code (0 a, 1 b, 2 tie) and the weight of each comparison."""
    unknown = (set(comparisons["system_a"]) | set(comparisons["system_b"])) - set(index)
    if unknown:
        raise ComparisonError(f"systems not in the systems list: {', '.join(sorted(map(str, unknown)))}")
    i = comparisons["system_a"].map(index).to_numpy()
    j = comparisons["system_b"].map(index).to_numpy()
    outcome = comparisons["winner"].map({w: k for k, w in enumerate(WINNERS)}).to_numpy()
    w = np.ones(len(i)) if weights is None else np.asarray(weights, dtype=float)
    if len(w) != len(i) or (w < 0).any():
        raise ComparisonError("weights must be one non-negative number per comparison")
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


def _cells(*columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Identical rows collapsed into cells: the distinct rows (sorted) and how often each occurs,
    so plain BT on 100,000 comparisons of 50 systems fits a few thousand cells."""
    unique, counts = np.unique(np.column_stack(columns), axis=0, return_counts=True)
    return unique, counts.astype(float)


def _replicates(counts: np.ndarray, n_boot: int, seed: int, batch: int) -> Iterable[np.ndarray]:
    """Bootstrap replicates as multinomial counts over cells (the same distribution as drawing
    comparisons one by one), ``batch`` replicates at a time."""
    rng = np.random.default_rng(seed)
    n = int(counts.sum())
    for start in range(0, n_boot, batch):
        yield rng.multinomial(n, counts / n, size=min(batch, n_boot - start)).astype(float)


def _percentiles(boot: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile CI per parameter over the replicates that have a finite fit (a warning says
    how many did not)."""
    failed = np.isnan(boot).any(axis=1)
    if failed.any():
        warnings.warn(f"{failed.mean():.1%} of bootstrap replicates had no finite fit and were dropped", stacklevel=3)
    if not (~failed).any():
        return np.full(boot.shape[1], np.nan), np.full(boot.shape[1], np.nan)
    alpha = (1 - level) / 2
    lo, hi = np.nanquantile(boot, [alpha, 1 - alpha], axis=0)
    return lo, hi


def _with_ratings(table: pd.DataFrame, anchor: float) -> pd.DataFrame:
    for suffix in ("", "_lo", "_hi"):
        table[f"rating{suffix}"] = anchor + ELO_SCALE * table[f"log_strength{suffix}"]
    return table


# --------------------------------------------------------------------------- plain and style-controlled BT


def bradley_terry(
    comparisons: pd.DataFrame,
    weights: Sequence[float] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    reference: str | None = None,
    level: float = 0.95,
    prior: float = 0.0,
    anchor: float = ELO_BASE,
) -> pd.DataFrame:
    """Plain Bradley-Terry ratings with percentile bootstrap CIs (comparisons resampled).

    ``comparisons``: ``system_a, system_b, winner`` in {a, b, tie}; ties count half a win each.
    ``weights``: optional per-comparison weights. ``reference``: the system whose log-strength
    is 0 and rating is ``anchor`` (default: the alphabetically first system). ``prior``: virtual
    ties per pair of systems. Returns one row per system, best first: ``system, comparisons,
    wins, log_strength(_lo/_hi), rating(_lo/_hi)``.
    """
    systems = check_comparisons(comparisons)
    reference, ref = _reference_index(systems, reference)
    i, j, outcome, w = encode_comparisons(comparisons, {s: k for k, s in enumerate(systems)}, weights)
    m = len(systems)
    if prior == 0:
        check_connected(i, j, w, systems)
    point = aggregate_wins(i, j, outcome, w, np.ones((1, len(i))), m)
    theta = fit_win_matrices(point, ref, prior)[0]
    if np.isnan(theta).any():
        raise ComparisonError("no finite Bradley-Terry fit: some system wins or loses all its comparisons; pass prior > 0")
    out = pd.DataFrame({"system": systems, "comparisons": point[0].sum(axis=0) + point[0].sum(axis=1),
                        "wins": point[0].sum(axis=1), "log_strength": theta})
    if n_boot > 0:
        cells, counts = _cells(i, j, outcome, w)
        ci, cj, co = (cells[:, k].astype(int) for k in range(3))
        boot = np.concatenate([fit_win_matrices(aggregate_wins(ci, cj, co, cells[:, 3], draw, m), ref, prior)
                               for draw in _replicates(counts, n_boot, seed, WIN_MATRIX_BATCH)])
        out["log_strength_lo"], out["log_strength_hi"] = _percentiles(boot, level)
    else:
        out["log_strength_lo"] = out["log_strength_hi"] = np.nan
    out = _with_ratings(out, anchor)
    out.attrs.update(reference=reference, anchor=anchor, n_boot=n_boot, level=level)
    return out.sort_values("log_strength", ascending=False).reset_index(drop=True)


def _virtual_ties(n_sys: int, p: int, prior: float) -> tuple[np.ndarray, ...]:
    """``prior`` virtual ties between every two systems at covariates 0: the same gauge-free
    regulariser as :func:`fit_win_matrices`'s ``prior``, so with no covariates both agree."""
    pairs = np.array(list(combinations(range(n_sys), 2)), dtype=int).reshape(-1, 2)
    n = len(pairs) if prior > 0 else 0
    return pairs[:n, 0], pairs[:n, 1], np.full(n, 0.5), np.zeros((n, p)), np.full(n, float(prior))


def fit_bt(
    comparisons: pd.DataFrame,
    covariates: Sequence[str] = (),
    *,
    n_boot: int = 1000,
    seed: int = 0,
    reference: str | None = None,
    level: float = 0.95,
    prior: float = 0.0,
    l2: float = 1.0,
    anchor: float = ELO_BASE,
) -> BTFit:
    """Bradley–Terry over cells of comparisons with optional covariates (columns of ``comparisons``).

    With ``covariates=("length_diff",)`` this is style control: ``theta`` is what a system wins
    beyond what its descriptions' length buys. Rating columns follow :func:`bradley_terry`, plus
    the CI-aware ``rank``; ``coefficients`` holds each covariate's coefficient and CI. CIs are
    percentile bootstrap over comparisons, drawn as multinomial counts of identical rows.
    ``prior``: virtual ties per pair of systems; ``l2``: ridge on the covariate coefficients only.
    """
    systems = check_comparisons(comparisons)
    reference, ref = _reference_index(systems, reference)
    pos = {s: k for k, s in enumerate(systems)}
    n_sys = len(systems)
    a = comparisons["system_a"].map(pos).to_numpy()
    b = comparisons["system_b"].map(pos).to_numpy()
    if prior <= 0:
        check_connected(a, b, np.ones(len(a)), systems)
    y = comparisons["winner"].map(SCORE).to_numpy(float)
    z = comparisons[list(covariates)].to_numpy(float) if covariates else np.zeros((len(comparisons), 0))
    cells, counts = _cells(a, b, y, z)
    va, vb, vy, vz, vw = _virtual_ties(n_sys, len(covariates), prior)
    xa, xb = np.r_[cells[:, 0].astype(int), va], np.r_[cells[:, 1].astype(int), vb]
    xy, xz = np.r_[cells[:, 2], vy], np.vstack([cells[:, 3:], vz])

    def fit(weights: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
        full = np.hstack([weights, np.broadcast_to(vw, (len(weights), len(vw)))])
        return fit_cells(xa, xb, xy, xz, full, n_sys, ref, l2, start)

    point = fit(counts[None, :])[0]
    if np.isnan(point).any():
        raise ComparisonError("no finite Bradley-Terry fit: some system wins or loses all its comparisons; pass prior > 0")
    batch = max(1, CELL_BUDGET // max(len(xa), 1))
    boot = np.vstack([np.empty((0, len(point)))] + [fit(draw, point) for draw in _replicates(counts, n_boot, seed, batch)])
    lo, hi = _percentiles(boot, level)
    wins = np.bincount(a, y, n_sys) + np.bincount(b, 1 - y, n_sys)  # a tie is half a win each
    games = np.bincount(a, minlength=n_sys) + np.bincount(b, minlength=n_sys)
    ratings = _with_ratings(pd.DataFrame({
        "system": systems, "comparisons": games, "wins": wins,
        "log_strength": point[:n_sys], "log_strength_lo": lo[:n_sys], "log_strength_hi": hi[:n_sys],
    }), anchor)
    ratings["rank"] = ci_ranks(ratings["log_strength_lo"], ratings["log_strength_hi"])
    ratings = ratings.sort_values(["log_strength", "system"], ascending=[False, True]).reset_index(drop=True)
    coefficients = pd.DataFrame({
        "covariate": list(covariates), "coef": point[n_sys:], "coef_lo": lo[n_sys:], "coef_hi": hi[n_sys:],
    })
    return BTFit(ratings, coefficients, reference, n_boot)


# --------------------------------------------------------------------------- leaderboards and rank agreement


def ci_ranks(lo: Sequence[float], hi: Sequence[float]) -> np.ndarray:
    """Rank = 1 + the number of systems whose lower bound is above this system's upper bound."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    return 1 + (lo[None, :] > hi[:, None]).sum(axis=1)


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


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Kendall's tau-b and its p-value (scipy)."""
    result = stats.kendalltau(x, y)
    return float(result.statistic), float(result.pvalue)


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
