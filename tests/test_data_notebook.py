"""The data-audit notebook runs under papermill and states the numbers it computes."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pandas as pd
import papermill as pm
import pytest
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
REAL = Path(os.environ.get("EMOPREFER_DATA", ROOT.parent / "shared" / "data" / "emoprefer"))


@pytest.mark.slow
@pytest.mark.skipif(not (REAL / "preference_emoprefer.csv").is_file(), reason=f"v1 files not found in {REAL}")
def test_data_audit_notebook_on_v1(tmp_path):
    out = tmp_path / "00_data.ipynb"
    pm.execute_notebook(
        ROOT / "notebooks" / "00_data.ipynb", out, cwd=ROOT / "notebooks", progress_bar=False,
        parameters={"data_dir": str(REAL), "reports_dir": str(tmp_path)},
    )
    rates = pd.read_csv(tmp_path / "tables" / "data_confound.csv").set_index("quantity")
    longer = rates.loc["longer description preferred"]
    # 448 of the 563 decided pairs went to the longer text (counted independently below)
    assert longer["pairs"] == 563 and longer["count"] == 448
    lo, hi = stats.binomtest(448, 563).proportion_ci(method="wilson")  # the one interval of a share
    assert (longer["ci_low"], longer["ci_high"]) == (pytest.approx(100 * lo), pytest.approx(100 * hi))
    assert (tmp_path / "figures" / "data_lengths.png").stat().st_size > 1000
    assert nbformat.read(out, as_version=4).cells  # executed copy written


def test_longer_text_share_matches_an_independent_count():
    if not (REAL / "preference_emoprefer.csv").is_file():
        pytest.skip(f"v1 files not found in {REAL}")
    from helpers import data
    from helpers.stats import confound

    raw = pd.read_csv(REAL / "preference_emoprefer.csv", keep_default_na=False)
    decided = raw[raw["preference"] != "same"]
    l1, l2 = decided["a1"].str.len(), decided["a2"].str.len()
    longer = ((decided["preference"] == "a1") & (l1 > l2)) | ((decided["preference"] == "a2") & (l2 > l1))
    expected = 100 * longer.sum() / (l1 != l2).sum()
    got = confound.preference_rates(data.load_pairs(data_dir=REAL)).set_index("quantity")
    assert got.loc["longer description preferred", "percent"] == pytest.approx(expected)
    assert 79 < expected < 80.5
