"""What the report's framing chapters say (helpers.report.chapters, notebook 09): computed numbers, judges run or not,
limitations derived from what is missing, provenance."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
import yaml
from synthetic import synthetic_predictions, write_predictions

from helpers import paths
from helpers.report import chapters
from helpers.report.setup import setup
from helpers.reported import PaperResults
from helpers.run import provenance

REGISTRY = pd.DataFrame([
    {"judge": "length", "family": "cpu", "backend": "cpu", "checkpoint": "", "input_type": "text", "api_key_env": ""},
    {"judge": "random", "family": "cpu", "backend": "cpu", "checkpoint": "", "input_type": "text", "api_key_env": ""},
    {"judge": "qwen25omni", "family": "qwen25omni", "backend": "local", "checkpoint": "Qwen/Qwen2.5-Omni-7B",
     "input_type": "audiovideo", "api_key_env": ""},
    {"judge": "gpt4o", "family": "openai", "backend": "openai", "checkpoint": "gpt-4o", "input_type": "video",
     "api_key_env": "OPENAI_API_KEY"},
])
PAPER = PaperResults.from_mapping({
    "human_agreement": {"two_class": 69.31, "with_ties": 59.23},
    "judges": [{"judge": "Qwen2.5-Omni", "strategy": "S2", "two_class_waf": 67.21, "two_class_acc": 67.32,
                "swap_consistency": 79.09},
               {"judge": "GPT-4o", "strategy": "S1", "two_class_waf": 59.28, "two_class_acc": 59.41,
                "swap_consistency": 64.55}]})


def metrics_row(judge, strategy, waf, lo, hi, input_type="text"):
    return {"judge": judge, "strategy": strategy, "input_type": input_type, "two_class_waf": waf,
            "two_class_waf_lo": lo, "two_class_waf_hi": hi}


def context(tmp_path: Path, judges=("length", "random"), metrics=None, paper=PAPER, **extra) -> chapters.Context:
    predictions = synthetic_predictions(n_pairs=20, judges={j: 0.6 for j in judges}, rounds=2)
    return chapters.Context(
        dataset="emoprefer", reports_dir=tmp_path, predictions_dir=tmp_path, registry=REGISTRY,
        overview=chapters.runs_overview(predictions), metrics=metrics, paper=paper, prompts=None, manifests=[],
        **extra,
    )


def test_the_inference_command_is_the_one_users_run_on_a_gpu_machine():
    assert chapters.infer_command("qwen25omni") == (
        "papermill notebooks/01_infer.ipynb out.ipynb -p model qwen25omni -p strategy all -p media_dir /path/to/mer2025")


def test_the_judges_table_says_which_judges_ran_here_and_which_did_not(tmp_path):
    table = chapters.judges_table(context(tmp_path)).set_index("judge")
    assert table.loc["length", "status"] == "ran: 2 rounds, 20 pairs"
    assert table.loc["qwen25omni", "status"] == "registered, not run here"
    assert table.loc["qwen25omni", "runs on"] == "GPU" and table.loc["gpt4o", "runs on"] == "API"


def test_the_build_table_says_what_this_build_holds_and_lacks(tmp_path):
    build = chapters.build_table(context(tmp_path, missing_notebooks=["06_confound"]), data_dir=tmp_path)
    status = build.set_index("key")["status"]
    assert status["judges_run"] == "Longer-text rule, Random" and status["cpu_judges"] == "2"
    assert status["model_judges_run"] == "none" and status["model_judges_missing"] == "qwen25omni, gpt4o"
    assert status["v2"] == "absent" and status["notebooks"] == "06_confound" and status["metrics"] == "missing"
    assert status["infer_command"] == chapters.infer_command("qwen25omni") and status["rounds"] == "2"
    ran_all = context(tmp_path, judges=("length", "qwen25omni", "gpt4o"), metrics=pd.DataFrame())
    status = chapters.build_table(ran_all, data_dir=tmp_path).set_index("key")["status"]
    assert status["model_judges_missing"] == "none" and status["metrics"] == "written"


def test_prompts_are_shown_byte_for_byte_from_params():
    prompts = yaml.safe_load((paths.params_dir() / "prompts.yaml").read_text(encoding="utf-8"))
    text = chapters.prompts_markdown(prompts)
    for key in ("S1", "S2_judge", "S4_reason", "S4_extract"):
        assert f"```text\n{prompts[key]}\n```" in text


def test_runs_are_listed_from_the_store_with_their_manifests(tmp_path):
    table = synthetic_predictions(n_pairs=5, judges={"length": 0.6}, rounds=1)
    write_predictions(table, tmp_path, "length__cpu__text__emoprefer")
    manifest = {"judge": "length", "strategy": "-", "rounds": 1, "calls_total": {"judge": 4, "describe": 2},
                "created": "2026-01-01T00:00:00+00:00", "git_revision": "0123456789abcdef"}
    (tmp_path / "length__cpu__text__emoprefer" / "manifest.json").write_text(json.dumps(manifest))
    ctx = context(tmp_path)
    ctx.manifests = chapters.read_manifests(tmp_path)
    run = chapters.runs_table(ctx).iloc[0]
    (tmp_path / "tournaments").mkdir()  # not a run: no predictions
    ctx.manifests = chapters.read_manifests(tmp_path)
    assert len(ctx.manifests) == 1
    assert (run["run"], run["rows"], run["rounds"]) == ("length__cpu__text__emoprefer", 10, 1)
    assert (run["model calls"], run["created"], run["git"]) == (6, "2026-01-01T00:00:00", "0123456789")
    assert run["status"] == "—"  # absent from this manifest: shown as absent, not guessed
    assert "Manifest of run <code>length__cpu__text__emoprefer</code>" in chapters.manifests_html(ctx)


def test_outside_a_git_checkout_the_revision_says_so(tmp_path):
    assert provenance.revision_note(tmp_path).startswith("no git commit")


@pytest.mark.skipif(not os.environ.get("EMOPREFER_DATA"), reason="EMOPREFER_DATA not set")
def test_the_data_table_lists_each_file_hash_against_the_pinned_one(tmp_path):
    ctx = chapters.collect(setup(predictions_dir=tmp_path / "none", reports_dir=tmp_path, predictions=False))
    table = chapters.data_table(ctx).set_index("file")
    assert table.loc["preference_emoprefer.csv", "pinned"] == "matches"
    assert len(table.loc["preference_emoprefer.csv", "sha256"]) == 64
