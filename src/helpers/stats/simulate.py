"""Synthetic judges and comparisons with known properties, for tests and simulations.

A simulated judge is a mixture, per pair and round, of two behaviours:

- with probability ``1 - s`` it is *position-biased*: it answers ``a1`` (the description shown
  first) in whichever order it sees the pair, so its normal and reverse answers disagree once
  mapped back;
- otherwise it *reads the content*: it gives one verdict about the two descriptions, the same in
  both orders, right with probability ``p_c``.

With ``p_c = (p - (1 - s) / 2) / s`` the two-class accuracy is ``p`` in each order (position
bias is right half the time when truths fall evenly on both sides) and the swap consistency is
``s``, which is what the paper measures. ``p <= (1 + s) / 2`` is therefore required. Rounds are
independent draws, so round consistency falls below 1 as a real sampled judge's does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from helpers.data import swap_label

CREATED_AT = "2026-01-01T00:00:00+00:00"


def content_accuracy(accuracy: float, swap_consistency: float) -> float:
    """Accuracy of the content-reading behaviour that yields ``accuracy`` overall."""
    if not 0 < swap_consistency <= 1:
        raise ValueError(f"swap consistency must be in (0, 1], got {swap_consistency}")
    p_c = (accuracy - (1 - swap_consistency) / 2) / swap_consistency
    if not 0 <= p_c <= 1:
        raise ValueError(
            f"accuracy {accuracy} and swap consistency {swap_consistency} are incompatible: "
            f"a judge this inconsistent is right about half the time when biased, so need "
            f"(1 - s)/2 <= p <= (1 + s)/2"
        )
    return p_c


def synthetic_pairs(n_pairs: int, seed: int = 0, same_rate: float = 0.02) -> pd.DataFrame:
    """``name, preference`` for ``n_pairs`` made-up samples (names ``syn_00000``...)."""
    rng = np.random.default_rng(seed)
    prefs = rng.choice(["a1", "a2", "same"], size=n_pairs, p=[(1 - same_rate) / 2, (1 - same_rate) / 2, same_rate])
    return pd.DataFrame({"name": [f"syn_{i:05d}" for i in range(n_pairs)], "preference": prefs})


def _judge_labels(gt: np.ndarray, p: float, s: float, same_rate: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One round of one judge: labels in the normal frame for both orders."""
    n = len(gt)
    p_c = content_accuracy(p, s)
    biased = rng.random(n) > s
    right = rng.random(n) < p_c
    coin = np.where(rng.random(n) < 0.5, "a1", "a2")
    wrong = np.array([swap_label(g) for g in gt], dtype=object)
    content = np.where(gt == "same", coin, np.where(right, gt, wrong))
    says_same = rng.random(n) < same_rate
    content = np.where(says_same, "same", content)
    normal = np.where(biased, "a1", content)  # biased: first-shown description, a1 in normal
    reverse_in_normal_frame = np.where(biased, "a2", content)  # reverse a1 is normal a2
    return {"normal": normal, "reverse": reverse_in_normal_frame}


def synthetic_predictions(
    pairs: pd.DataFrame | None = None,
    n_pairs: int = 100,
    judges: Mapping[str, float | Mapping[str, float]] | None = None,
    strategies: Sequence[str] = ("-",),
    rounds: int = 2,
    orders: Sequence[str] = ("normal", "reverse"),
    swap_consistency: float | Mapping[str, float] = 0.8,
    input_type: str = "text",
    same_rate: float = 0.02,
    seed: int = 0,
) -> pd.DataFrame:
    """A predictions table in the store's schema from simulated judges.

    ``pairs``: a normal-order table with ``name, preference`` (e.g. ``load_pairs()``); without
    it ``n_pairs`` synthetic pairs are made. ``judges`` maps a judge name to its two-class
    accuracy, or to ``{strategy: accuracy}`` to give strategies different accuracies (then
    ``strategies`` is ignored for that judge). ``swap_consistency``: one value or one per judge.
    ``same_rate``: how often a judge answers ``same``. ``gt``/``pred`` are in each order's own
    frame, as the store writes them.
    """
    judges = judges or {"judge_a": 0.7, "judge_b": 0.6}
    pairs = pairs if pairs is not None else synthetic_pairs(n_pairs, seed)
    gt = pairs["preference"].to_numpy(dtype=object)
    names = pairs["name"].astype(str).to_numpy()
    rng = np.random.default_rng([seed, 1])  # a stream independent of the one synthetic_pairs used
    frames = []
    for judge, spec in judges.items():
        per_strategy = dict(spec) if isinstance(spec, Mapping) else {s: float(spec) for s in strategies}
        s = swap_consistency[judge] if isinstance(swap_consistency, Mapping) else swap_consistency
        for strategy, accuracy in per_strategy.items():
            for rnd in range(rounds):
                labels = _judge_labels(gt, accuracy, s, same_rate, rng)
                for order in orders:
                    flip = order == "reverse"
                    pred = labels[order]
                    frames.append(pd.DataFrame({
                        "judge": judge, "strategy": strategy, "input_type": input_type, "order": order,
                        "round": rnd, "name": names,
                        "gt": [swap_label(g) for g in gt] if flip else gt,
                        "pred": [swap_label(x) for x in pred] if flip else pred,
                    }))
    table = pd.concat(frames, ignore_index=True)
    table["parse_rule"] = "synthetic"
    table["raw"] = table["pred"]
    table["latency_s"] = 0.0
    table["created_at"] = CREATED_AT
    table["run_id"] = "synthetic"
    table["round"] = table["round"].astype(int)
    return table


def write_predictions(table: pd.DataFrame, root, run_id: str = "synthetic") -> None:
    """Write a table as ``<root>/<run_id>/predictions.jsonl`` (the store's layout)."""
    from pathlib import Path

    folder = Path(root) / run_id
    folder.mkdir(parents=True, exist_ok=True)
    table.to_json(folder / "predictions.jsonl", orient="records", lines=True)


# --------------------------------------------------------------------------- comparisons


def bt_probability(strengths: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """P(i beats j) under Bradley-Terry with log-strengths."""
    return 1.0 / (1.0 + np.exp(strengths[j] - strengths[i]))


def random_matchups(n_systems: int, n: int, rng: np.random.Generator, size: tuple[int, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uniformly random pairs of distinct systems (per leading ``size``)."""
    i = rng.integers(0, n_systems, size=size + (n,))
    j = (i + rng.integers(1, n_systems, size=size + (n,))) % n_systems
    return i, j


def synthetic_comparisons(
    strengths: Mapping[str, float] | Sequence[float],
    n_comparisons: int,
    tie_rate: float = 0.0,
    seed: int = 0,
) -> pd.DataFrame:
    """``system_a, system_b, winner`` drawn from Bradley-Terry with the given log-strengths
    (a mapping name -> strength, or a list named ``s00, s01...``); a share ``tie_rate`` of
    comparisons is replaced by ties, which carry no information about the order."""
    if not isinstance(strengths, Mapping):
        strengths = {f"s{k:02d}": float(v) for k, v in enumerate(strengths)}
    names = np.array(list(strengths), dtype=object)
    theta = np.array(list(strengths.values()), dtype=float)
    rng = np.random.default_rng(seed)
    i, j = random_matchups(len(names), n_comparisons, rng)
    a_wins = rng.random(n_comparisons) < bt_probability(theta, i, j)
    winner = np.where(a_wins, "a", "b").astype(object)
    winner[rng.random(n_comparisons) < tie_rate] = "tie"
    return pd.DataFrame({"system_a": names[i], "system_b": names[j], "winner": winner})
