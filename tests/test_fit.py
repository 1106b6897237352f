"""Engine settings per judge and the dry run's memory fit (issue 29, item 1)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from helpers.judges import fit
from helpers.judges.families import family_of
from helpers.judges.registry import list_judges, load_spec
from helpers.judges.vllm import engine_kwargs
from helpers.run.identity import identity_sha256, spec_identity

LOCAL = [n for n in list_judges() if load_spec(n).backend == "local" and family_of(load_spec(n)).vllm]
"""Every judge vLLM can serve (a family vLLM 0.33 lacks, Video-LLaVA, runs on transformers only)."""


def test_every_local_judge_states_its_vllm_engine_settings_and_they_reach_vllm():
    assert {"qwen25omni", "qwen3omni", "qwen25", "qwen3_8b", "gemma3n"} <= set(LOCAL)
    for name in LOCAL:
        spec = load_spec(name)
        settings = fit.engine_settings(spec)  # raises when one is missing
        kwargs = engine_kwargs(spec)
        assert {k: kwargs[k] for k in settings} == settings, name
        assert 0 < settings["gpu_memory_utilization"] <= 0.95 and settings["max_num_seqs"] <= 64, name
        assert spec.shape and spec.shape["source"], f"{name}: the shape says where its numbers come from"


def test_the_engine_settings_are_part_of_the_run_identity_and_the_shape_is_not():
    spec = load_spec("qwen3omni")
    longer = dataclasses.replace(spec, options={**spec.options, "max_model_len": 65536})
    other_shape = dataclasses.replace(spec, shape={**spec.shape, "params_b": 1.0})
    assert identity_sha256(spec_identity(spec, "vllm")) != identity_sha256(spec_identity(longer, "vllm"))
    assert identity_sha256(spec_identity(spec, "vllm")) == identity_sha256(spec_identity(other_shape, "vllm"))


def test_kv_bytes_per_token_is_two_times_layers_kv_heads_head_dim_and_dtype_bytes():
    # by hand: Qwen3-Omni's thinker 48 layers x 4 KV heads x 128 x 2 (K, V) x 2 bytes (bf16)
    assert fit.spec_shape(load_spec("qwen3omni")).kv_bytes_per_token(2) == 48 * 4 * 128 * 2 * 2 == 98_304
    # Gemma 3n: only the 20 of 35 layers that do not share another layer's cache hold one
    assert fit.spec_shape(load_spec("gemma3n")).kv_bytes_per_token(2) == 20 * 2 * 256 * 2 * 2
    # Qwen2-Audio runs in float32 (the paper's dtype): 4 bytes
    assert fit.dtype_bytes(load_spec("qwen2audio")) == 4


def test_a_checkpoint_config_on_disk_is_read_instead_of_the_yaml(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"thinker_config": {"text_config": {
        "num_hidden_layers": 3, "num_attention_heads": 8, "num_key_value_heads": 2, "hidden_size": 64}}}))
    spec = dataclasses.replace(load_spec("qwen25omni"), checkpoint=str(tmp_path))
    shape = fit.spec_shape(spec)
    assert (shape.layers, shape.kv_heads, shape.head_dim) == (3, 2, 8) and shape.source.endswith("config.json")


def test_media_tokens_follow_each_processors_rate():
    omni = load_spec("qwen25omni")  # 30 s at fps 2: 60 frames = 30 pairs x 768 tokens, + 25 audio tokens/s
    assert fit.media_tokens(omni) == 30 * 768 + 30 * 25
    vl = load_spec("qwen25vl")  # fps 1 -> 30 frames = 15 pairs, <= 151,200 px = 193 tokens of 28x28
    assert fit.media_tokens(vl) == 15 * -(-151_200 // 784)
    assert fit.media_tokens(load_spec("llavanextvideo")) == 8 * 144
    assert fit.media_tokens(load_spec("gemma3n")) == 188


def test_every_judge_fits_its_own_max_model_len_and_qwen3omni_fits_one_h100():
    texts = {"S1": 1728, "judge": 1776, "reason": 1716}
    for name in LOCAL:
        spec = load_spec(name)
        if not family_of(spec).vllm:  # Video-LLaVA: transformers only, 4,096 positions (its YAML says which strategy fits)
            continue
        longest = fit.longest_request(spec, texts, 1024 if spec.input_type == "text" else None)
        assert longest <= spec.options["max_model_len"], f"{name}: {longest} tokens do not fit its max_model_len"
    h100 = fit.fit(load_spec("qwen3omni"), "80 GB", fit.GPUS["80 GB (H100)"], 27_528)
    # by hand: 0.95 x 79.65 GiB - 31.7e9 x 2 B (59.05 GiB) - 6 GiB reserve = 10.62 GiB; one 32768-token sequence
    # needs 32768 x 98,304 B = 3.0 GiB
    assert h100.fits and h100.kv_needed_gib == 3.0 and h100.kv_budget_gib == pytest.approx(10.62, abs=0.01)
    assert not fit.fit(load_spec("qwen3omni"), "48 GB", 48.0, 27_528).fits


def test_the_dry_run_prints_a_fit_line_per_judge_and_gpu_and_refuses_a_cell_that_cannot_fit(monkeypatch, capsys):
    from helpers.run.launch import main

    assert main(["params/grid_2026.yaml", "--dry-run"]) == 0
    out = capsys.readouterr().out
    for judge in ("qwen3omni", "qwen3vl", "gemma3n", "qwen3_8b"):
        for gpu in fit.GPUS:
            assert f"fit: {judge} on {gpu}: weights" in out, (judge, gpu)
    monkeypatch.setitem(fit.GPUS, "80 GB (H100)", 60.0)  # a smaller card under the same name: the 30B MoE cannot fit
    assert main(["params/grid_2026.yaml", "--dry-run"]) == 1
    out = capsys.readouterr().out
    assert "qwen3omni on 80 GB (H100)" in out and "DOES NOT FIT" in out
    refused = [line for line in out.splitlines() if line.strip().startswith("qwen3omni__") and "refused" in line]
    assert len(refused) == 4 and "KV budget -8" in out
