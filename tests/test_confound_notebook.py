"""notebooks/06_confound.ipynb runs end to end under papermill on a small synthetic dataset."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from synthetic import write_predictions

from helpers import paths
from helpers.data import dataset_spec, swap_pairs
from helpers.stats import confound

pytestmark = pytest.mark.slow


def write_dataset(folder, n: int = 60, seed: int = 0) -> pd.DataFrame:
    """A v1-shaped dataset: system 'long' writes longer texts and humans prefer it 75% of the time."""
    rng = np.random.default_rng(seed)
    long_first = rng.random(n) < 0.5
    long_wins = rng.random(n) < 0.75
    texts_long = ["calm and warm " * int(k) for k in rng.integers(20, 40, n)]
    texts_short = ["tense " * int(k) for k in rng.integers(5, 15, n)]
    pairs = pd.DataFrame({
        "name": [f"sample_{i:03d}" for i in range(n)],
        "a1": np.where(long_first, texts_long, texts_short), "a2": np.where(long_first, texts_short, texts_long),
        "model1": np.where(long_first, "long", "short"), "model2": np.where(long_first, "short", "long"),
        "preference": np.where(long_wins == long_first, "a1", "a2"),
    })
    pairs.loc[0, "preference"] = "same"
    files = dataset_spec("emoprefer").files
    folder.mkdir(parents=True)
    pairs[["name", "a1", "a2", "preference"]].to_csv(folder / files["normal"], index=False)
    swap_pairs(pairs)[["name", "a1", "a2", "preference"]].to_csv(folder / files["reverse"], index=False)
    pairs[["name", "model1", "a1", "model2", "a2", "preference"]].to_csv(folder / files["modelnames"], index=False)
    return pairs


def predictions_for(pairs: pd.DataFrame) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    judges = {
        "length": confound.longer_label(pairs).to_numpy(),
        "random": rng.choice(["a1", "a2"], len(pairs)),
        "toy_mllm": np.where(rng.random(len(pairs)) < 0.7, pairs["preference"].replace({"same": "a1"}), "a2"),
    }
    rows = []
    for judge, pred in judges.items():
        for order in ("normal", "reverse"):
            flip = order == "reverse"
            gt = pairs["preference"].map(lambda x: {"a1": "a2", "a2": "a1"}.get(x, x)) if flip else pairs["preference"]
            labels = pd.Series(pred).map(lambda x: {"a1": "a2", "a2": "a1"}.get(x, x)) if flip else pd.Series(pred)
            rows.append(pd.DataFrame({"judge": judge, "strategy": "S1" if judge == "toy_mllm" else "-",
                                      "input_type": "video" if judge == "toy_mllm" else "text", "order": order,
                                      "round": 0, "name": pairs["name"], "gt": gt.to_numpy(), "pred": labels.to_numpy()}))
    table = pd.concat(rows, ignore_index=True)
    return table.assign(parse_rule="test", raw=table["pred"], latency_s=0.0, created_at="2026-01-01", run_id="test")


def test_confound_notebook_runs_and_writes_its_outputs(tmp_path):
    papermill = pytest.importorskip("papermill")
    pairs = write_dataset(tmp_path / "data")
    write_predictions(predictions_for(pairs), tmp_path / "store", "test")
    out = tmp_path / "executed.ipynb"
    papermill.execute_notebook(
        str(paths.project_root() / "notebooks" / "06_confound.ipynb"), str(out),
        parameters={"predictions_dir": str(tmp_path / "store"), "reports_dir": str(tmp_path / "reports"),
                    "data_dir": str(tmp_path / "data"), "n_boot": 50, "seed": 0},
        cwd=str(paths.project_root() / "notebooks"), progress_bar=False, kernel_name="python3",
    )
    tables, figures = tmp_path / "reports" / "tables", tmp_path / "reports" / "figures"
    for name in ("confound_length", "confound_baselines", "confound_human_glm", "confound_writers"):
        assert (tables / f"{name}.csv").is_file(), name
    for name in ("confound_lengths", "confound_curve", "confound_plane"):
        assert (figures / f"{name}.png").stat().st_size > 0, name
    length = pd.read_csv(tables / "confound_length.csv").set_index("judge")
    assert length.loc["length", "len_balanced_acc"] == 50
    baselines = pd.read_csv(tables / "confound_baselines.csv")
    assert {"this study", "reported by the paper"} <= set(baselines["source"])
    assert "toy_mllm" not in set(baselines["judge"])
    cells = json.loads(out.read_text())["cells"]
    labels = [line.split(":", 1)[1].strip() for c in cells if c["cell_type"] == "code"
              for line in "".join(c["source"]).splitlines() if line.startswith("#| label:")]
    assert labels == ["fig-confound-lengths", "tbl-confound-writers", "fig-confound-curve", "tbl-confound-human",
                      "tbl-confound-judges", "fig-confound-plane", "tbl-confound-baselines", "tbl-confound-shorter",
                      "txt-confound-examples"]
    shorter = pd.read_csv(tables / "confound_shorter.csv")
    assert set(shorter["stratum"]) == {"shorter preferred", "longer preferred"}
    assert shorter.groupby("stratum")["pairs"].first().sum() == confound.length_strata(pairs).notna().sum()
