"""The project's vLLM requests against the real vLLM 0.33 package (CPU; ``make test-vllm``).

Generic over every shipped local judge YAML and every family: a new judge or family is picked
up without editing this file.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: fake_vllm, tiny_models

import fake_vllm  # noqa: E402
import vllm  # noqa: E402
from vllm.engine.arg_utils import EngineArgs  # noqa: E402

from helpers.judges import decoding  # noqa: E402
from helpers.judges.families import FAMILIES  # noqa: E402
from helpers.judges.registry import list_judges, load_spec  # noqa: E402
from helpers.judges.vllm import engine_kwargs, sampling_kwargs  # noqa: E402

LOCAL_JUDGES = [n for n in list_judges() if load_spec(n).backend == "local"]
VLLM_FAMILIES = sorted(f for f, family in FAMILIES.items() if family.vllm)
VLLM_JUDGES = [n for n in LOCAL_JUDGES if FAMILIES[load_spec(n).family].vllm]
"""Judges and families vLLM runs (``Family.vllm``); the others are refused by the backend by name."""


def test_the_families_marked_without_vllm_are_absent_from_its_model_registry():
    """Video-LLaVA (MER2026 Track 3's baseline) runs on transformers only: stated, and checked here, so
    the mark is dropped the day vLLM adds it."""
    from vllm.model_executor.models.registry import ModelRegistry

    known = set(ModelRegistry.get_supported_archs())
    without = {name: family.model_class for name, family in FAMILIES.items() if not family.vllm}
    assert without == {"videollava": "VideoLlavaForConditionalGeneration"}
    assert not set(without.values()) & known


def test_vllm_is_the_pinned_release():
    assert vllm.__version__.startswith("0.33."), vllm.__version__


@pytest.mark.parametrize("name", LOCAL_JUDGES)
def test_every_local_judges_sampling_builds_real_sampling_params_unchanged(name):
    spec = load_spec(name)
    kwargs = sampling_kwargs(spec, seed=7)
    params = vllm.SamplingParams(**kwargs)
    for key, value in kwargs.items():
        assert getattr(params, key) == value, f"vLLM changed {key} of judge {name}"
    fake = fake_vllm.SamplingParams(**kwargs)
    assert {k: getattr(fake, k) for k in fake_vllm.FIELDS} == {k: getattr(params, k) for k in fake_vllm.FIELDS}


@pytest.mark.parametrize("temperature", [0.0, 1e-6, 0.005, 0.01, 0.7, 1.3])
def test_the_fake_sampling_params_clamp_like_the_real_one(temperature):
    real, fake = vllm.SamplingParams(temperature=temperature), fake_vllm.SamplingParams(temperature=temperature)
    assert fake.temperature == real.temperature and (fake.top_p, fake.top_k) == (real.top_p, real.top_k)
    with pytest.raises(TypeError):
        vllm.SamplingParams(max_new_tokens=5)
    with pytest.raises(TypeError):
        fake_vllm.SamplingParams(max_new_tokens=5)


def test_the_translation_refuses_what_vllm_would_raise_to_its_minimum():
    assert vllm.sampling_params._MAX_TEMP == decoding.VLLM_MIN_TEMPERATURE
    assert vllm.sampling_params._SAMPLING_EPS == decoding.GREEDY_BELOW
    with pytest.raises(decoding.DecodingError, match="raises every temperature below"):
        decoding.normalise({"temperature": 0.005})


def on_local_folder(spec, folder: Path):
    """The spec with its hub id replaced by a local folder: under HF_HUB_OFFLINE=1 (make exports it)
    ``EngineArgs.__post_init__`` resolves a hub id to its cached snapshot, which CI does not have."""
    return dataclasses.replace(spec, checkpoint=str(folder))


@pytest.mark.parametrize("name", VLLM_JUDGES)
def test_every_local_judges_engine_kwargs_are_real_engine_args(name, tmp_path):
    kwargs = engine_kwargs(on_local_folder(load_spec(name), tmp_path))
    args = EngineArgs(**kwargs)
    assert args.enable_prefix_caching is True and args.seed == 0
    for key, value in kwargs.items():
        assert getattr(args, key) == value, f"EngineArgs changed {key} of judge {name}"


@pytest.mark.parametrize("family", VLLM_FAMILIES)
def test_every_family_gives_engine_args_vllm_accepts(family, tmp_path):
    spec = dataclasses.replace(load_spec(LOCAL_JUDGES[0]), family=family, options={})
    EngineArgs(**engine_kwargs(on_local_folder(spec, tmp_path)))


def test_shutdown_lives_on_the_engine_core_client():
    from vllm.distributed import parallel_state
    from vllm.v1.engine.core_client import EngineCoreClient

    assert not hasattr(vllm.LLM, "shutdown") or callable(vllm.LLM.shutdown)
    assert callable(EngineCoreClient.shutdown)
    assert callable(parallel_state.destroy_model_parallel) and callable(parallel_state.destroy_distributed_environment)
