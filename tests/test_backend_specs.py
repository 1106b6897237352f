"""Every shipped model judge (params/models/*.yaml) is one the model backends can serve: a known
family, generation settings each backend understands, a chat endpoint and key variable for API
judges. Nothing is loaded or called here."""

from __future__ import annotations

import sys

import pytest

from helpers.judges.base import Media, Request
from helpers.judges.hf_backend import FAMILIES, check_input, family_of, generation_kwargs
from helpers.judges.openai_backend import OpenAIBackend, generation_fields
from helpers.judges.registry import list_judges, load_spec, make_backend
from helpers.judges.vllm_backend import engine_kwargs, sampling_kwargs

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
    generation_kwargs(spec.generation)
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
