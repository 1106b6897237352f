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


def save(fig: plt.Figure, path: str | Path | None) -> plt.Figure:
    """Save as PNG (creating the folder) and return the figure for display."""
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
    if np.isfinite(human["coef"]):
        scale = confound.length_scale(pairs)
        grid = np.linspace(curve["log_ratio"].min() - 0.1, curve["log_ratio"].max() + 0.1, 200)
        fitted = 1 / (1 + np.exp(-(human["intercept"] + human["coef"] * grid / scale)))
        ax.plot(grid, fitted, label=f"logistic fit (pseudo-R² {human['pseudo_r2']:.2f})")
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.axvline(0.0, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("log(len a1 / len a2)   (right: a1 longer)")
    ax.set_ylabel("P(humans prefer a1)")
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left")
    return save(fig, path)


def plane_figure(report: pd.DataFrame, reported: pd.DataFrame, human_bound: float | None = None,
                 path=None) -> plt.Figure:
    """Two-class WAF (x) vs length-balanced accuracy (y, with 95% CI) for every judge cell run
    here or imported (a ``source_label`` column, from ``helpers.imports.with_source``, gives
    imported judges their own marker and legend entry); the paper's judges, whose length-balanced accuracy is unknown, as ticks along the x
    axis. Judges at the same spot share one label."""
    from helpers.stats.confound import BASELINES, OURS, REPORTED

    fig, ax = plt.subplots(figsize=(7, 5.2))  # drawn for the text column (about 780 px), legend below
    data = report.dropna(subset=["two_class_waf", "len_balanced_acc"]).copy()
    data["label"] = [names.judge(j) if s == "-" else f"{names.judge(j)} ({s}, {i})" for j, s, i in
                     zip(data["judge"], data["strategy"], data["input_type"], strict=True)]
    baseline = data["judge"].isin(BASELINES)
    source = data["source_label"] if "source_label" in data.columns else pd.Series(OURS, index=data.index)
    ours = source == OURS
    groups = [(baseline & ours, "text-only baseline (this study)", "o"), (~baseline & ours, "MLLM judge (this study)", "s")]
    groups += [(source == label, f"judge {label}", "D") for label in sorted(set(source[~ours]))]
    for mask, kind, marker in groups:
        part = data[mask]
        if len(part):
            ax.errorbar(part["two_class_waf"], part["len_balanced_acc"], ls="none", marker=marker, capsize=3,
                        yerr=[part["len_balanced_acc"] - part["len_balanced_lo"], part["len_balanced_hi"] - part["len_balanced_acc"]],
                        label=kind)
    spots = data.groupby([data["two_class_waf"].round(0), data["len_balanced_acc"].round(0)], sort=False)
    right = data["two_class_waf"].max() if len(data) else 0.0
    for _, group in spots:  # labels near the right edge go above-left of their point, inside the axes; the
        x = group["two_class_waf"].iloc[0]  # others below-right, so a long label never runs into the edge's stack
        near_edge = x > right - 15
        ax.annotate("\n".join(group["label"]), (x, group["len_balanced_acc"].iloc[0]),
                    xytext=(-5, 6) if near_edge else (5, -8), textcoords="offset points", fontsize=8,
                    ha="right" if near_edge else "left", va="bottom" if near_edge else "top")
    ax.set_ylim(0, 102)
    for level, text, dy in ((50, "length alone", 3), (100, "oracle", -10)):  # left of the band, clear of the labels
        ax.axhline(level, color="grey", lw=0.8, ls="--")
        ax.annotate(text, (0.3, level), xycoords=("axes fraction", "data"), xytext=(0, dy),
                    textcoords="offset points", fontsize=8, color="grey", ha="right")
    if len(reported):  # their length-balanced accuracy is unknown: a band over the WAF range they span
        ax.axvspan(reported["two_class_waf"].min() - 0.3, reported["two_class_waf"].max() + 0.3, color="0.92", zorder=0,
                   label="MLLMs reported by the paper: length-balanced accuracy unknown")
        ax.plot(reported["two_class_waf"], [2.0] * len(reported), marker="|", ls="none", ms=14, color="black",
                label=f"{REPORTED} (two-class WAF only)")
        last_x: list[float] = []  # per label level, the x of its rightmost label so far
        for row in reported.sort_values("two_class_waf").itertuples():
            level = next((k for k, x in enumerate(last_x) if row.two_class_waf - x > 1.3), len(last_x))
            last_x[level:level + 1] = [row.two_class_waf]
            ax.annotate(row.judge, (row.two_class_waf, 4.0 + 24.0 * level), rotation=90, fontsize=7,
                        va="bottom", ha="center")
    if human_bound is not None:
        ax.axvline(human_bound, color="tab:red", lw=0.8, ls=":", label=f"agreement between annotators ({REPORTED})")
    ax.set_xlabel("two-class WAF (%)")
    ax.set_ylabel("length-balanced accuracy (%)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize=8, frameon=False)
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
