"""The transformers backend runs the real generation path on tiny random models built here.

The outputs are gibberish (random weights); what is specified is the plumbing: batches with
left padding, only new tokens decoded, seeds that reproduce, Qwen2.5-Omni's thinker seeing
video, audio inside video, and a separate wav.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_models import (
    QWEN_SYSTEM,
    VIDEO_PIXELS,
    build_llava_next_video,
    build_omni_full,
    build_qwen2audio,
    build_qwen25vl,
)

from helpers.judges import decoding
from helpers.judges.base import BackendError, JudgeSpec, Media, Request
from helpers.judges.families import build_messages, family_of
from helpers.judges.hf import TransformersBackend, seed_batches

pytestmark = pytest.mark.usefixtures("offline")  # text_lm, omni, sample_media: tests/conftest.py


def text_backend(checkpoint: Path, **generation) -> TransformersBackend:
    spec = JudgeSpec(name="tiny_text", family="text", backend="transformers", checkpoint=str(checkpoint),
                     batch_size=4, generation={"max_new_tokens": 6, **generation})
    return TransformersBackend(spec)


def omni_backend(checkpoint: Path, family: str = "qwen25omni", **options) -> TransformersBackend:
    spec = JudgeSpec(
        name=f"tiny_{family}", family=family, backend="transformers", checkpoint=str(checkpoint),
        input_type="audiovideo", batch_size=2, generation={"max_new_tokens": 4},
        options={"system": QWEN_SYSTEM, "video_min_pixels": VIDEO_PIXELS["shortest_edge"],
                 "video_max_pixels": VIDEO_PIXELS["longest_edge"], **options},
    )
    return TransformersBackend(spec)


# -- pure pieces ---------------------------------------------------------------------------------

def test_greedy_settings_drop_sampling_knobs_and_positive_temperature_samples():
    assert decoding.translate({"temperature": 0, "top_p": 0.8, "max_tokens": 5}, "transformers") == {"do_sample": False, "max_new_tokens": 5}
    assert decoding.translate({"temperature": 0.7, "top_p": 0.8}, "transformers") == {"temperature": 0.7, "top_p": 0.8, "do_sample": True}
    assert decoding.translate({}, "transformers") == {}, "no settings: the checkpoint's own generation config"
    with pytest.raises(BackendError, match="temprature"):
        decoding.translate({"temprature": 0.7}, "transformers")


def test_requests_are_batched_within_one_seed_keeping_first_seen_order():
    requests = [Request(f"k{i}", "p", seed=s) for i, s in enumerate([0, 1, 0, 0, 1])]
    assert list(seed_batches(requests, 2)) == [[0, 2], [3], [1, 4]]


def test_the_user_turn_holds_media_then_text(sample_media):
    family = family_of(JudgeSpec(name="o", family="qwen25omni", backend="transformers"))
    request = Request("k", "Which is better?", media=Media("audiovideo", video=sample_media["video"]))
    system, user = build_messages(request, family, QWEN_SYSTEM)
    assert system == {"role": "system", "content": [{"type": "text", "text": QWEN_SYSTEM}]}
    assert [part["type"] for part in user["content"]] == ["video", "text"]
    assert user["content"][1]["text"] == "Which is better?"


def test_unknown_family_missing_checkpoint_and_impossible_input_are_refused(sample_media, text_lm):
    with pytest.raises(BackendError, match="family 'gpt9'"):
        TransformersBackend(JudgeSpec(name="x", family="gpt9", backend="transformers", checkpoint="x"))
    with pytest.raises(BackendError, match="no checkpoint"):
        TransformersBackend(JudgeSpec(name="x", family="text", backend="transformers"))
    backend = text_backend(text_lm)
    with pytest.raises(BackendError, match="cannot take input type 'video'"):
        backend.generate([Request("k", "p", media=Media("video", video=sample_media["video"]))])
    assert backend.model is None, "the input check comes before loading any weights"


def test_offline_missing_checkpoint_names_it(tmp_path):
    backend = text_backend(tmp_path / "no_such_model")
    with pytest.raises(BackendError, match="no_such_model"):
        backend.generate([Request("k", "p")])


# -- tiny text LM ------------------------------------------------------------------------------

def test_text_lm_answers_a_left_padded_batch_with_new_tokens_only(text_lm):
    backend = text_backend(text_lm, temperature=0)
    prompts = ["a1", "We provide two descriptions for a given input: a1 and a2. Please output a1, a2, or same."]
    requests = [Request(f"k{i}", p) for i, p in enumerate(prompts)]
    batched = backend.generate(requests)
    assert [r.key for r in batched] == ["k0", "k1"]
    assert backend.calls == 2
    assert backend.tokenizer.padding_side == "left"
    # Greedy answers in a padded batch equal the answers generated one by one.
    alone = [backend.generate([r])[0].text for r in requests]
    assert [r.text for r in batched] == alone
    # Only new tokens: the decoded answer is what generate appended after the prompt.
    chat = backend.tokenizer.apply_chat_template([{"role": "user", "content": prompts[0]}], tokenize=False,
                                                 add_generation_prompt=True)
    ids = backend.tokenizer(chat, return_tensors="pt", add_special_tokens=False)
    full = backend.model.generate(**ids, max_new_tokens=6, do_sample=False, pad_token_id=backend.tokenizer.pad_token_id)
    new = backend.tokenizer.decode(full[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert batched[0].text == new


def test_sampling_reproduces_with_the_same_seed_and_differs_across_seeds(text_lm):
    backend = text_backend(text_lm, temperature=1.0, max_new_tokens=12)
    requests = [Request(f"k{i}", "The woman smiles", seed=7) for i in range(3)]
    first, second = backend.generate(requests), backend.generate(requests)
    assert [r.text for r in first] == [r.text for r in second]
    others = backend.generate([Request(f"k{i}", "The woman smiles", seed=s) for i, s in enumerate([1, 2, 3])])
    assert any(r.text != first[0].text for r in others), "other seeds give other samples"


def test_cpu_runs_in_float32_and_close_releases_the_model(text_lm):
    backend = text_backend(text_lm)
    backend.load()
    assert backend.info["dtype"] == "torch.float32" and backend.info["device"] == "cpu"
    assert backend.info["local_path"] == str(Path(text_lm).resolve())
    backend.close()
    assert backend.model is None, "closing releases the weights (the engine loads the text LLM next)"
    assert len(backend.generate([Request("k", "p")])) == 1, "and a later call loads them again"


# -- tiny Qwen2.5-Omni thinker -------------------------------------------------------------------

@pytest.mark.parametrize("input_type", ["video", "audiovideo", "audio", "text"])
def test_omni_thinker_generates_for_every_input_type(omni, sample_media, input_type):
    backend = omni_backend(omni)
    media = None if input_type == "text" else Media(input_type, video=sample_media["video"], audio=sample_media["audio"])
    requests = [Request("a", "Please describe the emotions.", media=media), Request("b", "a1 or a2?", media=media)]
    responses = backend.generate(requests)
    assert [r.key for r in responses] == ["a", "b"]
    assert all(isinstance(r.text, str) and r.latency_s > 0 for r in responses)
    assert type(backend.model).__name__ == "Qwen2_5OmniThinkerForConditionalGeneration"
    assert not hasattr(backend.model, "talker")


def test_omni_audio_in_video_interleaves_the_mp4_sound_with_its_frames(omni, sample_media):
    backend = omni_backend(omni)
    backend.load()
    tokenizer = backend.tokenizer
    counts = {}
    for input_type in ("video", "audiovideo", "audio"):
        request = Request("k", "p", media=Media(input_type, video=sample_media["video"], audio=sample_media["audio"]))
        inputs, extra = backend._encode([request])
        ids = inputs["input_ids"][0].tolist()
        counts[input_type] = (ids.count(tokenizer.video_token_id), ids.count(tokenizer.audio_token_id))
        assert extra["use_audio_in_video"] is (input_type == "audiovideo"), "processor and generate must agree"
    n_video, _ = counts["video"]
    assert counts["video"] == (n_video, 0)
    assert counts["audiovideo"][0] == n_video and counts["audiovideo"][1] > 0
    assert counts["audio"][0] == 0 and counts["audio"][1] > 0
    # 4 frames of 56x56 at 2 fps: 2 temporal x 2x2 merged patches = 8 tokens, not upscaled.
    assert n_video == 8


def test_omni_batches_mixed_input_types_separately(omni, sample_media):
    backend = omni_backend(omni)
    requests = [
        Request("v", "p", media=Media("video", video=sample_media["video"])),
        Request("t", "p"),
        Request("av", "p", media=Media("audiovideo", video=sample_media["video"])),
    ]
    assert [r.key for r in backend.generate(requests)] == ["v", "t", "av"]
    assert backend.calls == 3


def test_omni_greedy_batch_matches_single_requests(omni, sample_media):
    backend = omni_backend(omni)
    media = Media("audiovideo", video=sample_media["video"])
    requests = [Request("a", "short", media=media), Request("b", "a much longer prompt about emotions", media=media)]
    batched = [r.text for r in backend.generate(requests)]
    alone = [backend.generate([r])[0].text for r in requests]
    assert batched == alone


def test_a_bf16_thinker_takes_the_processors_media_features(omni, sample_media):
    # As on a GPU: the checkpoint runs in bf16 while the processor makes float32 features.
    backend = omni_backend(omni, dtype="bfloat16")
    (response,) = backend.generate([Request("k", "p", media=Media("audiovideo", video=sample_media["video"]))])
    assert backend.info["dtype"] == "torch.bfloat16" and isinstance(response.text, str)


def test_a_hub_layout_omni_checkpoint_loads_as_its_thinker_without_a_talker(omni, sample_media, tmp_path):
    backend = omni_backend(build_omni_full(tmp_path / "full_omni", omni))
    (response,) = backend.generate([Request("k", "p", media=Media("audiovideo", video=sample_media["video"]))])
    assert type(backend.model).__name__ == "Qwen2_5OmniThinkerForConditionalGeneration"
    # What the full model's generate gives the thinker with return_audio=False.
    assert backend._default_generation == {"max_new_tokens": 1024,
                                           "eos_token_id": backend.tokenizer.convert_tokens_to_ids("<|im_end|>")}
    from transformers import AutoConfig

    folder = tmp_path / "full_omni"
    assert AutoConfig.from_pretrained(folder, enable_audio_output=False).enable_audio_output is False


# -- the other families of the paper ------------------------------------------------------------

BUILDERS = {"qwen25vl": (build_qwen25vl, "video"), "qwen2audio": (build_qwen2audio, "audio"),
            "llavanextvideo": (build_llava_next_video, "video")}


@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_other_families_answer_a_padded_batch_like_single_requests(family, sample_media, tmp_path_factory):
    build, input_type = BUILDERS[family]
    backend = omni_backend(build(tmp_path_factory.mktemp(family)), family=family)
    media = Media(input_type, video=sample_media["video"], audio=sample_media["audio"])
    requests = [Request("a", "short", media=media), Request("b", "a much longer prompt about emotions", media=media)]
    batched = backend.generate(requests)
    assert [r.key for r in batched] == ["a", "b"]
    assert [r.text for r in batched] == [backend.generate([r])[0].text for r in requests]
    if family == "qwen25vl":
        inputs, _ = backend._encode(requests[:1])
        assert inputs["second_per_grid_ts"].tolist() == [1.0], "2 frames per temporal patch at 2 fps"
    if family == "llavanextvideo":
        inputs, _ = backend._encode(requests[:1])
        assert inputs["pixel_values_videos"].shape[1] == 8, "LLaVA-NeXT-Video sees 8 uniformly sampled frames"


# -- issue 12 case 7: no silent CPU fallback for real-sized models ------------------------------

def test_a_7b_checkpoint_without_a_usable_gpu_stops_with_what_to_install(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    folder = tmp_path / "big"
    folder.mkdir()
    with open(folder / "model.safetensors", "wb") as f:  # sparse: 15 GB on paper, nothing on disk
        f.truncate(15 * 1024**3)
    spec = JudgeSpec(name="big", family="text", backend="local", checkpoint=str(folder),
                     generation={"max_new_tokens": 4})
    with pytest.raises(BackendError) as error:
        TransformersBackend(spec).load()
    message = str(error.value)
    assert "~8.1 B-parameter" in message and "torch.cuda.is_available() = False" in message
    assert "driver >= 580" in message and "-p device cpu" in message
    chosen = JudgeSpec(name="big", family="text", backend="local", checkpoint=str(folder),
                       generation={"max_new_tokens": 4}, options={"device": "cpu"})
    with pytest.raises(Exception) as loading:  # the user's choice passes the check (the fake file then fails)
        TransformersBackend(chosen).load()
    assert "-p device cpu" not in str(loading.value)


def test_tiny_models_still_run_on_the_cpu_without_being_asked(text_lm):
    backend = text_backend(text_lm)
    assert len(backend.generate([Request("k", "p")])) == 1 and backend.info["device"] == "cpu"


def test_gpu_check_says_there_is_no_cuda_and_exits_0(tmp_path):
    import importlib.util
    import json

    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present: run benchmarks/gpu_check.py itself")
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    module_spec = importlib.util.spec_from_file_location("gpu_check", path)
    gpu_check = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(gpu_check)
    assert gpu_check.main(["--out", str(tmp_path / "g.json")]) == 0
    figures = json.loads((tmp_path / "g.json").read_text())
    assert figures["status"] == "skipped: no CUDA"
    assert figures["vllm"]["status"].startswith("skipped: ")  # step 5 says why (no vLLM here, or no CUDA)
