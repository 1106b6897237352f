"""What the vLLM backend asks vLLM for, checked at the boundary without vLLM installed.

The prompts come from the checkpoint's chat template (here the tiny local tokenizer and Omni
processor), the media from PyAV, the sampling settings from the paper; ``vllm`` itself is never
imported by any of this.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from fake_vllm import Completion, FakeVLLM, Output
from tiny_models import QWEN_SYSTEM, write_mp4, write_wav

from helpers.judges import media as media_io
from helpers.judges.base import BackendError, JudgeSpec, Media, Request
from helpers.judges.vllm import (
    PAPER_TEXT_SAMPLING,
    VLLMBackend,
    build_inputs,
    cache_friendly_order,
    engine_kwargs,
    input_groups,
    load_chat_template,
    sampling_kwargs,
)

pytestmark = pytest.mark.usefixtures("offline")  # text_lm, omni: tests/conftest.py



@pytest.fixture(scope="module")
def folders(tmp_path_factory, text_lm, omni) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vllm_boundary")
    return {
        "text": text_lm,
        "omni": omni,
        "video": write_mp4(root / "s1.mp4"),
        "other_video": write_mp4(root / "s2.mp4", tone_hz=220),
        "audio": write_wav(root / "s1.wav"),
    }


def spec(family: str, checkpoint, **fields) -> JudgeSpec:
    return JudgeSpec(name=f"tiny_{family}", family=family, backend="vllm", checkpoint=str(checkpoint), **fields)


def test_text_llm_uses_the_papers_sampling_with_a_seed_per_request(folders):
    judge = spec("qwen25", folders["text"])
    assert sampling_kwargs(judge, seed=3) == {**PAPER_TEXT_SAMPLING, "seed": 3}
    assert PAPER_TEXT_SAMPLING == {"temperature": 0.7, "top_p": 0.8, "repetition_penalty": 1.05, "max_tokens": 512}
    greedy = spec("qwen25", folders["text"], generation={"temperature": 0, "max_new_tokens": 8})
    assert sampling_kwargs(greedy, seed=0) == {"repetition_penalty": 1.05, "temperature": 0, "max_tokens": 8, "seed": 0}
    assert sampling_kwargs(spec("qwen25omni", "x"), seed=1)["max_tokens"] == 1024, "vLLM's default of 16 is too few"
    with pytest.raises(BackendError, match="temprature"):
        sampling_kwargs(spec("qwen25", "x", generation={"temprature": 1}), seed=0)


def test_engine_reserves_one_video_and_one_audio_for_omni_and_nothing_for_text():
    omni = engine_kwargs(spec("qwen25omni", "Qwen/Qwen2.5-Omni-7B", options={"tensor_parallel_size": 2, "system": "x"}))
    assert omni == {"model": "Qwen/Qwen2.5-Omni-7B", "enable_prefix_caching": True, "seed": 0,
                    "limit_mm_per_prompt": {"image": 0, "video": 1, "audio": 1}, "tensor_parallel_size": 2,
                    "mm_processor_kwargs": {"fps": 2.0}}
    vl = engine_kwargs(spec("qwen25vl", "m", options={"video_max_pixels": 151200, "max_model_len": 8192}))
    assert vl["limit_mm_per_prompt"] == {"image": 0, "video": 1}, "vLLM would otherwise budget 999 images"
    assert vl["mm_processor_kwargs"] == {"size": {"shortest_edge": 128 * 28 * 28, "longest_edge": 151200}}, (
        "the profiler sizes the judge's largest frame, not the processor's")
    assert vl["max_model_len"] == 8192
    assert engine_kwargs(spec("qwen2audio", "m"))["limit_mm_per_prompt"] == {"image": 0, "audio": 1}
    assert "limit_mm_per_prompt" not in engine_kwargs(spec("qwen25", "m"))
    with pytest.raises(BackendError, match="no checkpoint"):
        VLLMBackend(JudgeSpec(name="x", family="qwen25", backend="vllm"))


def test_omni_audio_in_video_sends_frames_and_the_mp4_sound_behind_one_video_placeholder(folders):
    judge = spec("qwen25omni", folders["omni"], options={"system": QWEN_SYSTEM})
    prompt_text = "We provide two descriptions: a1: \"happy\". a2: \"sad\"."
    request = Request("k", prompt_text, media=Media("audiovideo", video=folders["video"]), seed=5)
    order, prompts, sampling = build_inputs([request], judge, load_chat_template(judge))
    (prompt,) = prompts
    text = prompt["prompt"]
    assert text.count("<|VIDEO|>") == 1 and "<|AUDIO|>" not in text
    assert QWEN_SYSTEM in text and prompt_text in text
    assert text.index("<|VIDEO|>") < text.index(prompt_text), "media come before the text"
    assert text.endswith("<|im_start|>assistant\n")
    frames = prompt["multi_modal_data"]["video"]
    assert isinstance(frames, np.ndarray) and frames.shape == (4, 56, 56, 3)
    wave, rate = prompt["multi_modal_data"]["audio"]
    assert rate == 16_000 and wave.ndim == 1 and len(wave) == pytest.approx(32_000, rel=0.05)
    assert prompt["mm_processor_kwargs"] == {"use_audio_in_video": True, "fps": 2.0}, "Omni times frames by fps"
    # greedy stated explicitly: vLLM's own temperature 1.0 must never apply (issue 12)
    assert sampling == [{"max_tokens": 1024, "temperature": 0.0, "repetition_penalty": 1.0, "seed": 5}]
    assert "vllm" not in sys.modules


def test_omni_video_audio_and_text_inputs(folders):
    judge = spec("qwen25omni", folders["omni"], options={"system": QWEN_SYSTEM})
    template = load_chat_template(judge)
    video, audio, text = (
        Request("v", "p", media=Media("video", video=folders["video"])),
        Request("a", "p", media=Media("audio", audio=folders["audio"])),
        Request("t", "p"),
    )
    _, prompts, _ = build_inputs([video, audio, text], judge, template)
    assert set(prompts[0]["multi_modal_data"]) == {"video"} and prompts[0]["mm_processor_kwargs"] == {"fps": 2.0}
    assert prompts[1]["prompt"].count("<|AUDIO|>") == 1 and "<|VIDEO|>" not in prompts[1]["prompt"]
    wave, rate = prompts[1]["multi_modal_data"]["audio"]
    assert rate == 16_000 and len(wave) == 32_000
    assert "multi_modal_data" not in prompts[2]


def test_text_llm_prompt_is_the_chat_template_with_one_user_message(folders):
    judge = spec("qwen25", folders["text"])
    _, prompts, _ = build_inputs([Request("k", "a1 or a2?")], judge, load_chat_template(judge))
    assert prompts == [{"prompt": "<|im_start|>user\na1 or a2?<|im_end|>\n<|im_start|>assistant\n"}]


def test_requests_sharing_a_video_are_adjacent_and_responses_keep_the_callers_order(folders):
    a, b = folders["video"], folders["other_video"]
    requests = [
        Request("a-S1", "p", media=Media("video", video=a)),
        Request("b-S1", "p", media=Media("video", video=b)),
        Request("a-S2", "p", media=Media("video", video=a)),
        Request("text", "p"),
        Request("b-S2", "p", media=Media("video", video=b)),
    ]
    order = cache_friendly_order(requests)
    assert [requests[i].key for i in order] == ["a-S1", "a-S2", "b-S1", "b-S2", "text"]

    class FakeLLM:
        """Answers each prompt with the position it was sent at, as vLLM's LLM.generate would."""

        def __init__(self):
            self.sent = []

        def generate(self, prompts, params, use_tqdm=False):
            self.sent = list(zip(prompts, params, strict=True))
            return [Output([Completion(f"answer {i}")]) for i in range(len(prompts))]

    backend = VLLMBackend(spec("qwen25omni", folders["omni"], options={"system": QWEN_SYSTEM}))
    backend._llm, backend._sampling_params = FakeLLM(), dict
    responses = backend.generate(requests)
    assert [r.key for r in responses] == [r.key for r in requests]
    sent_position = {requests[i].key: pos for pos, i in enumerate(order)}
    assert [r.text for r in responses] == [f"answer {sent_position[r.key]}" for r in requests]
    assert backend.calls == 5
    assert "vllm" not in sys.modules


def test_qwen25vl_frames_travel_with_the_papers_timing_or_the_clips(folders):
    request = Request("k", "p", media=Media("video", video=folders["video"]))
    judge = spec("qwen25vl", folders["omni"])  # default video_timing: paper
    _, prompts, _ = build_inputs([request], judge, lambda messages: "prompt")
    frames, metadata = prompts[0]["multi_modal_data"]["video"]
    assert frames.shape[0] == 4
    # transformers 4.49 assumed fps 2.0 for the paper's already-sampled frames: sampled_fps 2.0
    assert metadata == {"total_num_frames": 4, "fps": 2.0, "frames_indices": [0, 1, 2, 3], "duration": 2.0}
    assert prompts[0]["mm_processor_kwargs"] == {"do_sample_frames": False}
    source = spec("qwen25vl", folders["omni"], options={"video_timing": "source"})
    _, prompts, _ = build_inputs([request], source, lambda messages: "prompt")
    _, metadata = prompts[0]["multi_modal_data"]["video"]
    assert metadata["fps"] == pytest.approx(10) and metadata["total_num_frames"] == 20
    assert metadata["frames_indices"] == [0, 6, 13, 19]
    with pytest.raises(BackendError, match="video_timing must be one of"):
        build_inputs([request], spec("qwen25vl", folders["omni"], options={"video_timing": "x"}), lambda m: "")


def test_requests_sharing_a_video_decode_it_once_and_groups_stay_within_their_byte_budget(folders):
    judge = spec("qwen25vl", folders["omni"])
    decoded = []

    def counting_loader(path, **kwargs):
        decoded.append(path)
        return media_io.load_video(path, **kwargs)

    requests = [Request(f"k{i}", "p", media=Media("video", video=folders["video" if i % 2 else "other_video"]))
                for i in range(6)]
    order, prompts, _ = build_inputs(requests, judge, lambda m: "", load_video=counting_loader)
    assert len(decoded) == 2 and sorted(order) == list(range(6))
    one_video = prompts[0]["multi_modal_data"]["video"][0].nbytes
    decoded.clear()
    groups = list(input_groups(requests, judge, lambda m: "", max_bytes=one_video, load_video=counting_loader))
    assert [len(g[0]) for g in groups] == [3, 3], "each group holds one decoded video's requests"
    assert len(decoded) == 2


def test_a_family_that_cannot_hear_refuses_audio(folders):
    judge = spec("qwen25vl", folders["omni"])
    request = Request("k", "p", media=Media("audiovideo", video=folders["video"]))
    with pytest.raises(BackendError, match="audio inside video"):
        build_inputs([request], judge, lambda messages: "")


# -- issue 12 case 8: vLLM gets large chunks, and close() really frees the GPU --------------------

def text_pairs(n: int):
    import pandas as pd

    return pd.DataFrame({"name": [f"p{i:02d}" for i in range(n)], "a1": ["happy"] * n, "a2": ["sad"] * n,
                         "preference": ["a1"] * n})


def run_vllm(judge, tmp_path, **kwargs):
    from helpers.run import engine

    return engine.run(judge, "S1", pairs=text_pairs(20), rounds=1, output_dir=tmp_path, dataset="toy",
                      engine="vllm", progress=False, **kwargs)


def test_vllm_receives_all_pending_requests_of_a_shard_in_one_chunk_not_batch_size(folders, tmp_path, monkeypatch):
    fake = FakeVLLM().install(monkeypatch)
    judge = spec("qwen25", folders["text"], batch_size=4, input_type="text")
    run_vllm(judge, tmp_path)
    assert fake.calls == [40], "20 pairs x 2 orders in one call (batch_size 4 would have made 10)"


def test_vllm_chunks_are_stored_as_they_finish_so_a_killed_run_resumes(folders, tmp_path, monkeypatch):
    from helpers.judges import vllm as vllm_backend
    from helpers.run.store import read_predictions

    monkeypatch.setattr(vllm_backend.VLLMBackend, "chunk_size", 16)
    judge = spec("qwen25", folders["text"], batch_size=4, input_type="text")
    killed = FakeVLLM(fail_on_call=3).install(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run_vllm(judge, tmp_path)
    assert killed.calls == [16, 16, 8] and len(read_predictions(tmp_path)) == 32
    again = FakeVLLM().install(monkeypatch)
    run_vllm(judge, tmp_path)
    assert again.calls == [8], "only the chunk that never came back is asked again"
    table = read_predictions(tmp_path)
    assert len(table) == 40 and not table.duplicated("key").any()


def test_close_shuts_the_engine_down_and_tears_down_vllms_distributed_state(folders, tmp_path, monkeypatch):
    fake = FakeVLLM().install(monkeypatch)
    backend = VLLMBackend(spec("qwen25", folders["text"]))
    backend.generate([Request("k", "a1 or a2?")])
    backend.close()
    assert fake.engines[0].shut, "the engine core is told to stop: collection alone keeps its GPU memory"
    assert all(p.max_tokens == 512 and p.temperature == 0.7 and p.seed == 0 for p in fake.params)
    assert fake.torn_down == ["destroy_model_parallel", "destroy_distributed_environment"]
    assert backend._llm is None and backend.info["closed"] is True
    backend.generate([Request("k", "again")])
    assert len(fake.engines) == 2, "a later call starts a fresh engine"
