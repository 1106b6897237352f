"""Descriptive audit of a preference dataset: sizes, labels, lengths, and who wins.

The data audit is the study's first surprise on v1: humans mostly prefer the longer
description, and one writing model nearly always writes the longer one. These functions
measure that from the pairs alone (no judge involved), with bootstrap CIs over pairs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from helpers.data import LABELS
from helpers.stats.bias import length_strata, longer_label

MODEL_NAMES = {"mercaptionplus": "MER-Caption+", "merrfine": "MERR-Fine"}


def label_counts(pairs: pd.DataFrame) -> pd.DataFrame:
    """Counts and shares of a1 / a2 / same."""
    counts = pairs["preference"].value_counts().reindex(LABELS, fill_value=0)
    return pd.DataFrame({"label": counts.index, "pairs": counts.to_numpy(), "percent": 100 * counts.to_numpy() / len(pairs)})


def description_lengths(pairs: pd.DataFrame) -> pd.DataFrame:
    """One row per description: pair name, slot (a1/a2), writing model, characters and words."""
    frames = []
    for slot, model_col in (("a1", "model1"), ("a2", "model2")):
        text = pairs[slot].astype(str)
        frames.append(
            pd.DataFrame(
                {
                    "name": pairs["name"],
                    "slot": slot,
                    "model": pairs[model_col].map(lambda m: MODEL_NAMES.get(m, m)) if model_col in pairs else "unknown",
                    "characters": text.str.len(),
                    "words": text.str.split().str.len(),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def length_summary(pairs: pd.DataFrame) -> pd.DataFrame:
    """Median and mean characters and words per writing model."""
    lengths = description_lengths(pairs)
    return (
        lengths.groupby("model")[["characters", "words"]]
        .agg(["count", "median", "mean"])
        .round(1)
    )


def _bootstrap_share(flags: np.ndarray, n_boot: int, seed: int) -> tuple[float, float, float]:
    """Share of True (percent) with a 95% percentile bootstrap CI, resampling pairs."""
    flags = np.asarray(flags, dtype=float)
    if flags.size == 0:
        return (np.nan, np.nan, np.nan)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, flags.size, size=(n_boot, flags.size))
    shares = flags[draws].mean(axis=1)
    lo, hi = np.percentile(shares, [2.5, 97.5])
    return 100 * flags.mean(), 100 * lo, 100 * hi


def preference_rates(pairs: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """How often, among decided pairs, humans preferred the longer text and each writing model.

    Pairs whose two texts have equal length are left out of the "longer" row, since no
    description is longer there; the count of pairs behind each row is reported.
    """
    strata = length_strata(pairs).dropna()  # decided pairs of unequal length
    rows = [("longer description preferred", (strata == "concordant").to_numpy())]
    if {"model1", "model2"} <= set(pairs.columns):
        models = sorted(set(pairs["model1"]) | set(pairs["model2"]))
        decided = pairs[pairs["preference"] != "same"]
        mixed = (decided["model1"] != decided["model2"]).to_numpy()
        winner = np.where(decided["preference"] == "a1", decided["model1"], decided["model2"])
        for model in models:
            rows.append((f"{MODEL_NAMES.get(model, model)} preferred", (winner == model)[mixed]))
        # over all pairs (decided or not): who writes the longer text
        longer = longer_label(pairs)
        keep = ((longer != "same") & (pairs["model1"] != pairs["model2"])).to_numpy()
        writer_of_longer = np.where(longer == "a1", pairs["model1"], pairs["model2"])[keep]
        for model in models:
            rows.append((f"{MODEL_NAMES.get(model, model)} wrote the longer text (all pairs)", writer_of_longer == model))
    table = []
    for i, (what, flags) in enumerate(rows):
        share, lo, hi = _bootstrap_share(flags, n_boot, seed + i)
        table.append({"quantity": what, "percent": share, "ci_low": lo, "ci_high": hi, "pairs": int(len(flags))})
    return pd.DataFrame(table)
