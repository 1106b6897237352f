"""Every shipped model judge (params/models/*.yaml) is one the model backends can serve: a known
family, generation settings each backend understands, a chat endpoint and key variable for API
judges. Nothing is loaded or called here."""

from __future__ import annotations

import sys

import pytest

from helpers.judges import decoding
from helpers.judges.base import BackendError, JudgeSpec, Media, Request
from helpers.judges.families import FAMILIES, check_input, family_of
from helpers.judges.openai import OpenAIBackend, generation_fields
from helpers.judges.registry import list_judges, load_spec, make_backend
from helpers.judges.vllm import engine_kwargs, sampling_kwargs

SPECS = [load_spec(name) for name in list_judges()]
LOCAL = [s for s in SPECS if s.backend == "local"]
API = [s for s in SPECS if s.backend == "openai"]


def test_the_papers_judges_are_shipped():
    assert {"qwen25omni", "qwen25omni_3b", "qwen25vl", "qwen2audio", "llavanextvideo", "qwen25"} <= {s.name for s in LOCAL}
    assert {"gpt4o", "gpt41", "gemini15flash"} <= {s.name for s in API}


@pytest.mark.parametrize("spec", LOCAL, ids=lambda s: s.name)
def test_local_judges_build_for_transformers_and_vllm_without_loading(spec):
    assert spec.family in FAMILIES
    media = None if spec.input_type == "text" else Media(spec.input_type)
    check_input(spec, family_of(spec), Request("k", "p", media=media))  # the family perceives its default input
    transformers_backend = make_backend(spec, "transformers")
    assert transformers_backend.model is None, "weights load on first generate, not on construction"
    decoding.translate(spec.generation, "transformers")
    if not family_of(spec).vllm:  # Video-LLaVA: vLLM has no implementation, refused by name
        with pytest.raises(BackendError, match="has no vLLM implementation"):
            make_backend(spec, "vllm")
        return
    vllm_backend = make_backend(spec, "vllm")
    assert vllm_backend.kind == "vllm" and engine_kwargs(spec)["model"] == spec.checkpoint
    assert sampling_kwargs(spec, seed=1)["seed"] == 1
    assert "vllm" not in sys.modules


def test_the_text_llm_yaml_carries_the_papers_sampling():
    qwen25 = load_spec("qwen25")
    assert sampling_kwargs(qwen25, seed=0) == {"temperature": 0.7, "top_p": 0.8, "repetition_penalty": 1.05,
                                               "max_tokens": 512, "seed": 0}


@pytest.mark.parametrize("spec", API, ids=lambda s: s.name)
def test_api_judges_name_an_endpoint_and_a_key_variable_not_a_key(spec):
    backend = make_backend(spec)
    assert isinstance(backend, OpenAIBackend) and backend.url.endswith("/chat/completions")
    assert spec.api_key_env and spec.api_key_env.isupper() and not spec.api_key_env.startswith("sk-")
    generation_fields(spec)


# -- issue 12: one decoding protocol per judge, the same on both backends ------------------------

PAPER_LENGTH = {"qwen25omni": 1024, "qwen25omni_3b": 1024, "qwen25vl": 512, "qwen2audio": 512,
                "llavanextvideo": 512, "qwen25": 512}
"""max_new_tokens of the official wrappers (utils/<model>.py) and of transformers' Omni generate."""


@pytest.fixture(scope="module")
def hub_like_lm(tmp_path_factory):
    from tiny_models import build_text_lm

    return build_text_lm(tmp_path_factory.mktemp("hub_like_lm"), hub_like=True)


def effective_transformers_config(checkpoint, settings: dict):
    """What transformers decodes with for these ``generate`` kwargs on this checkpoint (its own
    merge of kwargs over the checkpoint's generation_config.json over its global defaults)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(checkpoint, local_files_only=True)
    assert model.generation_config.max_new_tokens is None, "a hub-like config sets no length"
    config, _ = model._prepare_generation_config(None, **settings)
    return config


@pytest.mark.parametrize("name", sorted(PAPER_LENGTH))
def test_descriptions_are_not_cut_at_20_tokens_on_a_hub_like_checkpoint_on_either_backend(name, hub_like_lm):
    """Issue 12 case 1: a checkpoint without a length made transformers stop at 20 new tokens;
    vLLM got 1024. Both request builders now carry the YAML's (= the paper's) length."""
    spec = load_spec(name)
    from helpers.judges import decoding

    assert decoding.protocol(spec)["max_new_tokens"] == PAPER_LENGTH[name]
    settings = make_backend(spec, "transformers").generation_settings()
    config = effective_transformers_config(hub_like_lm, settings)
    assert config.max_new_tokens == PAPER_LENGTH[name]
    assert sampling_kwargs(spec, seed=0)["max_tokens"] == PAPER_LENGTH[name]


@pytest.mark.parametrize("name", sorted(PAPER_LENGTH))
def test_both_backends_decode_with_the_yamls_protocol_not_the_checkpoints_or_vllms_defaults(name, hub_like_lm):
    """Issue 12 case 2: vLLM sampled at its default temperature 1.0 and transformers inherited
    the checkpoint's sampling knobs; now both follow the one protocol of the YAML."""
    from helpers.judges import decoding

    spec = load_spec(name)
    protocol = decoding.protocol(spec)
    config = effective_transformers_config(hub_like_lm, make_backend(spec, "transformers").generation_settings())
    vllm = sampling_kwargs(spec, seed=3)
    assert config.do_sample is protocol["do_sample"]
    assert config.repetition_penalty == protocol["repetition_penalty"] == vllm["repetition_penalty"]
    if protocol["do_sample"] and protocol["temperature"] >= decoding.GREEDY_BELOW:
        assert config.temperature == protocol["temperature"] == vllm["temperature"]
        assert config.top_p == protocol["top_p"] == vllm["top_p"]
        assert config.top_k == protocol["top_k"] == vllm.get("top_k", 0)
    else:
        assert vllm["temperature"] == 0.0, "greedy is temperature 0 in vLLM, never its default 1.0"


def test_omni_is_greedy_and_qwen2audio_samples_as_their_checkpoints_did():
    from helpers.judges import decoding

    assert decoding.is_deterministic(load_spec("qwen25omni"))
    assert decoding.is_deterministic(load_spec("qwen25vl")), "temperature 1e-06 is argmax decoding"
    assert not decoding.is_deterministic(load_spec("qwen2audio"))
    assert not decoding.is_deterministic(load_spec("qwen25"))
    assert sampling_kwargs(load_spec("qwen2audio"), seed=0) == {
        "max_tokens": 512, "temperature": 0.7, "top_p": 0.5, "top_k": 20, "repetition_penalty": 1.1, "seed": 0}


def test_one_translation_for_both_backends():
    from helpers.judges.decoding import DecodingError, complete, translate

    greedy = complete({"max_new_tokens": 7, "do_sample": False})
    assert translate(greedy, "transformers") == {"max_new_tokens": 7, "do_sample": False, "repetition_penalty": 1.0}
    assert translate(greedy, "vllm") == {"max_tokens": 7, "temperature": 0.0, "repetition_penalty": 1.0}
    sampled = complete({"max_tokens": 9, "temperature": 0.5, "top_k": 5})
    assert translate(sampled, "transformers") == {"max_new_tokens": 9, "do_sample": True, "temperature": 0.5,
                                                  "top_p": 1.0, "top_k": 5, "repetition_penalty": 1.0}
    assert translate(sampled, "vllm") == {"max_tokens": 9, "temperature": 0.5, "top_p": 1.0, "top_k": 5,
                                          "repetition_penalty": 1.0}
    assert translate(complete({"do_sample": True, "temperature": 1e-6}), "vllm")["temperature"] == 0.0
    with pytest.raises(DecodingError, match="do_sample is true but temperature is 0"):
        complete({"do_sample": True, "temperature": 0})
    with pytest.raises(DecodingError, match="min_p"):
        translate({"min_p": 0.1}, "vllm")


def test_a_local_judge_yaml_without_max_new_tokens_is_refused(tmp_path):
    """Issue 12: `generation: {}` silently meant 20 tokens on real checkpoints."""
    from helpers.judges.registry import RegistryError

    (tmp_path / "vl.yaml").write_text("family: qwen25vl\nbackend: local\ncheckpoint: c\ninput_type: video\n"
                                      "generation: {}\n")
    with pytest.raises(RegistryError, match=r"vl.yaml: field 'generation.max_new_tokens' is required"):
        load_spec("vl", tmp_path)
    (tmp_path / "api.yaml").write_text("family: openai\nbackend: openai\ncheckpoint: m\napi_key_env: K\n")
    assert load_spec("api", tmp_path).generation == {}, "API judges keep the vendor's defaults, as the paper"


def test_the_transformers_backend_sends_the_yaml_length_to_a_real_hub_like_checkpoint(hub_like_lm):
    from helpers.judges.hf import TransformersBackend

    spec = JudgeSpec(name="hub_like", family="text", backend="local", checkpoint=str(hub_like_lm),
                     generation={"max_new_tokens": 24, "do_sample": False, "repetition_penalty": 1.0})
    backend = TransformersBackend(spec)
    seen = {}
    backend.load()
    real = backend.model.generate

    def spy(**kwargs):
        seen.update(kwargs)
        return real(**kwargs)

    backend.model.generate = spy
    backend.generate([Request("k", "a1 or a2?")])
    config, _ = backend.model._prepare_generation_config(None, **{k: v for k, v in seen.items()
                                                                   if k not in ("input_ids", "attention_mask")})
    assert (config.max_new_tokens, config.do_sample, config.repetition_penalty) == (24, False, 1.0)
    assert backend.info["checkpoint_generation"]["repetition_penalty"] == 1.1, "the checkpoint's own, recorded"
    assert backend.info["generation"]["max_new_tokens"] == 24
