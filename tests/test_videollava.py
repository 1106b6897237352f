"""Video-LLaVA, the MER2026 Track 3 baseline judge (utils/videollava.py in zeroQiaoba/MERTools), through
transformers' VideoLlavaForConditionalGeneration: its YAML states the wrapper's settings, a tiny model
in the hub's layout receives the llava_v1 prompt and 8 linspace frames on the CPU, vLLM is refused by
name, and the protocol card lists it beside LLaMA-VID, which no engine here implements."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from tiny_models import build_video_llava, write_mp4

from helpers import prompts
from helpers.judges import decoding
from helpers.judges.base import BackendError, Media, Request
from helpers.judges.families import FAMILIES
from helpers.judges.media import linspace_indices, load_video_frames
from helpers.judges.registry import load_spec
from helpers.report.protocol import protocol_card

pytestmark = pytest.mark.usefixtures("offline")


def test_the_yaml_states_the_authors_wrapper_settings():
    spec = load_spec("videollava")
    assert spec.family == "videollava" and spec.checkpoint == "LanguageBind/Video-LLaVA-7B-hf"
    assert spec.input_type == "video" and spec.batch_size == 1
    assert decoding.protocol(spec) == {"max_new_tokens": 1024, "do_sample": True, "temperature": 0.1, "top_p": 0.6,
                                       "top_k": 50, "repetition_penalty": 1.0}
    assert spec.options["engine"] == "transformers" and spec.options["num_frames"] == 8
    assert prompts.prompt(spec.options["system_prompt"]).startswith("A chat between a curious human")
    family = FAMILIES["videollava"]
    assert family.model_class == "VideoLlavaForConditionalGeneration" and family.video and not family.audio
    assert not family.vllm


def test_frames_are_linspace_over_the_clip_as_languagebind_picks_them(tmp_path):
    assert linspace_indices(20, 8) == [0, 2, 5, 8, 10, 13, 16, 19]  # np.linspace(0, 19, 8, dtype=int)
    assert linspace_indices(5, 8) == [0, 0, 1, 1, 2, 2, 3, 4]  # a short clip repeats frames
    clip = write_mp4(tmp_path / "c.mp4", seconds=2.0, fps=10)
    frames = load_video_frames(clip, "linspace", max_frames=8)
    assert list(frames.indices) == list(np.linspace(0, 19, 8, dtype=int)) and len(frames.frames) == 8


@pytest.mark.slow
def test_a_tiny_hub_shaped_model_gets_the_llava_v1_prompt_and_8_frames_on_cpu(tmp_path):
    from helpers.judges.hf import TransformersBackend

    spec = load_spec("videollava")
    spec = dataclasses.replace(spec, checkpoint=str(build_video_llava(tmp_path / "vl")),
                               options={**spec.options, "device": "cpu", "dtype": "float32"},
                               generation={**spec.generation, "max_new_tokens": 3})
    backend = TransformersBackend(spec)
    system = prompts.prompt("system_llava_v1")
    clip = write_mp4(tmp_path / "s1.mp4")
    requests = [Request(f"k{i}", f"Which is better? {i}", Media("video", clip), system, 0) for i in range(2)]
    backend.load()
    inputs, _ = backend._encode(requests[:1])
    tokens_per_frame = (56 // 14) ** 2 + 1  # CLIP patches and CLS, as VideoLlavaProcessor expands <video>
    expected = f"{system} USER: " + "<video>" * (8 * tokens_per_frame) + "\nWhich is better? 0 ASSISTANT:"
    assert backend.tokenizer.decode(inputs["input_ids"][0]) == expected
    assert tuple(inputs["pixel_values_videos"].shape) == (1, 8, 3, 56, 56)
    responses = backend.generate(requests)
    assert [r.key for r in responses] == ["k0", "k1"] and all(isinstance(r.text, str) for r in responses)
    assert backend.info["model_class"] == "VideoLlavaForConditionalGeneration"


def test_vllm_is_refused_by_name_because_vllm_has_no_video_llava():
    from helpers.judges.vllm import VLLMBackend

    with pytest.raises(BackendError, match=r"family 'videollava' has no vLLM implementation.*engine 'transformers'"):
        VLLMBackend(load_spec("videollava"))


def test_the_protocol_card_lists_video_llava_and_llama_vid_status():
    card = protocol_card().set_index("judge")
    assert card.loc["videollava", "backend"] == "transformers"
    assert card.loc["videollava", "differences"] == "not in the paper"
    assert card.loc["llamavid", "backend"] == "none (not runnable here)"
    assert "no transformers or vLLM implementation" in card.loc["llamavid", "differences"]
