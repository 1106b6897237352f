"""Figures shared by the analysis notebooks: one function per figure kind, each returning the
figure and saving a PNG when given a path, so notebooks stay a line per figure."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from sklearn.metrics import confusion_matrix

from helpers.data import LABELS
from helpers.report import names

SHOWN_PX = 736  # the report's text column at a 1280 px window (report.css: .article max-width 46rem)
MIN_TEXT_PX = 10  # no figure text smaller than this where it is shown
_DISPLAY_DPI = 100  # the lowest resolution a notebook shows a figure at (inline backend; plots.show uses 110)


def text_px(fig: plt.Figure, size_pt: float, shown_px: float = SHOWN_PX, dpi: float = _DISPLAY_DPI) -> float:
    """The height in screen pixels of ``size_pt`` text of ``fig`` where the page shows the figure:
    the image is drawn at ``dpi`` and scaled down to ``shown_px`` when it is wider (the tight
    bounding box, labels outside the axes included, is what is drawn)."""
    width_in = fig.get_tightbbox(fig.canvas.get_renderer()).width
    return size_pt / 72 * min(dpi, shown_px / width_in)


def ensure_legible(fig: plt.Figure, shown_px: float = SHOWN_PX, min_px: float = MIN_TEXT_PX) -> plt.Figure:
    """Raise every text of ``fig`` (titles, labels, ticks, legends, annotations) that would show
    smaller than ``min_px`` at the report's column width to that size: the check that every figure
    is drawn for the width it is shown at. Larger text can widen the figure, so it checks twice."""
    for _ in range(2):
        small = [t for t in fig.findobj(plt.Text) if t.get_visible() and t.get_text()
                 and text_px(fig, t.get_fontsize(), shown_px) < min_px - 1e-6]
        if not small:
            break
        scale = min(_DISPLAY_DPI, shown_px / fig.get_tightbbox(fig.canvas.get_renderer()).width)
        for text in small:
            text.set_fontsize(min_px * 72 / scale + 0.05)
    return fig


def save(fig: plt.Figure, path: str | Path | None) -> plt.Figure:
    """Check that its text is legible at the width the report shows it (:func:`ensure_legible`),
    save as PNG (creating the folder) and return the figure for display."""
    ensure_legible(fig)
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=150, bbox_inches="tight")
    return fig


def heatmap(table: pd.DataFrame, title: str, path=None, fmt: str = ".1f", cmap: str = "viridis") -> plt.Figure:
    """Annotated heatmap of a wide table (e.g. judges x strategies of two-class WAF)."""
    fig, ax = plt.subplots(figsize=(1.2 * max(table.shape[1], 3) + 2, 0.45 * max(table.shape[0], 3) + 1.5))
    sns.heatmap(table, annot=True, fmt=fmt, cmap=cmap, ax=ax, cbar_kws={"label": title})
    ax.set_title(title)
    return save(fig, path)


def confusion_matrices(panels: dict[str, tuple[pd.Series, pd.Series]], path=None, ncols: int = 4) -> plt.Figure:
    """Row-normalised three-class confusion matrices, one panel per ``title: (gt, pred)``."""
    n = max(len(panels), 1)
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 3.0 * nrows), squeeze=False)
    for ax, (title, (gt, pred)) in zip(axes.flat, panels.items(), strict=False):
        matrix = confusion_matrix(gt, pred, labels=list(LABELS), normalize="true")
        sns.heatmap(matrix, annot=True, fmt=".2f", vmin=0, vmax=1, cmap="Blues", cbar=False, ax=ax,
                    xticklabels=LABELS, yticklabels=LABELS)
        ax.set(title=title, xlabel="predicted", ylabel="human")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    return save(fig, path)


def scatter_regression(data: pd.DataFrame, x: str, y: str, hue: str | None = None, title: str = "",
                       path=None, label: str | None = None) -> plt.Figure:
    """Scatter with a least-squares line and its 95% confidence band (seaborn)."""
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    sns.regplot(data=data, x=x, y=y, ax=ax, scatter=False, ci=95, color="0.3")
    sns.scatterplot(data=data, x=x, y=y, hue=hue, ax=ax, s=50)
    if label is not None:
        for _, row in data.iterrows():
            ax.annotate(str(row[label]), (row[x], row[y]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set(title=title, xlabel=x.replace("_", " ") + " (%)", ylabel=y.replace("_", " ").replace("waf", "WAF") + " (%)")
    return save(fig, path)


def voting_curves(curve: pd.DataFrame, path=None) -> plt.Figure:
    """Two-class WAF of the top-k vote vs k with bootstrap bands; calls on a second axis."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    twin = ax.twinx()
    for mode, group in curve.groupby("mode", sort=False):
        line, = ax.plot(group["k"], group["two_class_waf"], marker="o", label=f"WAF, {mode}")
        ax.fill_between(group["k"], group["two_class_waf_lo"], group["two_class_waf_hi"], alpha=0.2, color=line.get_color())
        twin.plot(group["k"], group["calls"], ls="--", color=line.get_color(), alpha=0.6, label=f"calls, {mode}")
    ax.set(xlabel="k (top-k judges voting)", ylabel="two-class WAF (%)")
    twin.set_ylabel("cost: judge calls")
    ax.set_xticks(sorted(curve["k"].unique()))
    handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    ax.legend(handles=handles, fontsize=8, loc="lower right")
    return save(fig, path)


def interval_marks(ax, x, y, lo, hi, marker: str = "o", color=None, label: str | None = None) -> None:
    """Each point with its interval drawn from ``lo`` to ``hi`` as given. Not ``errorbar``: a
    bootstrap percentile interval need not contain its point (and a degenerate one equals it up to
    rounding noise, which ``errorbar`` refuses as a negative error)."""
    line = ax.hlines(y, lo, hi, color=color, lw=1.2)
    ax.plot(lo, y, "|", hi, y, "|", color=line.get_color()[0] if color is None else color, ms=6)
    ax.plot(x, y, marker, ls="none", color=line.get_color()[0] if color is None else color, label=label)


def forest(ratings: pd.DataFrame, title: str = "", path=None, label: str = "system",
           reference_line: float | None = None) -> plt.Figure:
    """Forest plot of ratings with their CIs (one panel per ``panel`` value if present);
    ``reference_line`` marks the anchor rating (the reference system's)."""
    panels = list(ratings["panel"].unique()) if "panel" in ratings.columns else [None]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 0.4 * ratings[label].nunique() + 1.8),
                             squeeze=False, sharey=True)
    order = ratings.groupby(label)["rating"].mean().sort_values().index
    for ax, panel in zip(axes.flat, panels, strict=True):
        part = ratings if panel is None else ratings[ratings["panel"] == panel]
        part = part.set_index(label).reindex(order).dropna(subset=["rating"])
        y = np.arange(len(part))
        interval_marks(ax, part["rating"], y, part["rating_lo"], part["rating_hi"], color="tab:blue")
        if reference_line is not None:
            ax.axvline(reference_line, color="0.5", ls=":")
        ax.set_yticks(y, part.index)
        ax.set(xlabel="rating (Elo-like)", title=str(panel) if panel is not None else title)
    fig.tight_layout()
    return save(fig, path)


def simulation_curve(curve: pd.DataFrame, target: float = 0.9, path=None, hue: str = "judge") -> plt.Figure:
    """Kendall tau vs comparisons (log scale) per simulated judge, with the target line."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name, group in curve.groupby(hue, sort=False):
        line, = ax.plot(group["n_comparisons"], group["tau_mean"], marker="o", label=str(name))
        ax.fill_between(group["n_comparisons"], group["tau_lo"], group["tau_hi"], alpha=0.12, color=line.get_color())
    ax.axhline(target, color="k", ls=":", label=f"tau = {target}")
    ax.set(xscale="log", xlabel="pairwise comparisons judged", ylabel="Kendall tau with true ranking", ylim=(None, 1.02))
    ax.legend(fontsize=8)
    return save(fig, path)


def length_boxplots(lengths: pd.DataFrame, path=None) -> plt.Figure:
    """Description length in characters and in words by writing model (``lengths``: one row per
    description with ``model``, ``characters``, ``words``), side by side."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, unit in zip(axes, ["characters", "words"], strict=True):
        sns.boxplot(data=lengths, x="model", y=unit, hue="model", ax=ax, legend=False)
        ax.set_xlabel("writing model")
        ax.set_ylabel(f"length ({unit})")
    fig.tight_layout()
    return save(fig, path)


def show(fig: plt.Figure) -> None:
    """Display a figure as the cell's image output whatever the matplotlib backend (the
    Makefile runs notebooks with MPLBACKEND=Agg, which the inline backend would not capture),
    and close it so the inline backend does not show it a second time."""
    import io

    from IPython.display import Image, display

    ensure_legible(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    display(Image(data=buffer.getvalue(), format="png"))


# --------------------------------------------------------------------------- the length confound (helpers.stats.confound)


def length_distribution_figure(pairs: pd.DataFrame, path=None) -> plt.Figure:
    """Character lengths of the descriptions, one histogram per writing model (the confound chapter)."""
    from helpers.stats.confound import description_lengths

    lengths = description_lengths(pairs, model_names={})
    fig, ax = plt.subplots(figsize=(7, 3.6))
    sns.histplot(lengths, x="characters", hue="model", element="step", stat="count", bins=40, ax=ax)
    ax.set_xlabel("description length (characters)")
    ax.set_ylabel("descriptions")
    return save(fig, path)


def preference_curve_figure(pairs: pd.DataFrame, bins: int = 8, path=None) -> plt.Figure:
    """Share of pairs where humans preferred a1 vs the log-length ratio: quantile bins with
    Wilson 95% CIs, and the fitted human length GLM."""
    from helpers.stats import confound

    curve = confound.preference_curve(pairs, bins)
    human = confound.human_length_glm(pairs)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.errorbar(curve["log_ratio"], curve["p_a1"], yerr=[curve["p_a1"] - curve["lo"], curve["hi"] - curve["p_a1"]],
                fmt="o", capsize=3, label="humans (binned, 95% CI)")
    coverage = confound.ratio_coverage(pairs)
    middle = coverage["threshold"]
    ax.axvspan(-middle, middle, color="0.9", zorder=0,
               label=f"|log ratio| < {middle:g}: {coverage['near_equal']} of {coverage['pairs']} pairs")
    if np.isfinite(human["coef"]):
        scale = confound.length_scale(pairs)
        grid = np.linspace(curve["log_ratio"].min() - 0.1, curve["log_ratio"].max() + 0.1, 200)
        fitted = 1 / (1 + np.exp(-(human["intercept"] + human["coef"] * grid / scale)))
        inside = np.abs(grid) < middle  # drawn dashed where hardly any pair was observed
        line, = ax.plot(np.where(inside, np.nan, grid), fitted, label=f"logistic fit (pseudo-R² {human['pseudo_r2']:.2f})")
        ax.plot(np.where(inside, grid, np.nan), fitted, ls="--", color=line.get_color(), label="fit, extrapolated")
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.axvline(0.0, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("log(len a1 / len a2)   (right: a1 longer)")
    ax.set_ylabel("P(humans prefer a1)")
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=10)
    return save(fig, path)


def _label_column(ax, points: list[tuple[float, float, str]], fontsize: float = 10) -> None:
    """Each ``(x, y, text)`` labelled in a column right of the axes, in the order of the points'
    heights, spaced so that no two labels overlap, each joined to its point by a leader line."""
    line = fontsize / 72 / (ax.figure.get_figheight() * ax.get_position().height)  # one text line, axes fraction
    low, high = ax.get_ylim()
    # top down by height in bands of 8 points (so nearly level points keep one band), the rightmost
    # first within a band: leader lines of level points then fan out instead of crossing
    wanted = sorted((((y - low) / (high - low), x, y, text) for x, y, text in points),
                    key=lambda w: (-round(w[2] / 8), -w[1]))
    placed: list[float] = []
    for frac, *_rest, text in wanted:  # top down: each label at its point's height or below the previous one
        height = (text.count("\n") + 1) * 1.25 * line
        top = min(frac + height / 2, placed[-1] - 0.4 * line if placed else 1.0)
        placed.append(top - height)
    shift = max(0.0, -placed[-1]) if placed else 0.0  # ran out at the bottom: move the column up
    for (_, x, y, text), bottom in zip(wanted, placed, strict=True):
        ax.annotate(text, (x, y), xytext=(1.04, bottom + shift), textcoords="axes fraction", fontsize=fontsize,
                    ha="left", va="bottom", annotation_clip=False,
                    arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.7, "shrinkA": 2, "shrinkB": 4,
                                "relpos": (0, 0.5)})


def _label_fan(ax, xs: list[float], texts: list[str], y: float, rows: int = 3, fontsize: float = 10) -> None:
    """Labels of points on one line (at height ``y``), spread evenly across the axes in the order
    of ``xs`` over ``rows`` rows, each joined to its point by a leader line."""
    order = np.argsort(xs, kind="stable")
    n = len(order)
    for slot, i in enumerate(order):
        fx = 0.1 + 0.8 * (slot + 0.5) / n
        fy = 0.42 + 0.19 * (slot % rows)
        ax.annotate(texts[i], (xs[i], y), xytext=(fx, fy), textcoords="axes fraction", fontsize=fontsize,
                    ha="center", va="bottom",
                    arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.7, "shrinkA": 0, "shrinkB": 2})


def plane_figure(report: pd.DataFrame, reported: pd.DataFrame, path=None) -> plt.Figure:
    """Two-class WAF (x) vs length-balanced accuracy (y, with 95% CI) for every judge cell run
    here or imported (a ``source_label`` column, from ``helpers.imports.with_source``, gives
    imported judges their own marker and legend entry), labelled with leader lines (judges at the
    same spot share one label). The paper's judges, whose length-balanced accuracy is *unknown*,
    are not drawn on that axis: they sit in a strip of their own below it, on the same WAF axis."""
    from helpers.stats.confound import BASELINES, OURS

    fig, (ax, strip) = plt.subplots(2, 1, figsize=(8.5, 7), sharex=True,
                                    gridspec_kw={"height_ratios": [4, 1.6], "hspace": 0.14})
    fig.subplots_adjust(right=0.7)  # the label column sits right of the axes
    data = report.dropna(subset=["two_class_waf", "len_balanced_acc"]).copy()
    data["label"] = [names.judge(j) if s == "-" else f"{names.judge(j)} ({s}, {i})" for j, s, i in
                     zip(data["judge"], data["strategy"], data["input_type"], strict=True)]
    baseline = data["judge"].isin(BASELINES)
    source = data["source_label"] if "source_label" in data.columns else pd.Series(OURS, index=data.index)
    ours = source == OURS
    groups = [(baseline & ours, "text-only judge (this study)", "o"), (~baseline & ours, "MLLM judge (this study)", "s")]
    groups += [(source == label, f"judge {label}", "D") for label in sorted(set(source[~ours]))]
    for mask, kind, marker in groups:
        part = data[mask]
        if len(part):
            ax.errorbar(part["two_class_waf"], part["len_balanced_acc"], ls="none", marker=marker, capsize=3,
                        yerr=[part["len_balanced_acc"] - part["len_balanced_lo"], part["len_balanced_hi"] - part["len_balanced_acc"]],
                        label=kind)
    waf = pd.concat([data["two_class_waf"], reported["two_class_waf"] if len(reported) else pd.Series(dtype=float)])
    if len(waf):
        ax.set_xlim(min(waf.min(), 50) - 8, max(waf.max(), 50) + 8)
    ax.set_ylim(0, 105)
    for level, text in ((50, "50: length alone"), (100, "100: oracle")):
        ax.axhline(level, color="grey", lw=0.8, ls="--")
        ax.annotate(text, (0.01, level), xycoords=("axes fraction", "data"), xytext=(0, 3),
                    textcoords="offset points", fontsize=10, color="0.35", ha="left", va="bottom")
    spots = data.groupby([data["two_class_waf"].round(0), data["len_balanced_acc"].round(0)], sort=False)
    _label_column(ax, [(g["two_class_waf"].iloc[0], g["len_balanced_acc"].iloc[0], "\n".join(g["label"]))
                       for _, g in spots])
    ax.set_ylabel("length-balanced accuracy (%)", fontsize=11)
    ax.legend(loc="lower left", fontsize=10, frameon=False)
    strip.set_yticks([])
    strip.set_ylabel("reported\nby the paper", fontsize=10)
    strip.set_title("MLLMs reported by the paper: length-balanced accuracy unknown\nuntil their outputs are imported",
                    fontsize=10, loc="left", pad=4)
    strip.set_ylim(0, 1)
    if len(reported):
        strip.plot(reported["two_class_waf"], [0.12] * len(reported), marker="|", ls="none", ms=12, color="black")
        _label_fan(strip, list(reported["two_class_waf"]), list(reported["judge"]), 0.12)
    else:
        strip.text(0.5, 0.5, "no reported table", transform=strip.transAxes, ha="center", fontsize=10)
    strip.set_xlabel("two-class WAF (%)", fontsize=11)
    return save(fig, path)


# --------------------------------------------------------------------------- the probes (helpers.stats.probes)

PROBE_PANELS = (
    ("verbosity", "Verbosity\n% for the padded copy"),
    ("matched_waf", "Length-matched v1\n2-class WAF"),
    ("content", "Content\n% for the original"),
)


def probe_figure(table: pd.DataFrame, path=None) -> plt.Figure:
    """Each judge's three probe figures with their 95 % intervals, one panel per probe and the
    judges on a shared vertical axis; the dashed line at 50 is a judge that does not respond (or
    chance). Drawn 8 in wide for the text column, text at 10 pt. A judge not run on a probe has
    no mark in that panel (unknown, not zero)."""
    rows = table.reset_index(drop=True)
    labels = [names.judge(j) if s == "-" else f"{names.judge(j)} ({s}, {i})"
              for j, s, i in zip(rows["judge"], rows["strategy"], rows["input_type"], strict=True)]
    fig, axes = plt.subplots(1, len(PROBE_PANELS), figsize=(8, 0.42 * max(len(rows), 3) + 1.4), sharey=True)
    y = np.arange(len(rows))[::-1]
    for ax, (column, title) in zip(axes, PROBE_PANELS, strict=True):
        known = rows[column].notna().to_numpy()
        interval_marks(ax, rows[column][known], y[known], rows[f"{column}_lo"][known], rows[f"{column}_hi"][known],
                       color="tab:blue")
        ax.axvline(50, color="grey", lw=0.8, ls="--")
        ax.set_xlim(-4, 104)
        ax.set_xticks([0, 50, 100])
        ax.set_title(title, fontsize=10)
        ax.tick_params(labelsize=10)
        ax.grid(axis="x", color="0.9")
    axes[0].set_yticks(y, labels)
    axes[0].set_ylim(-0.7, len(rows) - 0.3)
    fig.supxlabel("percent, with 95 % pair-bootstrap interval (dashed: 50, a judge that does not respond)", fontsize=10)
    fig.tight_layout()
    return save(fig, path)
