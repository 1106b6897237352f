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


def test_no_figure_text_is_smaller_than_10_px_where_the_report_shows_it(tmp_path):
    """A wide figure (shrunk to the 736 px text column) with 6 pt labels: saving it raises every
    text to at least 10 screen pixels at that width, measured independently of the helper."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(14, 3))
    ax.plot([0, 1], [0, 1])
    ax.annotate("a small label", (0.5, 0.5), fontsize=6)
    ax.set_xlabel("x", fontsize=6)
    ax.tick_params(labelsize=6)
    plots.save(fig, tmp_path / "wide.png")
    width_in = fig.get_tightbbox(fig.canvas.get_renderer()).width
    shrink = min(1.0, plots.SHOWN_PX / (width_in * 100))  # drawn at 100 dpi, scaled to the column
    sizes = [t.get_fontsize() for t in fig.findobj(plt.Text) if t.get_visible() and t.get_text()]
    assert sizes and min(size / 72 * 100 * shrink for size in sizes) >= 10 - 1e-6
    plt.close(fig)
