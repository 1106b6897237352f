"""Judges that need no model: the baselines every MLLM judge must beat.

``length`` is the confound baseline (annotators of v1 preferred the longer description far
more often than not), ``random`` is chance, ``always_a1`` is pure position bias.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from helpers.digest import sha256_hex
from helpers.judges.base import PairJudge


class LengthJudge(PairJudge):
    """The longer description in characters wins; equal lengths -> ``same``."""

    def predict(self, pairs: pd.DataFrame, *, seed: int = 0) -> pd.Series:
        n1 = pairs["a1"].astype(str).str.len()
        n2 = pairs["a2"].astype(str).str.len()
        labels = np.where(n1 > n2, "a1", np.where(n2 > n1, "a2", "same"))
        return pd.Series(labels, index=pairs.index, name="pred")


class RandomJudge(PairJudge):
    """``a1`` or ``a2`` with equal probability, drawn per pair from a hash of the seed and the
    two texts: reproducible, independent across rounds (new seed) and across orders (the
    swapped pair hashes differently; one shared stream would make the reverse order mirror
    the normal one and fake a swap consistency of 0)."""

    def predict(self, pairs: pd.DataFrame, *, seed: int = 0) -> pd.Series:
        def draw(a1: str, a2: str) -> str:
            first_byte = int(sha256_hex(f"{seed}\x00{a1}\x00{a2}")[:2], 16)
            return "a1" if first_byte % 2 == 0 else "a2"

        labels = [draw(str(a1), str(a2)) for a1, a2 in zip(pairs["a1"], pairs["a2"], strict=True)]
        return pd.Series(labels, index=pairs.index, name="pred")


class AlwaysA1Judge(PairJudge):
    """Always the first description, whatever it says."""

    def predict(self, pairs: pd.DataFrame, *, seed: int = 0) -> pd.Series:
        return pd.Series("a1", index=pairs.index, name="pred")
