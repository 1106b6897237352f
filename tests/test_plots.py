"""Figures draw what the tables hold, including the edge cases the bootstrap produces."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd

from helpers.report import plots


def test_forest_draws_a_degenerate_bootstrap_interval_and_one_that_excludes_its_point():
    # a system every replicate rates the same: lo sits 4e-11 above the point (chord-step noise),
    # which matplotlib's errorbar refuses as a negative error; and a percentile interval beside its point
    ratings = pd.DataFrame({"system": ["same", "skewed"], "rating": [-224.128011, 5.0],
                            "rating_lo": [-224.128011 + 4e-11, 6.0], "rating_hi": [-224.128011, 9.0]})
    fig = plots.forest(ratings, label="system")
    ax = fig.axes[0]
    segments = np.concatenate([c.get_segments() for c in ax.collections])
    assert sorted(tuple(np.round(s[:, 0], 6)) for s in segments) == [(-224.128011, -224.128011), (6.0, 9.0)]
