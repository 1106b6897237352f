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
from threadpoolctl import threadpool_limits

from helpers.data import DataError
from helpers.stats.metrics import bootstrap_counts

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
CHORD_ITER = 60
REFRESH = (1, 2)  # chord iterations that refresh the replicates' information
OWN_INFO_MAX = 100  # parameters up to which each bootstrap replicate's chord uses its own information
MIN_RANK_BOOT = 100  # fewer bootstrap replicates: no intervals, no ranks (ranks_withheld)
RANK_CHUNK = 16  # systems whose pairwise differences are counted at once (B x 16 x M booleans)
DIFF_TOL = 1e-8  # a log-strength difference this small is a tie between replicates' fits, not a win


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
    systems = sorted(set(pd.unique(comparisons["system_a"])) | set(pd.unique(comparisons["system_b"])), key=str)
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


def check_settings(n_boot: int = 0, prior: float = 0.0, level: float = 0.95) -> None:
    """Refuse settings that would give a silently wrong leaderboard: a negative prior (virtual
    ties with negative weight reward the loser: the order comes out inverted), a negative or
    fractional bootstrap count (NaN intervals), a confidence level outside (0, 1)."""
    if not (isinstance(prior, (int, float, np.number)) and math.isfinite(prior) and prior >= 0):
        raise ComparisonError(f"prior must be a finite number >= 0 (virtual ties per pair of systems), got {prior!r}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 0:
        raise ComparisonError(f"n_boot must be a whole number >= 0 (bootstrap replicates; 0: no intervals), got {n_boot!r}")
    if not 0 < level < 1:
        raise ComparisonError(f"level must be between 0 and 1 (e.g. 0.95), got {level!r}")


Terms = Callable[[np.ndarray, bool, np.ndarray], tuple[np.ndarray, np.ndarray | None]]
"""``terms(beta, with_info, rows)``: score ``(B, K)`` and, when asked, information ``(B, K, K)``
of the replicates ``rows`` (indices into the batch) at ``beta (B, K)``."""


def _finish(beta: np.ndarray, done: np.ndarray, n_sys: int, bounded: bool) -> np.ndarray:
    """Replicates that did not converge (or, without a prior, whose log-strengths ran past
    :data:`MAX_ABS_THETA`: no finite maximum) come back as NaN. With a prior (``bounded``) the
    maximum is finite by construction, however large, so no cap applies: a judge that orders
    seven systems perfectly over thousands of comparisons spreads them over more than 50."""
    bad = ~done | ~np.isfinite(beta).all(axis=1)
    if not bounded:
        bad |= np.abs(beta[:, :n_sys]).max(axis=1) > MAX_ABS_THETA
    beta[bad] = np.nan
    return beta


def _newton(terms: Terms, beta: np.ndarray, free: np.ndarray, penalty: np.ndarray, jitter: float, n_sys: int,
            tol: float = TOL, max_iter: int = 200, bounded: bool = False, rows: np.ndarray | None = None) -> np.ndarray:
    """Newton's method on a batch of concave log-likelihoods at once (replicates ``rows`` of
    ``terms``, all by default, starting at ``beta``); only the ``free`` parameters move (the
    reference system's log-strength stays 0); ``penalty`` is a ridge per parameter.
    Non-converged or unbounded replicates come back as NaN (:func:`_finish`)."""
    rows = np.arange(len(beta)) if rows is None else rows
    with threadpool_limits(limits=1, user_api="blas"):  # K x K systems: threads only contend
        return _newton_steps(terms, beta, free, penalty, jitter, n_sys, tol, max_iter, bounded, rows)


def _newton_steps(terms: Terms, beta: np.ndarray, free: np.ndarray, penalty: np.ndarray, jitter: float, n_sys: int,
                  tol: float, max_iter: int, bounded: bool, rows: np.ndarray) -> np.ndarray:
    done = np.zeros(len(beta), dtype=bool)
    ridge = np.diag(penalty[free] + jitter)
    for _ in range(max_iter):
        grad, info = terms(beta, True, rows)
        step = np.linalg.solve(info[:, free][:, :, free] + ridge, (grad - penalty * beta)[:, free][..., None])[..., 0]
        step = np.clip(step, -CLIP, CLIP)
        step[done] = 0.0
        beta[:, free] += step
        done |= np.abs(step).max(axis=1) < tol
        if done.all():
            break
    return _finish(beta, done, n_sys, bounded)


def _chord_newton(terms: Terms, point: np.ndarray, point_info: np.ndarray, n_rep: int, free: np.ndarray,
                  penalty: np.ndarray, jitter: float, n_sys: int, tol: float = TOL, bounded: bool = False) -> np.ndarray:
    """Bootstrap replicates fitted from the point estimate by the chord method: each iteration
    costs one score evaluation and a matrix-vector product with an inverse computed once,
    instead of a ``K x K`` factorisation per replicate and iteration. Up to
    :data:`OWN_INFO_MAX` parameters each replicate uses the inverse of its own information at
    the point, refreshed after the first two (largest) steps (:data:`REFRESH`): the chord then
    converges like Newton (style control: 4 score evaluations instead of 8-9).
    With more parameters (plain BT on 200 systems) inverting a thousand ``K x K`` matrices costs
    more than the iterations it saves, and every replicate uses the point's information
    ``point_info`` (also the fallback when a replicate's matrix cannot be inverted). The fixed
    point is the same maximum as :func:`_newton`'s (same score, same tolerance); replicates the
    chord does not settle in :data:`CHORD_ITER` steps finish with full Newton steps."""
    beta = np.tile(point, (n_rep, 1))
    done = np.zeros(n_rep, dtype=bool)
    ridge = np.diag(penalty[free] + jitter)
    fallback = point_info[np.ix_(free, free)] + ridge
    own = len(free) <= OWN_INFO_MAX  # beyond, B inversions of K x K cost more than the iterations they save
    with threadpool_limits(limits=1, user_api="blas"):  # K x K systems: threads only contend
        grad, info = terms(beta, own, np.arange(n_rep))
        inverse = _inverses(info[:, free][:, :, free] + ridge if own else fallback[None], fallback)
        for iteration in range(CHORD_ITER if inverse is not None else 0):
            todo = np.flatnonzero(~done)
            if iteration and own and iteration in REFRESH and len(todo) == n_rep:
                grad, info = terms(beta, True, todo)  # the first steps are the largest: a fresh inverse after them
                fresh = _inverses(info[:, free][:, :, free] + ridge, fallback)
                inverse = inverse if fresh is None else fresh
            elif iteration:
                grad, _ = terms(beta[todo], False, todo)
            mine = inverse if len(todo) == n_rep or len(inverse) == 1 else inverse[todo]
            step = np.clip(np.matmul(mine, (grad - penalty * beta[todo])[:, free, None])[..., 0], -CLIP, CLIP)
            beta[np.ix_(todo, free)] += step
            done[todo] = ~(np.abs(step).max(axis=1) >= tol)  # a NaN step is "done" here and NaN in the result
            if done.all():
                break
    rest = np.flatnonzero(~done | ~np.isfinite(beta).all(axis=1))
    if len(rest):
        beta[rest] = _newton(terms, np.tile(point, (len(rest), 1)), free, penalty, jitter, n_sys, tol,
                             bounded=bounded, rows=rest)
    return _finish(beta, np.isfinite(beta).all(axis=1), n_sys, bounded)


def _inverses(infos: np.ndarray, fallback: np.ndarray) -> np.ndarray | None:
    """Inverses of the replicates' information matrices ``(B, K, K)``; if one is singular,
    the inverse of ``fallback`` (the point's) for all; ``None`` if that too is singular (the
    replicates then go to full Newton steps)."""
    try:
        return np.linalg.inv(infos)
    except np.linalg.LinAlgError:
        pass
    try:
        return np.linalg.inv(fallback)[None]
    except np.linalg.LinAlgError:
        return None


def _win_terms(wins: np.ndarray, prior: float) -> tuple[Terms, np.ndarray]:
    """The score and information of plain BT on win matrices ``(B, M, M)``, and the games.

    Evaluated over the system pairs that met (upper triangle, ``P <= M(M-1)/2``): ``P(j beats
    i) = 1 - P(i beats j)``, so one sigmoid per pair serves both systems, and the score is two
    sparse scatters of the pairs' expected wins onto their systems."""
    m = wins.shape[1]
    wins = wins + prior / 2 * (1 - np.eye(m))
    games = wins + wins.transpose(0, 2, 1)
    total_wins = wins.sum(axis=2)
    iu, ju = np.triu_indices(m, k=1)
    met = games[:, iu, ju].any(axis=0)
    iu, ju = iu[met], ju[met]
    g = np.ascontiguousarray(games[:, iu, ju].T)  # (P, B): pairs down, replicates across
    every = np.arange(g.shape[1])
    n_pairs = len(iu)
    first = sparse.csr_matrix((np.ones(n_pairs), (iu, np.arange(n_pairs))), shape=(m, n_pairs))
    second = sparse.csr_matrix((np.ones(n_pairs), (ju, np.arange(n_pairs))), shape=(m, n_pairs))
    diff = (first - second).T.tocsr()  # (P, M): diff @ theta = theta_i - theta_j per pair
    scatter = (first - second).tocsr()  # (M, P): each pair's expected wins onto i, minus onto j
    # score = wins - E[wins]; E[wins of i] = sum over its pairs of g*p (as i) + g*(1-p) (as j), so
    # the constant part (games where i is j) is taken out once: one sparse product per evaluation
    constant = total_wins - (second @ g).T
    diag = np.arange(m)

    def terms(theta: np.ndarray, with_info: bool, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        whole = len(rows) == len(every) and (rows == every).all()
        gr = g if whole else g[:, rows]
        p = expit(diff @ np.ascontiguousarray(theta.T))  # P(i beats j) per pair and replicate
        if not with_info:  # the bootstrap's chord steps: in place, no second temporary
            np.multiply(gr, p, out=p)
            return (constant if whole else constant[rows]) - (scatter @ p).T, None
        expected = gr * p
        grad = (constant if whole else constant[rows]) - (scatter @ expected).T
        v = (expected * (1 - p)).T
        info = np.zeros((len(rows), m, m))
        info[:, iu, ju] = -v
        info[:, ju, iu] = -v
        info[:, diag, diag] = -info.sum(axis=2)
        return grad, info

    return terms, games


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
    terms, games = _win_terms(wins, prior)
    free = np.array([k for k in range(m) if k != reference])
    return _newton(terms, np.zeros((n_boot, m)), free, np.zeros(m), _jitter(games), m, tol, max_iter, prior > 0)


def win_information(wins: np.ndarray, theta: np.ndarray, prior: float = 0.0) -> np.ndarray:
    """The Fisher information ``(M, M)`` of plain BT on one win matrix at ``theta``: factored
    once for the bootstrap's chord steps, inverted for the adaptive design's standard errors."""
    terms, _ = _win_terms(np.asarray(wins, float)[None], prior)
    return terms(np.asarray(theta, float)[None], True, np.array([0]))[1][0]


def bootstrap_win_matrices(wins: np.ndarray, point: np.ndarray, point_wins: np.ndarray, reference: int = 0,
                           prior: float = 0.0) -> np.ndarray:
    """:func:`fit_win_matrices` for bootstrap replicates ``(B, M, M)`` of the data ``point_wins``
    whose fit is ``point`` (the same maxima, found by :func:`_chord_newton`): the fast path that
    fits 1,000 replicates of 200 systems in seconds."""
    wins = np.asarray(wins, dtype=float)
    m = wins.shape[1]
    terms, games = _win_terms(wins, prior)
    free = np.array([k for k in range(m) if k != reference])
    return _chord_newton(terms, point, win_information(point_wins, point, prior), len(wins), free, np.zeros(m),
                         _jitter(games), m, bounded=prior > 0)


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


def _cell_terms(a, b, y, z, weights: np.ndarray, n_sys: int) -> Terms:
    """The score and information of the covariate model over cells, for the weight vectors
    (replicates) ``weights (B, cells)``."""
    p = z.shape[1]
    k = n_sys + p
    design, sums_of = _design(a, b, z, n_sys)
    w = np.ascontiguousarray(weights.T)  # cells x replicates
    m2, diag = n_sys * n_sys, np.arange(n_sys)
    every = np.arange(len(weights))

    def terms(beta: np.ndarray, with_info: bool, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        wr = w if len(rows) == len(every) and (rows == every).all() else w[:, rows]
        mu = expit(design @ np.ascontiguousarray(beta.T))
        if not with_info:  # the bootstrap's chord steps: in place, one temporary of cells x replicates
            np.subtract(y[:, None], mu, out=mu)
            mu *= wr
            return (design.T @ mu).T, None
        grad = (design.T @ (wr * (y[:, None] - mu))).T
        n_rep = len(rows)
        sums = (sums_of.T @ (wr * mu * (1 - mu))).T  # replicates x statistics
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

    return terms


def fit_cells(a, b, y, z, weights, n_sys: int, ref: int, l2: float, start: np.ndarray | None = None,
              start_info: np.ndarray | None = None, bounded: bool = False) -> np.ndarray:
    """Logistic MLE of ``y ~ theta[a] - theta[b] + z·gamma`` over cells, for a batch of weight
    vectors at once (rows of ``weights``: the data, or bootstrap replicates) -> ``(B, M + p)``.
    Cells run down the rows and replicates across the columns. A ridge ``l2`` on ``gamma`` keeps
    it finite when a covariate separates the outcomes (a judge that only follows length does
    exactly that). ``start`` (e.g. the point estimate for bootstrap replicates) saves most
    iterations; with ``start_info`` (the information matrix of the data at ``start``) the
    replicates take chord steps (:func:`_chord_newton`), the same maxima for less work.
    ``bounded``: a prior keeps the maximum finite (no cap on the log-strengths)."""
    k = n_sys + z.shape[1]
    terms = _cell_terms(a, b, y, z, weights, n_sys)
    free = np.r_[np.arange(ref), np.arange(ref + 1, k)]
    penalty = np.r_[np.zeros(n_sys), np.full(z.shape[1], l2)]
    if start is not None and start_info is not None:
        return _chord_newton(terms, start, start_info, len(weights), free, penalty, _jitter(weights), n_sys,
                             tol=CELL_TOL, bounded=bounded)
    beta = np.zeros((len(weights), k)) if start is None else np.tile(start, (len(weights), 1))
    return _newton(terms, beta, free, penalty, _jitter(weights), n_sys, tol=CELL_TOL, bounded=bounded)


def cell_information(a, b, y, z, weights: np.ndarray, n_sys: int, beta: np.ndarray) -> np.ndarray:
    """The information matrix ``(K, K)`` of the covariate model for one weight vector at ``beta``."""
    terms = _cell_terms(a, b, y, z, np.asarray(weights, float)[None], n_sys)
    return terms(np.asarray(beta, float)[None], True, np.array([0]))[1][0]


# --------------------------------------------------------------------------- data -> win matrices and cells


def encode_comparisons(comparisons: pd.DataFrame, index: dict[str, int], weights) -> tuple[np.ndarray, ...]:
    """System indices of a and b, the outcome code (0 a, 1 b, 2 tie) and the weight of each comparison."""
    n = len(comparisons)
    codes, uniques = pd.factorize(pd.concat([comparisons["system_a"], comparisons["system_b"]], ignore_index=True))
    both = np.array([index.get(u, -1) for u in uniques], dtype=int)[codes] if n else np.zeros(0, dtype=int)
    i, j = both[:n], both[n:]
    if (i < 0).any() or (j < 0).any():
        unknown = set(comparisons["system_a"][i < 0]) | set(comparisons["system_b"][j < 0])
        raise ComparisonError(f"systems not in the systems list: {', '.join(sorted(map(str, unknown)))}")
    codes, uniques = pd.factorize(comparisons["winner"])
    outcome = np.array([WINNERS.index(u) if u in WINNERS else -1 for u in uniques], dtype=int)[codes] if n else codes
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
    """Bootstrap replicates as counts over cells, ``batch`` at a time: the package's one
    bootstrap (:func:`helpers.stats.metrics.bootstrap_counts`), whose 32-bit draws and draw
    budget keep 1,000 replicates of 100,000 comparisons to a second or two: sharing it costs no
    speed (the same code, moved)."""
    return bootstrap_counts(counts, n_boot, seed, batch)


def _percentiles(boot: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile CI per parameter over the replicates that have a finite fit (a warning says
    how many did not)."""
    finite = _finite_replicates(boot)
    if not len(finite):
        return np.full(boot.shape[1], np.nan), np.full(boot.shape[1], np.nan)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(finite, [alpha, 1 - alpha], axis=0)
    return lo, hi


def _finite_replicates(boot: np.ndarray) -> np.ndarray:
    failed = np.isnan(boot).any(axis=1)
    if failed.any():
        warnings.warn(f"{failed.mean():.1%} of bootstrap replicates had no finite fit and were dropped", stacklevel=4)
    return boot[~failed]


def ranks_withheld(n_boot: int) -> str | None:
    """Why a leaderboard shows no ranks and no intervals (None: it shows them): fewer than
    :data:`MIN_RANK_BOOT` replicates cannot place a 95 % percentile bound (with 1 replicate the
    "interval" is a single resampled fit that may exclude its own point estimate, with 0 every
    system would share rank 1)."""
    if n_boot >= MIN_RANK_BOOT:
        return None
    return (f"ranks and intervals withheld: {n_boot} bootstrap replicate(s) < {MIN_RANK_BOOT}, too few for a "
            f"percentile interval; rank again with --n-boot {MIN_RANK_BOOT} or more (default 1000)")


def reference_free_summary(point: np.ndarray, boot: np.ndarray, level: float) -> tuple[np.ndarray, ...]:
    """Intervals and CI-aware ranks of ``M`` log-strengths that do not depend on which system is
    held at 0.

    A replicate's log-strengths are defined up to a constant (the reference's value), so only
    their differences carry information. Intervals are taken of each system's log-strength
    minus the replicate's mean over systems (sum-to-zero gauge), then shifted by the same
    constant as the point estimate: choosing another reference moves point, lower and upper
    bound by one constant, and the reference no longer gets a zero-width interval. Each bound is
    widened to include the point estimate (a percentile bound on the wrong side of the point is
    bootstrap skew, not information), so an interval never excludes its own rating.

    Rank: 1 + the number of systems ``j`` that beat system ``i`` in at least ``(1 + level) / 2``
    of the replicates (the lower percentile bound of ``theta_j - theta_i`` is above 0), taken
    over the point order as a running minimum from the bottom, so a system never ranks below a
    system with a lower point estimate. Returns ``(lo, hi, rank)`` in the point's gauge."""
    point = np.asarray(point, float)
    finite = _finite_replicates(boot[:, :len(point)])
    if not len(finite):
        nan = np.full(len(point), np.nan)
        return nan, nan, np.full(len(point), np.nan)
    alpha = (1 - level) / 2
    centred = finite - finite.mean(axis=1, keepdims=True)
    shift = point.mean()
    lo, hi = np.quantile(centred, [alpha, 1 - alpha], axis=0) + shift
    lo, hi = np.minimum(lo, point), np.maximum(hi, point)
    above = np.zeros(len(point), dtype=int)
    need = int(np.ceil((1 - alpha) * len(finite) - 1e-9))
    for start in range(0, len(point), RANK_CHUNK):  # (B, chunk, M) booleans at a time
        block = finite[:, None, :] - finite[:, start:start + RANK_CHUNK, None]  # theta_j - theta_i
        above[start:start + RANK_CHUNK] = ((block > DIFF_TOL).sum(axis=0) >= need).sum(axis=1)
    order = np.lexsort((np.arange(len(point)), -point))  # best point first
    rank = np.empty(len(point))
    rank[order] = np.minimum.accumulate((1 + above[order])[::-1])[::-1]
    return lo, hi, rank


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
    wins, log_strength(_lo/_hi), rank, rating(_lo/_hi), gap(_lo/_hi)``. Intervals and ranks do not
    depend on the reference (:func:`reference_free_summary`: another reference moves rating, lower
    and upper bound by one constant); ``gap`` is the rating minus the reference's with the interval
    of that difference. Below :data:`MIN_RANK_BOOT` replicates intervals and ranks are NaN and
    ``attrs["ranks_withheld"]`` says why.
    """
    check_settings(n_boot, prior, level)
    systems = check_comparisons(comparisons)
    reference, ref = _reference_index(systems, reference)
    i, j, outcome, w = encode_comparisons(comparisons, {s: k for k, s in enumerate(systems)}, weights)
    m = len(systems)
    if prior == 0:
        check_connected(i, j, w, systems)
    point = aggregate_wins(i, j, outcome, w, np.ones((1, len(i))), m)
    theta = fit_win_matrices(point, ref, prior)[0]
    if np.isnan(theta).any():
        raise ComparisonError(_no_fit(prior))
    out = pd.DataFrame({"system": systems, "comparisons": point[0].sum(axis=0) + point[0].sum(axis=1),
                        "wins": point[0].sum(axis=1), "log_strength": theta})
    withheld = ranks_withheld(n_boot)
    if withheld is None:
        cells, counts = _cells(i, j, outcome, w)
        ci, cj, co = (cells[:, k].astype(int) for k in range(3))
        boot = np.concatenate([bootstrap_win_matrices(aggregate_wins(ci, cj, co, cells[:, 3], draw, m), theta,
                                                      point[0], ref, prior)
                               for draw in _replicates(counts, n_boot, seed, WIN_MATRIX_BATCH)])
        out["log_strength_lo"], out["log_strength_hi"], out["rank"] = reference_free_summary(theta, boot, level)
        gap_lo, gap_hi = _percentiles(boot - boot[:, [ref]], level)
    else:
        out["log_strength_lo"] = out["log_strength_hi"] = out["rank"] = np.nan
        gap_lo = gap_hi = np.full(m, np.nan)
    out = _with_ratings(out, anchor)
    # the difference from the reference in rating points, with its own interval (0 for the reference itself)
    out["gap"], out["gap_lo"], out["gap_hi"] = (ELO_SCALE * x for x in (theta, gap_lo, gap_hi))
    out.attrs.update(reference=reference, anchor=anchor, n_boot=n_boot, level=level, ranks_withheld=withheld)
    return out.sort_values(["log_strength", "system"], ascending=[False, True]).reset_index(drop=True)


def _no_fit(prior: float) -> str:
    """Why a point fit failed, with advice that fits the settings given."""
    if prior > 0:
        return (f"the Bradley-Terry fit did not converge (prior {prior}); this is a bug, please report it "
                "with the comparisons table")
    return "no finite Bradley-Terry fit: some system wins or loses all its comparisons; pass prior > 0"


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
    check_settings(n_boot, prior, level)
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

    def full(weights: np.ndarray) -> np.ndarray:
        return np.hstack([weights, np.broadcast_to(vw, (len(weights), len(vw)))])

    point = fit_cells(xa, xb, xy, xz, full(counts[None, :]), n_sys, ref, l2, bounded=prior > 0)[0]
    if np.isnan(point).any():
        raise ComparisonError(_no_fit(prior))
    info = cell_information(xa, xb, xy, xz, full(counts[None, :])[0], n_sys, point)
    batch = max(1, CELL_BUDGET // max(len(xa), 1))
    withheld = ranks_withheld(n_boot)
    boot = np.vstack([np.empty((0, len(point)))] + [
        fit_cells(xa, xb, xy, xz, full(draw), n_sys, ref, l2, point, info, bounded=prior > 0)
        for draw in _replicates(counts, n_boot if withheld is None else 0, seed, batch)])
    lo, hi = _percentiles(boot, level)
    lo[:n_sys], hi[:n_sys], rank = reference_free_summary(point[:n_sys], boot, level)
    wins = np.bincount(a, y, n_sys) + np.bincount(b, 1 - y, n_sys)  # a tie is half a win each
    games = np.bincount(a, minlength=n_sys) + np.bincount(b, minlength=n_sys)
    ratings = _with_ratings(pd.DataFrame({
        "system": systems, "comparisons": games, "wins": wins,
        "log_strength": point[:n_sys], "log_strength_lo": lo[:n_sys], "log_strength_hi": hi[:n_sys],
    }), anchor)
    ratings["rank"] = rank
    ratings.attrs.update(reference=reference, anchor=anchor, n_boot=n_boot, level=level, ranks_withheld=withheld)
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


def ratings_view(ratings: pd.DataFrame, digits: int = 0) -> pd.DataFrame:
    """A human-readable view of :func:`bradley_terry`'s ratings, best first, indexed by the
    CI-aware rank (``-`` where ranks are withheld). Not a fit: the tournament's leaderboards
    (plain and style-controlled, per judge) are :func:`helpers.tournament.rank.leaderboard`."""
    fmt = f"{{:.{digits}f}}"
    board = pd.DataFrame({
        "rank": [str(int(k)) if np.isfinite(k) else "-" for k in ratings["rank"]],
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


# --------------------------------------------------------------------------- adaptive designs


def rating_covariance(wins: np.ndarray, theta: np.ndarray, prior: float = 0.0) -> np.ndarray:
    """Covariance ``(M, M)`` of the log-strengths from the inverse Fisher information at ``theta``
    (system 0 held at 0, so its row and column are 0). Differences ``theta_i - theta_j`` -- all
    that an order depends on -- have the same variance whichever system is held."""
    info = win_information(wins, theta, prior)
    m = len(theta)
    cov = np.zeros((m, m))
    cov[1:, 1:] = np.linalg.pinv(info[1:, 1:] + _jitter(np.asarray(wins)) * np.eye(m - 1))
    return cov


def flip_probabilities(theta: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every pair ``i < j``: the probability, under the estimate's normal approximation,
    that the true order of ``i`` and ``j`` is the opposite of the estimated one,
    ``Phi(-|theta_i - theta_j| / se_ij)``; returns ``(i, j, probability)``."""
    i, j = np.triu_indices(len(theta), k=1)
    var = cov[i, i] + cov[j, j] - 2 * cov[i, j]
    se = np.sqrt(np.maximum(var, 1e-300))
    return i, j, stats.norm.sf(np.abs(theta[i] - theta[j]) / se)


def pair_weights(theta: np.ndarray, cov: np.ndarray, explore: float = 0.05) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """How much an adaptive design wants each system pair ``i < j``: proportional to the square
    of the chance that their estimated order is wrong (:func:`flip_probabilities`), so the budget
    goes to pairs whose ranks still overlap and not to pairs already told apart (the square
    concentrates it on the closest pairs: in the simulation of ``notebooks/07a_adaptive.ipynb``
    it needed fewer comparisons than the plain chance, its cube or a flat weight on overlapping
    pairs); a share ``explore`` is spread uniformly so that a pair the current fit wrongly calls
    settled is still revisited. Returns ``(i, j, weight)``, weights summing to 1."""
    i, j, flip = flip_probabilities(theta, cov)
    flip = flip**2
    weight = (1 - explore) * flip / flip.sum() + explore / len(flip) if flip.sum() > 0 else np.full(len(flip), 1 / len(flip))
    return i, j, weight / weight.sum()


def adaptive_pairs(theta: np.ndarray, cov: np.ndarray, size: int, rng: np.random.Generator,
                   explore: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """``size`` system pairs drawn with replacement by :func:`pair_weights` (the simulation's
    draw, where every pair can be compared again; a tournament draws comparisons without
    replacement: :func:`helpers.tournament.design.next_batch`). Seeded by ``rng``."""
    i, j, weight = pair_weights(theta, cov, explore)
    pick = rng.choice(len(weight), size=size, p=weight)
    return i[pick], j[pick]


def separable_pairs(theta: np.ndarray, cov: np.ndarray, available: np.ndarray, level: float = 0.95) -> np.ndarray:
    """Which not-yet-separated pairs ``i < j`` (order of :func:`flip_probabilities`) the next
    ``available[k]`` comparisons could still separate at ``level``, in the best case for each:
    all of them spent on that pair, the estimated difference ``d`` unchanged, each adding the
    Fisher information ``p (1 - p)`` (``p = sigmoid(d)``) to the difference's precision. When none
    can, the next batch cannot change any CI-aware rank under the current estimate, and an
    adaptive design stops ("futile") instead of judging comparisons that only add ties (two
    systems of identical length under the length judge)."""
    i, j, flip = flip_probabilities(theta, cov)
    z = stats.norm.isf((1 - level) / 2)
    d = np.abs(theta[i] - theta[j])
    var = np.maximum(cov[i, i] + cov[j, j] - 2 * cov[i, j], 1e-300)
    p = expit(d)
    best = 1 / (1 / var + np.asarray(available, float) * p * (1 - p))
    open_pairs = flip >= (1 - level) / 2
    return open_pairs & (d / np.sqrt(best) >= z)


def adjacent_separated(theta: np.ndarray, cov: np.ndarray, level: float = 0.95) -> bool:
    """The stopping rule: every two systems adjacent in the estimated order are separated at
    ``level`` (the estimated order of each adjacent pair is wrong with probability below
    ``(1 - level) / 2``)."""
    order = np.argsort(-theta)
    a, b = order[:-1], order[1:]
    var = cov[a, a] + cov[b, b] - 2 * cov[a, b]
    flip = stats.norm.sf((theta[a] - theta[b]) / np.sqrt(np.maximum(var, 1e-300)))
    return bool((flip < (1 - level) / 2).all())


def fit_with_covariance(comparisons: pd.DataFrame, systems: list[str], prior: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Plain BT log-strengths of ``systems`` (in that order, the first held at 0) and their
    covariance (:func:`rating_covariance`): what an adaptive design refits after each batch."""
    check_settings(0, prior)
    index = {s: k for k, s in enumerate(systems)}
    i, j, outcome, w = encode_comparisons(comparisons, index, None)
    wins = aggregate_wins(i, j, outcome, w, np.ones((1, len(i))), len(systems))[0]
    theta = fit_win_matrices(wins, 0, prior)
    if np.isnan(theta).any():
        raise ComparisonError(_no_fit(prior))
    return theta, rating_covariance(wins + prior / 2 * (1 - np.eye(len(systems))), theta)
