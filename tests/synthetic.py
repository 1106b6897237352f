"""Fixtures shared by the tests (and the Bradley–Terry benchmark): independent reference fits
and synthetic tables in the store's schema. Test-only code, kept out of ``src/helpers``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.data import swap_label
from helpers.stats.simulate import content_accuracy

CREATED_AT = "2026-01-01T00:00:00+00:00"


def statsmodels_strengths(comparisons: pd.DataFrame, systems: Sequence[str], reference: str) -> np.ndarray:
    """Bradley–Terry as a statsmodels ``Logit`` (y = 1 if a wins, 0.5 for a tie; design +1 for
    a, -1 for b, reference column dropped): the independent check for ``helpers.stats.bt``."""
    import statsmodels.api as sm

    index = {s: k for k, s in enumerate(systems)}
    n, m = len(comparisons), len(systems)
    design = np.zeros((n, m))
    design[np.arange(n), comparisons["system_a"].map(index).to_numpy()] += 1
    design[np.arange(n), comparisons["system_b"].map(index).to_numpy()] -= 1
    keep = [k for k in range(m) if k != index[reference]]
    y = comparisons["winner"].map({"a": 1.0, "b": 0.0, "tie": 0.5}).to_numpy()
    fit = sm.Logit(y, design[:, keep]).fit(disp=0, method="newton", tol=1e-12, maxiter=100)
    theta = np.zeros(m)
    theta[keep] = fit.params
    return theta


# --------------------------------------------------------------------------- synthetic predictions


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
    folder = Path(root) / run_id
    folder.mkdir(parents=True, exist_ok=True)
    table.to_json(folder / "predictions.jsonl", orient="records", lines=True)
