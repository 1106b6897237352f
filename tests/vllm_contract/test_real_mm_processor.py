"""The project's vLLM requests through vLLM 0.33's real multimodal processors (CPU; ``make test-vllm``).

For every shipped local judge (its YAML's options) and every family (each input type it can
perceive), a tiny hub-shaped checkpoint and synthetic media give:

- the request the vLLM backend sends (:func:`helpers.judges.vllm.build_inputs`: prompt text,
  ``multi_modal_data``, ``mm_processor_kwargs``), the engine's ``ModelConfig`` built by the real
  ``EngineArgs(**engine_kwargs(spec)).create_model_config()`` (so the engine-level
  ``mm_processor_kwargs`` and ``limit_mm_per_prompt`` apply), and vLLM's processor from
  ``MULTIMODAL_REGISTRY.create_processor``, as ``LLM.generate`` would process it;
- the transformers backend's ``_encode`` of the same request.

The prompt token ids (every placeholder expanded) must be equal, and so must the tensors that
time or shape the media (``second_per_grid_ts``, grids, audio lengths). Generic: a new judge YAML
or a family with a builder in ``tiny_models`` is picked up without editing this file.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: tiny_models

import tiny_models  # noqa: E402
from tiny_models import VIDEO_PIXELS, write_mp4, write_wav  # noqa: E402

from helpers.judges.base import JudgeSpec, Media, Request  # noqa: E402
from helpers.judges.families import FAMILIES  # noqa: E402
from helpers.judges.hf import TransformersBackend  # noqa: E402
from helpers.judges.registry import list_judges, load_spec  # noqa: E402
from helpers.judges.vllm import build_inputs, engine_kwargs, load_chat_template  # noqa: E402


def _omni_hub_layout(folder: Path) -> Path:
    """Qwen2.5-Omni as the hub ships it (``Qwen2_5OmniModel`` around the thinker): the
    architecture vLLM's registry knows; a bare thinker's is not in it."""
    thinker = tiny_models.build_omni_thinker(folder / "thinker")
    return tiny_models.build_omni_full(folder / "hub", thinker)


def _qwen3omni_hub_layout(folder: Path) -> Path:
    """Qwen3-Omni as the hub ships it (``Qwen3OmniMoeForConditionalGeneration``): vLLM 0.33's registry
    maps that architecture to its thinker; a bare thinker's would fall to vLLM's generic Transformers
    backend, which takes no video."""
    thinker = tiny_models.build_qwen3omni_thinker(folder / "thinker")
    return tiny_models.build_qwen3omni_full(folder / "hub", thinker)


BUILDERS = {"qwen25omni": _omni_hub_layout, "qwen3omni": _qwen3omni_hub_layout, "qwen25vl": tiny_models.build_qwen25vl,
            "qwen2audio": tiny_models.build_qwen2audio, "llavanextvideo": tiny_models.build_llava_next_video,
            "text": tiny_models.build_text_lm, "qwen25": tiny_models.build_text_lm}
# Families added later (issue 21) come with tiny_models.FAMILY_BUILDERS; this file's own entries win.
BUILDERS = {**getattr(tiny_models, "FAMILY_BUILDERS", {}), **BUILDERS}

LOCAL_JUDGES = [n for n in list_judges() if load_spec(n).backend == "local"]


def input_types(family: str) -> list[str]:
    """Every input type a family perceives (``families.check_input``'s rule)."""
    spec = FAMILIES[family]
    return ["text", *(["audio"] if spec.audio else []), *(["video"] if spec.video else []),
            *(["audiovideo"] if spec.audio_in_video else [])]


ENGINE_DIFFERENCES = {
    ("qwen3omni", "audiovideo"): (
        "vLLM 0.33 pads Qwen3-Omni audio with zeros to a multiple of hop_length (160 samples) before the "
        "feature extractor (qwen3_omni_moe_thinker.py _get_hf_mm_inputs), so an mp4 audio track whose length is "
        "not a whole number of hops gets one more mel frame (feature_attention_mask 506 vs transformers' 505); "
        "the prompt token ids still agree. Open: pad the project's audio the same way on both engines."),
}
"""(family, input type) pairs where vLLM's processed media are known to differ from transformers': strict
xfail, so the case fails loudly once the engines agree."""


def _case(case: str, family: str, input_type: str, case_id: str):
    reason = ENGINE_DIFFERENCES.get((family, input_type))
    marks = [pytest.mark.xfail(strict=True, raises=AssertionError, reason=reason)] if reason else []
    return pytest.param(case, input_type, id=case_id, marks=marks)


CASES = ([_case(name, load_spec(name).family, load_spec(name).input_type, f"judge-{name}") for name in LOCAL_JUDGES
          if FAMILIES[load_spec(name).family].vllm]
         + [_case(f"family:{f}", f, t, f"family-{f}-{t}") for f in sorted(FAMILIES) if FAMILIES[f].vllm
            for t in input_types(f)])
"""Families vLLM 0.33 does not implement (``Family.vllm`` false: Video-LLaVA) have no vLLM request to compare."""


def test_every_family_has_a_tiny_checkpoint_builder():
    assert sorted(set(FAMILIES) - set(BUILDERS)) == []


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in built:
            built[family] = BUILDERS[family](tmp_path_factory.mktemp(family))
        return built[family]
    return get


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("media")
    return {"video": write_mp4(folder / "s1.mp4", seconds=5.0, fps=4), "audio": write_wav(folder / "s1.wav")}


@pytest.fixture(scope="module")
def processors():
    """vLLM's processor per (checkpoint, engine kwargs): building one imports the model class."""
    from vllm.engine.arg_utils import EngineArgs
    from vllm.multimodal import MULTIMODAL_REGISTRY
    from vllm.tokenizers import cached_tokenizer_from_config

    made: dict[str, tuple] = {}

    def get(spec: JudgeSpec):
        kwargs = {**engine_kwargs(spec), "dtype": "float32"}
        key = repr(sorted(kwargs.items()))
        if key not in made:
            config = EngineArgs(**kwargs).create_model_config()
            processor = MULTIMODAL_REGISTRY.create_processor(config) if config.is_multimodal_model else None
            made[key] = (config, processor, cached_tokenizer_from_config(config))
        return made[key]
    return get


def case_spec(case: str, checkpoint: Path) -> JudgeSpec:
    """The shipped judge's YAML (or a bare spec of the family) on the tiny checkpoint; frames bounded
    to the tiny processors' size so that the CPU work stays small (both engines get the same)."""
    if case.startswith("family:"):
        family = case.split(":", 1)[1]
        spec = JudgeSpec(name=f"tiny_{family}", family=family, backend="local", checkpoint="", input_type="text")
    else:
        spec = load_spec(case)
    options = {**spec.options, "video_min_pixels": VIDEO_PIXELS["shortest_edge"],
               "video_max_pixels": VIDEO_PIXELS["longest_edge"], "dtype": "float32"}
    options.pop("max_model_len", None)  # sized for the real checkpoints, beyond the tiny ones' positions
    return dataclasses.replace(spec, checkpoint=str(checkpoint), options=options)


def request_for(input_type: str, media: dict[str, Path]) -> Request:
    if input_type == "text":
        return Request("k", "Which description fits better?", system=None)
    parts = {"video": {"video": media["video"]}, "audiovideo": {"video": media["video"]},
             "audio": {"audio": media["audio"]}}[input_type]
    return Request("k", "Describe the emotion.", media=Media(input_type, **parts))


def vllm_side(spec: JudgeSpec, request: Request, processors) -> tuple[list[int], dict]:
    """The token ids and processed media vLLM computes for the project's request."""
    _, prompts, _ = build_inputs([request], spec, load_chat_template(spec))
    prompt = prompts[0]
    config, processor, tokenizer = processors(spec)
    if "multi_modal_data" not in prompt:
        return tokenizer.encode(prompt["prompt"]), {}
    items = processor.info.parse_mm_data(prompt["multi_modal_data"])
    out = processor(prompt["prompt"], items, hf_processor_mm_kwargs=prompt.get("mm_processor_kwargs", {}))
    tensors = {k: elem.data for modality in out["mm_kwargs"].values() for item in modality for k, elem in item.items()}
    return list(out["prompt_token_ids"]), tensors


def transformers_side(spec: JudgeSpec, request: Request) -> tuple[list[int], dict]:
    backend = TransformersBackend(spec)
    backend.load()
    try:
        inputs, _ = backend._encode([request])
    finally:
        backend.close()
    return inputs["input_ids"][0].tolist(), dict(inputs)


COMPARED = ("second_per_grid_ts", "video_grid_thw", "video_second_per_grid", "feature_attention_mask",
            "audio_feature_lengths")
"""Processed fields that time or shape the media, compared where both engines produce them."""


@pytest.mark.parametrize(("case", "input_type"), CASES)
def test_vllm_processes_the_projects_request_to_the_transformers_token_ids(case, input_type, checkpoints, media,
                                                                           processors):
    family = load_spec(case).family if not case.startswith("family:") else case.split(":", 1)[1]
    if family not in BUILDERS:
        pytest.fail(f"family {family!r} has no tiny checkpoint builder")
    spec = case_spec(case, checkpoints(family))
    request = request_for(input_type, media)
    ids_vllm, tensors_vllm = vllm_side(spec, request, processors)
    ids_hf, tensors_hf = transformers_side(spec, request)
    assert ids_vllm == ids_hf, f"{case} ({input_type}): vLLM's prompt differs from transformers'"
    common = sorted(set(tensors_vllm) & set(tensors_hf))
    if input_type != "text":
        assert common, f"{case} ({input_type}): no processed media field to compare"
    for key in common:  # one request: vLLM's per-item tensors hold what transformers' batch of one holds
        a, b = torch.as_tensor(tensors_vllm[key]), torch.as_tensor(tensors_hf[key])
        assert a.numel() == b.numel(), f"{case} ({input_type}): {key} has {a.numel()} values, not {b.numel()}"
        if key in COMPARED:
            a, b = a.flatten().to(b.dtype), b.flatten()
            assert torch.equal(a, b), f"{case} ({input_type}): {key} {a.tolist()} != {b.tolist()}"
