"""Figures, tables and prose of the confound chapter ("What does EmoPrefer v1 measure?").

The numbers come from ``helpers.stats.bias`` (length metrics) and ``helpers.stats.metrics`` (the paper's
metrics); this module only arranges them, so that ``notebooks/06_confound.ipynb`` stays a
sequence of calls. The paper's judges enter only as rows and marks labelled "reported by the
paper": it gives their two-class WAF, not their length-balanced accuracy.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import yaml

from helpers.report.plots import save
from helpers.stats import bias, metrics

BASELINES = ("length", "source", "minilm_rm", "minilm_rm_nolen", "random", "always_a1")
REPORTED = "reported by the paper"
OURS = "this study"


def paper_results(path: str | Path) -> tuple[pd.DataFrame, float | None]:
    """The paper's reported judges and its human consistency bound (None when not given)."""
    path = Path(path)
    bound = None
    if path.is_file():
        bound = (yaml.safe_load(path.read_text()) or {}).get("human_consistency_bound")
    return bias.reported_judges(path), (float(bound) if bound is not None else None)


def length_distribution_figure(pairs: pd.DataFrame, path=None) -> plt.Figure:
    """Character lengths of the descriptions, one histogram per writing model."""
    lengths = bias.length_by_model(pairs)
    fig, ax = plt.subplots(figsize=(7, 3.6))
    sns.histplot(lengths, x="length", hue="model", element="step", stat="count", bins=40, ax=ax)
    ax.set_xlabel("description length (characters)")
    ax.set_ylabel("descriptions")
    return save(fig, path)


def preference_curve_figure(pairs: pd.DataFrame, bins: int = 8, path=None) -> plt.Figure:
    """Share of pairs where humans preferred a1 vs the log-length ratio: quantile bins with
    Wilson 95% CIs, and the fitted human length GLM."""
    curve = bias.preference_curve(pairs, bins)
    human = bias.human_length_glm(pairs)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.errorbar(curve["log_ratio"], curve["p_a1"], yerr=[curve["p_a1"] - curve["lo"], curve["hi"] - curve["p_a1"]],
                fmt="o", capsize=3, label="humans (binned, 95% CI)")
    if np.isfinite(human["coef"]):
        scale = bias.length_scale(pairs)
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
    fig, ax = plt.subplots(figsize=(8, 5))
    data = report.dropna(subset=["two_class_waf", "len_balanced_acc"]).copy()
    data["label"] = [j if s == "-" else f"{j} ({s}, {i})" for j, s, i in
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
    for _, group in spots:
        ax.annotate(", ".join(group["label"]), (group["two_class_waf"].iloc[0], group["len_balanced_acc"].iloc[0]),
                    xytext=(5, 6), textcoords="offset points", fontsize=8)
    ax.set_ylim(0, 102)
    for level, text in ((50, "length alone"), (100, "oracle")):
        ax.axhline(level, color="grey", lw=0.8, ls="--")
        ax.annotate(text, (0.72, level), xycoords=("axes fraction", "data"), xytext=(0, -10),
                    textcoords="offset points", fontsize=8, color="grey", ha="right")
    if len(reported):
        ax.plot(reported["two_class_waf"], [2.0] * len(reported), marker="|", ls="none", ms=14, color="black",
                label=f"{REPORTED} (two-class WAF only)")
        last_x: list[float] = []  # per label level, the x of its rightmost label so far
        for row in reported.sort_values("two_class_waf").itertuples():
            level = next((k for k, x in enumerate(last_x) if row.two_class_waf - x > 1.3), len(last_x))
            last_x[level:level + 1] = [row.two_class_waf]
            ax.annotate(row.judge, (row.two_class_waf, 4.0 + 24.0 * level), rotation=90, fontsize=7,
                        va="bottom", ha="center")
    if human_bound is not None:
        ax.axvline(human_bound, color="tab:red", lw=0.8, ls=":", label=f"human consistency bound ({REPORTED})")
    ax.set_xlabel("two-class WAF (%)")
    ax.set_ylabel("length-balanced accuracy (%)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return save(fig, path)


def baselines_table(paper_metrics: pd.DataFrame, report: pd.DataFrame, reported: pd.DataFrame,
                    human_bound: float | None = None) -> pd.DataFrame:
    """Our text-only baselines (paper metrics + length-balanced accuracy) above the paper's
    reported judges, with a ``source`` column saying which is which."""
    keys = ["judge", "strategy", "input_type"]
    ours = paper_metrics[paper_metrics["judge"].isin(BASELINES)].merge(
        report[[*keys, "len_balanced_acc", "len_balanced_lo", "len_balanced_hi"]], on=keys, how="left")
    ours = ours.assign(source=OURS).sort_values("two_class_waf", ascending=False)
    theirs = reported.assign(source=REPORTED, input_type="", len_balanced_acc=np.nan)
    if human_bound is not None:
        theirs = pd.concat([theirs, pd.DataFrame([{"judge": "human consistency bound", "strategy": "",
                                                   "input_type": "", "two_class_waf": human_bound,
                                                   "source": REPORTED}])], ignore_index=True)
    columns = ["source", "judge", "strategy", "input_type", "two_class_waf", "two_class_waf_lo",
               "two_class_waf_hi", "swap_consistency", "len_balanced_acc", "len_balanced_lo", "len_balanced_hi"]
    table = pd.concat([ours, theirs.sort_values("two_class_waf", ascending=False)], ignore_index=True)
    return table.reindex(columns=columns).round(2)


def conclusion(report: pd.DataFrame, human: dict, pairs: pd.DataFrame, reported: pd.DataFrame,
               human_bound: float | None = None) -> str:
    """The chapter's conclusion in plain language, every number taken from the arguments."""
    by_judge = report[report["strategy"] == "-"].set_index("judge")
    strata = bias.length_strata(pairs)
    share = (strata == "concordant").sum() / strata.notna().sum()
    parts = [
        f"Annotators preferred the longer description in {100 * share:.1f}% of the decided pairs with "
        f"unequal lengths; a logistic model of their choice on the standardised log-length ratio "
        f"alone has a coefficient of {human['coef']:.2f} (95% CI {human['lo']:.2f}–{human['hi']:.2f}) "
        f"and a McFadden pseudo-R² of {human['pseudo_r2']:.2f}."
    ]
    if "length" in by_judge.index:
        length = by_judge.loc["length"]
        sentence = (f"Picking the longer text reaches a two-class WAF of {length['two_class_waf']:.1f}")
        if len(reported):
            best = reported.loc[reported["two_class_waf"].idxmax()]
            relation = "above" if length["two_class_waf"] > best["two_class_waf"] else "below"
            sentence += (f", {relation} the best MLLM {REPORTED} ({best['judge']}, "
                         f"{best['two_class_waf']:.2f})")
        if human_bound is not None:
            relation = "above" if length["two_class_waf"] > human_bound else "below"
            sentence += f" and {relation} the human consistency bound ({human_bound:.2f})"
        parts.append(sentence + f", yet its length-balanced accuracy is {length['len_balanced_acc']:.1f}.")
    judged = report[report["judge"] != "length"].dropna(subset=["len_balanced_acc"])
    if len(judged):
        top = judged.loc[judged["len_balanced_acc"].idxmax()]
        name = top["judge"] if top["strategy"] == "-" else f"{top['judge']} ({top['strategy']})"
        lo, hi = top["len_balanced_lo"], top["len_balanced_hi"]
        above = "clearly above" if lo > 50 else "not distinguishable from"
        parts.append(
            f"Once length is balanced, the best judge run here is {name} at {top['len_balanced_acc']:.1f} "
            f"(95% CI {lo:.1f}–{hi:.1f}; two-class WAF {top['two_class_waf']:.1f}), {above} the 50 that "
            f"length alone gives (an oracle scores 100).")
    if {"minilm_rm", "minilm_rm_nolen"} <= set(by_judge.index):
        rm, nolen = by_judge.loc["minilm_rm"], by_judge.loc["minilm_rm_nolen"]
        parts.append(
            f"A text-only reward model that never sees the video scores {rm['two_class_waf']:.1f} two-class WAF; "
            f"with length partialled out of its embeddings it falls to {nolen['two_class_waf']:.1f} "
            f"(length-balanced {nolen['len_balanced_acc']:.1f}).")
    dominant = share > 0.7
    if "length" in by_judge.index and len(reported):
        dominant = by_judge.loc["length", "two_class_waf"] > reported["two_class_waf"].max()
    verdict = ("So on these data a high two-class WAF mostly certifies a preference for the longer description; "
               "the length-balanced accuracy is the number that speaks to emotion understanding."
               if dominant else
               "Length does not dominate these labels: two-class WAF remains informative, with the "
               "length-balanced accuracy as a check.")
    parts.append(verdict)
    return " ".join(parts)


def baseline_metrics(predictions: pd.DataFrame, n_boot: int, seed: int) -> pd.DataFrame:
    """The paper's metrics (with bootstrap CIs) for every judge cell, for the tables here."""
    return metrics.metrics_table(predictions, n_boot=n_boot, seed=seed)
