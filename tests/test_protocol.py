"""The protocol card: every model judge's settings from its YAML beside the paper's code, each
difference named (issue 12), and notebook 08 that shows it in the report."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from helpers import paths
from helpers.report.protocol import protocol_card

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "08_protocol.ipynb"


def test_the_card_has_every_model_judge_and_no_cpu_baseline():
    card = protocol_card().set_index("judge")
    assert {"qwen25omni", "qwen25vl", "qwen2audio", "llavanextvideo", "qwen25", "gpt4o", "gpt41",
            "gemini15flash"} <= set(card.index)
    assert "length" not in card.index and "random" not in card.index


def test_the_open_judges_send_exactly_the_papers_settings():
    card = protocol_card().set_index("judge")
    for name in ("qwen25omni", "qwen25vl", "qwen2audio", "llavanextvideo", "qwen25"):
        assert card.loc[name, "differences"] == "none", (name, card.loc[name, "differences"])
    assert card.loc["qwen25vl", "media"] == "frames at fps 1, <= 151200 px/frame"
    assert card.loc["qwen25omni", "decoding"] == "greedy, rep 1, 1024 tokens"
    assert card.loc["qwen2audio", "decoding"] == "sample T=0.7 top_p=0.5 top_k=20 rep 1.1, 512 tokens"
    assert card.loc["qwen25omni_3b", "differences"] == "not in the paper"


def test_the_closed_models_name_their_served_stand_ins():
    card = protocol_card().set_index("judge")
    assert "model: 'gemini-3.5-flash-lite' (paper 'models/gemini-1.5-flash-latest')" in card.loc["gemini15flash",
                                                                                                   "differences"]
    assert "model: 'gpt-4o-2024-08-06' (paper 'gpt-4o')" in card.loc["gpt4o", "differences"]
    assert card.loc["gpt4o", "media"] == card.loc["gpt4o", "paper_media"] == "3 frames (1 fps for clips <= 3 s), text first"
    for name in ("gpt4o", "gpt41"):  # the paper's GPT wrapper called the Responses API; ours, chat completions
        assert ("api: 'chat completions (image_url parts)' (paper 'responses (input_image parts)')"
                in card.loc[name, "differences"])
        assert "seed" not in card.loc[name, "differences"], "neither sends a seed"


def test_an_edited_yaml_shows_up_as_a_difference(tmp_path):
    models = tmp_path / "models"
    shutil.copytree(paths.params_dir() / "models", models)
    file = models / "qwen25vl.yaml"
    file.write_text(file.read_text().replace("fps: 1.0", "fps: 2.0").replace("max_new_tokens: 512",
                                                                             "max_new_tokens: 128"))
    row = protocol_card(models).set_index("judge").loc["qwen25vl"]
    assert "fps: 2.0 (paper 1.0)" in row["differences"] and "max_new_tokens: 128 (paper 512)" in row["differences"]


@pytest.mark.slow
def test_notebook_08_writes_the_card_and_its_labelled_outputs(tmp_path):
    import nbformat
    import papermill as pm

    out = tmp_path / "08_protocol.ipynb"
    pm.execute_notebook(str(NOTEBOOK), str(out), cwd=str(NOTEBOOK.parent), progress_bar=False,
                        parameters={"reports_dir": str(tmp_path), "dataset": "emoprefer"}, kernel_name="python3")
    table = pd.read_csv(tmp_path / "tables" / "protocol_card.csv")
    assert table["judge"].tolist() == protocol_card()["judge"].tolist()
    sources = [c.source for c in nbformat.read(out, as_version=4).cells if c.cell_type == "code"]
    assert any("#| label: tbl-protocol-card" in s for s in sources)
    assert any("#| label: txt-protocol-differences" in s for s in sources)
