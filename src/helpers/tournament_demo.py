"""The v1 tournament demonstration: four description systems whose true order is known.

v1 has human labels for two systems only, so a tournament built from it needs its answer key by
construction. From each v1 pair we take the MER-Caption+ and the MERR-Fine description and derive
two degraded systems:

- ``mercaptionplus_masked``: every emotion word (``params/emotion_words.yaml``) replaced by a
  placeholder of the same length — exactly as long, less emotional content;
- ``merrfine_half``: the first half of the words — shorter and less content.

So ``mercaptionplus > mercaptionplus_masked`` and ``merrfine > merrfine_half`` must hold. A judge
that reads emotional content recovers both; a judge that only counts characters recovers the
second and ties the first. :func:`judge_diagnosis` says which is which.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from helpers import paths
from helpers.data import DataError, load_pairs
from helpers.tournament import CELL, COLUMNS, comparison_id

V1_SYSTEMS = {
    "mercaptionplus": "MER-Caption+ descriptions as in v1",
    "mercaptionplus_masked": "MER-Caption+ with emotion words replaced by same-length placeholders",
    "merrfine": "MERR-Fine descriptions as in v1",
    "merrfine_half": "MERR-Fine truncated to its first half (in words)",
}
IMPLIED = (("mercaptionplus", "mercaptionplus_masked"), ("merrfine", "merrfine_half"))
"""Relations the construction implies: (better, worse). Masking keeps length and removes
emotional content; truncation removes content and length."""


@cache
def emotion_words() -> tuple[tuple[str, ...], str]:
    """The documented emotion-word list and placeholder of ``params/emotion_words.yaml``."""
    raw = yaml.safe_load((paths.params_dir() / "emotion_words.yaml").read_text(encoding="utf-8"))
    return tuple(raw["words"]), str(raw.get("placeholder", "_"))


def mask_emotion_words(text: str, words: Iterable[str] | None = None, placeholder: str | None = None) -> str:
    """Replace every whole-word, case-insensitive emotion word by ``placeholder`` × its length,
    so the text keeps its exact character length and loses its emotion labels."""
    default_words, default_placeholder = emotion_words()
    words = sorted(words or default_words, key=len, reverse=True)
    fill = placeholder or default_placeholder
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, words)) + r")\b", re.IGNORECASE)
    return pattern.sub(lambda m: fill * len(m.group(0)), text)


def truncate_half(text: str) -> str:
    """The first half of the words (at least one)."""
    words = text.split()
    return " ".join(words[: max(1, len(words) // 2)])


def v1_demo_entries(dataset: str = "emoprefer", data_dir: str | Path | None = None) -> pd.DataFrame:
    """The four-system tournament table built from v1: one sample per v1 pair, one description per
    system (see ``V1_SYSTEMS``); needs the with-modelnames file."""
    pairs = load_pairs(dataset, "normal", data_dir)
    if "model1" not in pairs.columns:
        raise DataError(f"dataset {dataset!r} has no writer columns (model1/model2): the demo needs them")
    rows = []
    for pair in pairs.itertuples(index=False):
        texts = {pair.model1: pair.a1, pair.model2: pair.a2}
        if set(texts) != {"mercaptionplus", "merrfine"}:
            continue
        mc, mf = texts["mercaptionplus"], texts["merrfine"]
        for system, text in (("mercaptionplus", mc), ("mercaptionplus_masked", mask_emotion_words(mc)),
                             ("merrfine", mf), ("merrfine_half", truncate_half(mf))):
            rows.append((pair.name, system, text))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def v1_human_comparisons(dataset: str = "emoprefer", data_dir: str | Path | None = None) -> pd.DataFrame:
    """The human v1 labels as tournament comparisons between mercaptionplus and merrfine."""
    pairs = load_pairs(dataset, "normal", data_dir)
    a_first = pairs["model1"] == "mercaptionplus"  # canonical order: mercaptionplus < merrfine
    winner = np.select(
        [pairs["preference"] == "same", (pairs["preference"] == "a1") == a_first], ["tie", "a"], "b"
    )
    return pd.DataFrame({
        "comparison": [comparison_id(n, "mercaptionplus", "merrfine") for n in pairs["name"]],
        "name": pairs["name"], "system_a": "mercaptionplus", "system_b": "merrfine", "winner": winner,
    })


def implied_order_check(board: pd.DataFrame, implied: Sequence[tuple[str, str]] = IMPLIED) -> pd.DataFrame:
    """For every judge cell and method, whether each implied relation (better, worse) is
    recovered: ``separated`` (better's lower bound above worse's upper bound), ``same direction``
    (ratings ordered right, intervals overlap), or ``reversed``/``tied``."""
    rows = []
    for keys, group in board.groupby([*CELL, "method"], sort=True):
        r = group.set_index("system")
        for better, worse in implied:
            if better not in r.index or worse not in r.index:
                continue
            diff = r.at[better, "log_strength"] - r.at[worse, "log_strength"]
            if r.at[better, "log_strength_lo"] > r.at[worse, "log_strength_hi"]:
                verdict = "separated"
            elif diff > 1e-6:
                verdict = "same direction"
            elif diff < -1e-6:
                verdict = "reversed"
            else:
                verdict = "tied"
            rows.append({**dict(zip([*CELL, "method"], keys, strict=True)), "relation": f"{better} > {worse}",
                         "log_strength_diff": diff, "verdict": verdict})
    return pd.DataFrame(rows)


def judge_diagnosis(check: pd.DataFrame, coefficients: pd.DataFrame) -> pd.DataFrame:
    """One line per judge cell from the plain leaderboard's implied-order check and the length
    coefficient: ``recovers the construction`` (both relations separated), ``follows length``
    (separates the truncated system, which is shorter, but not the masked one, which is as long
    as the original, and prefers longer texts beyond system identity or ties them), or
    ``recovers neither``."""
    plain = check[check["method"] == "plain"]
    rows = []
    for cell, group in plain.groupby(CELL, sort=True):
        verdicts = dict(zip(group["relation"], group["verdict"], strict=True))
        masked = verdicts.get(f"{IMPLIED[0][0]} > {IMPLIED[0][1]}")
        truncated = verdicts.get(f"{IMPLIED[1][0]} > {IMPLIED[1][1]}")
        coef = coefficients.set_index(CELL).loc[cell] if len(coefficients) else None
        if masked == "separated" and truncated == "separated":
            diagnosis = "recovers the construction"
        elif truncated == "separated" and masked in ("tied", "same direction"):
            diagnosis = "follows length"
        else:
            diagnosis = "recovers neither"
        rows.append({**dict(zip(CELL, cell, strict=True)), "masked_relation": masked, "truncated_relation": truncated,
                     "length_coef": None if coef is None else float(coef["coef"]),
                     "length_coef_lo": None if coef is None else float(coef["coef_lo"]),
                     "length_coef_hi": None if coef is None else float(coef["coef_hi"]), "diagnosis": diagnosis})
    return pd.DataFrame(rows)
