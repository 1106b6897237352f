"""benchmarks/gpu_check.py --weights: a decision-ready check (issue 29, item 3), exercised on the CPU with
tiny hub-shaped checkpoints (its rates there estimate nothing; the code path to the estimate is what is tested)."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
from tiny_models import build_omni_thinker, build_text_lm

ROOT = Path(__file__).resolve().parents[1]


def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_help_documents_weights(capsys):
    with pytest.raises(SystemExit) as stop:
        gpu_check().main(["--help"])
    assert stop.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--weights DIR" in text and "GPU-hours" in text and "not estimates" in text


def test_without_cuda_weights_is_skipped_with_exit_0_saying_what(tmp_path, capsys):
    module = gpu_check()
    if module.cuda_ready()[0]:
        pytest.skip("a CUDA GPU is present")
    assert module.main(["--weights", str(tmp_path), "--out", str(tmp_path / "g.json")]) == 0
    assert "skipped the --weights check" in capsys.readouterr().out
    assert json.loads((tmp_path / "g.json").read_text())["status"] == "skipped: no CUDA (--weights)"


@pytest.mark.slow
@pytest.mark.usefixtures("offline")
def test_weights_on_tiny_hub_checkpoints_reaches_the_gpu_hours_of_both_grids(tmp_path):
    data = os.environ.get("EMOPREFER_DATA")
    if not data or not Path(data).is_dir():
        pytest.skip("EMOPREFER_DATA: the check times real v1 pairs")
    module = gpu_check()
    if module.cuda_ready()[0]:
        pytest.skip("a CUDA GPU is present: run the check itself")
    weights = tmp_path / "weights"
    build_text_lm(weights / "Qwen" / "Qwen2.5-7B-Instruct")  # the Org/Name layout
    build_omni_thinker(weights / "models--Qwen--Qwen2.5-Omni-7B" / "snapshots" / "0123abc")  # the HF cache layout
    out = tmp_path / "gpu_check.json"
    assert module.main(["--weights", str(weights), "--allow-cpu", "--out", str(out), "--data-dir", data]) == 0
    figures = json.loads(out.read_text())
    assert figures["present"] == ["qwen25", "qwen25omni"]
    assert any(a.startswith("qwen3omni") for a in figures["absent"])
    for name in figures["present"]:
        result = figures["judges"][name]["transformers"]
        assert result["pairs"] == 32 and result["pairs_per_s"] > 0 and result["load_s"] > 0, name
        assert result["mean_output_tokens"] > 0 and result["peak_gib"] > 0, name
    assert figures["vllm_after_transformers"].startswith("skipped")
    rate = {n: figures["judges"][n]["transformers"]["pairs_per_s"] for n in figures["present"]}
    paper = figures["gpu_hours"]["grid_paper.yaml"]
    rows = 2 * 2 * paper["pairs"]  # orders x rounds x pairs
    # by hand: qwen25omni S1 1 + S2 2 + S3 1 + S4 1 calls per row; qwen25 S3 1 + S4 2 for each of 4 judges
    expected = (5 * rows / rate["qwen25omni"] + 4 * 3 * rows / rate["qwen25"]) / 3600
    assert paper["gpu_hours"] is None and paper["gpu_hours_measured_judges"] == pytest.approx(expected, abs=1e-3)
    assert sorted(paper["judges_not_measured"]) == ["llavanextvideo", "qwen25vl", "qwen2audio"]
    assert set(figures["gpu_hours"]) == {"grid_paper.yaml", "grid_2026.yaml"}
    summary = out.with_suffix(".md").read_text()
    assert "grid_paper.yaml" in summary and "qwen25omni | transformers" in summary
