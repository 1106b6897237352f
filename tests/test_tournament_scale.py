"""Tournaments at challenge scale (issue 20): settings that would silently invert or blank a
leaderboard are refused, a perfectly ordered 100,000-row tournament fits with a prior, the fast
bootstrap finds the same maxima as full Newton steps, and every user error on the command line is
one message with the right exit status."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helpers.stats import bt as S
from helpers.stats.simulate import synthetic_comparisons

# --------------------------------------------------------------------------- the fitter


@pytest.mark.parametrize("settings", [{"prior": -1000.0}, {"prior": float("nan")}, {"n_boot": -5}, {"n_boot": 2.5}])
def test_a_negative_prior_or_bootstrap_count_is_refused_not_fitted(settings):
    comps = synthetic_comparisons([0.0, 1.0, 2.0], 300, seed=1)
    with pytest.raises(S.ComparisonError, match="prior must be|n_boot must be"):
        S.bradley_terry(comps, **{"n_boot": 0, **settings})
    with pytest.raises(S.ComparisonError, match="prior must be|n_boot must be"):
        S.fit_bt(comps, **{"n_boot": 0, **settings})


def test_a_perfectly_ordered_100000_row_tournament_fits_with_a_prior():
    """Ten systems, the longer always wins (a length judge on systems of fixed length): with one
    virtual tie per pair the maximum is finite, though adjacent systems sit ~7 apart and the ends
    more than 50 apart (the old cap refused it, advising the prior it had been given)."""
    systems = [f"sys{k}" for k in range(10)]
    rng = np.random.default_rng(0)
    a = rng.integers(0, 10, 100_000)
    b = (a + rng.integers(1, 10, 100_000)) % 10
    comps = pd.DataFrame({"system_a": np.array(systems)[a], "system_b": np.array(systems)[b],
                          "winner": np.where(a > b, "a", "b"), "length_diff": np.where(a > b, 0.3, -0.3)})
    board = S.bradley_terry(comps, n_boot=0, prior=1.0)
    assert list(board["system"]) == systems[::-1]
    assert board["log_strength"].max() - board["log_strength"].min() > 50
    # the fitted maximum: the score vanishes (independent check of the first-order condition)
    wins = S.aggregate_wins(*S.encode_comparisons(comps, {s: k for k, s in enumerate(systems)}, None),
                            np.ones((1, len(comps))), 10)[0] + 0.5 * (1 - np.eye(10))
    theta = board.set_index("system").loc[systems, "log_strength"].to_numpy()
    p = 1 / (1 + np.exp(theta[None, :] - theta[:, None]))
    assert np.abs(wins.sum(axis=1) - ((wins + wins.T) * p).sum(axis=1)).max() < 1e-6
    style = S.fit_bt(comps, ("length_diff",), n_boot=0, prior=1.0)
    assert np.isfinite(style.ratings["log_strength"]).all()


def test_the_chord_bootstrap_finds_the_same_maxima_as_full_newton_steps():
    comps = synthetic_comparisons(np.linspace(-1, 1, 12), 3000, tie_rate=0.05, seed=3)
    systems = sorted(set(comps["system_a"]) | set(comps["system_b"]))
    i, j, o, w = S.encode_comparisons(comps, {s: k for k, s in enumerate(systems)}, None)
    point = S.aggregate_wins(i, j, o, w, np.ones((1, len(i))), 12)
    theta = S.fit_win_matrices(point, 0, 0.5)[0]
    draws = np.random.default_rng(0).multinomial(len(i), np.full(len(i), 1 / len(i)), size=20).astype(float)
    replicates = S.aggregate_wins(i, j, o, w, draws, 12)
    chord = S.bootstrap_win_matrices(replicates, theta, point[0], 0, 0.5)
    newton = S.fit_win_matrices(replicates, 0, 0.5)
    assert np.abs(chord - newton).max() < 1e-8
