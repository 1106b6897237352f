"""Fixtures shared by the tests (and the Bradley–Terry benchmark): independent reference fits
and synthetic tables in the store's schema. Test-only code, kept out of ``src/helpers``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


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
