"""Issue 18: the frames and the frame timing the shipped video judges send equal what the paper's
code sent, on clips of 3, 8 and 75 frames (LLaVA-NeXT-Video) and seconds (Qwen2.5-VL).

The official rules are written out here from their source, independently of ``helpers.judges.media``:

- LLaVA-NeXT-Video (EmoPrefer ``utils/llavanextvideo.py``: ``apply_chat_template(num_frames=8)``):
  transformers 4.49's ``default_sample_indices_fn`` takes
  ``np.arange(0, total_num_frames, total_num_frames / num_frames, dtype=int)``.
- Qwen2.5-VL (EmoPrefer ``utils/qwen25vl.py``): qwen_vl_utils' frames reach the processor without
  an fps, and transformers 4.49's ``Qwen2_5_VLProcessor.__call__`` does
  ``fps = output_kwargs["videos_kwargs"].pop("fps", 2.0)`` and
  ``second_per_grid_ts = [temporal_patch_size / fps] * len(video_grid_thw)``.

Both are checked through the transformers backend with each shipped YAML's options, on tiny
checkpoints and synthetic clips; the temporal value comes from the real processor.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from tiny_models import VIDEO_PIXELS, build_llava_next_video, build_qwen25vl, write_mp4

from helpers.judges.base import Media, Request
from helpers.judges.hf import TransformersBackend
from helpers.judges.registry import load_spec

pytestmark = pytest.mark.usefixtures("offline")

LENGTHS = (3, 8, 75)
TRANSFORMERS_449_DEFAULT_FPS = 2.0  # Qwen2_5_VLProcessor.__call__: videos_kwargs.pop("fps", 2.0)


def official_llava_indices(total_frames: int, num_frames: int) -> list[int]:
    return np.arange(0, total_frames, total_frames / num_frames, dtype=int).tolist()


def test_the_official_llava_rule_is_what_the_issue_read_off_numpy():
    """numpy's integer arange casts the step: 75 frames give multiples of 9, not of 9.375."""
    assert official_llava_indices(75, 8) == [0, 9, 18, 27, 36, 45, 54, 63]
    assert official_llava_indices(8, 8) == list(range(8))
    assert official_llava_indices(3, 8) == [0] * 8


def shipped(name: str, checkpoint, **options) -> TransformersBackend:
    """The shipped judge's YAML on a tiny checkpoint (pixel bounds shrunk: timing does not depend on them)."""
    spec = load_spec(name)
    spec = dataclasses.replace(spec, checkpoint=str(checkpoint), options={
        **spec.options, "dtype": "float32", "video_min_pixels": VIDEO_PIXELS["shortest_edge"],
        "video_max_pixels": VIDEO_PIXELS["longest_edge"], **options})
    backend = TransformersBackend(spec)
    backend.load()
    return backend


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    frames = {n: write_mp4(folder / f"f{n}.mp4", seconds=n / 5, fps=5, with_audio=False) for n in LENGTHS}
    seconds = {s: write_mp4(folder / f"s{s}.mp4", seconds=s, fps=4, with_audio=False) for s in LENGTHS}
    return {"frames": frames, "seconds": seconds}


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    return shipped("llavanextvideo", build_llava_next_video(tmp_path_factory.mktemp("llava")))


@pytest.fixture(scope="module")
def qwen25vl(tmp_path_factory):
    return build_qwen25vl(tmp_path_factory.mktemp("qwen25vl"))


@pytest.mark.parametrize("total", LENGTHS)
def test_llava_next_video_sees_the_frames_transformers_449_picked(llava, clips, total):
    frames = llava._frames(clips["frames"][total])
    assert frames.source_frames == total
    assert list(frames.indices) == official_llava_indices(total, 8)
    inputs, _ = llava._encode([Request("k", "Describe.", media=Media("video", video=clips["frames"][total]))])
    assert inputs["pixel_values_videos"].shape[1] == 8


@pytest.mark.parametrize("seconds", LENGTHS)
def test_qwen25vl_temporal_value_is_the_papers_by_default(qwen25vl, clips, seconds):
    backend = shipped("qwen25vl", qwen25vl)
    request = Request("k", "Describe.", media=Media("video", video=clips["seconds"][seconds]))
    inputs, _ = backend._encode([request])
    temporal_patch = backend.processor.video_processor.temporal_patch_size
    assert inputs["second_per_grid_ts"].tolist() == [temporal_patch / TRANSFORMERS_449_DEFAULT_FPS]


@pytest.mark.parametrize("seconds", LENGTHS)
def test_qwen25vl_source_timing_uses_the_clips_real_seconds_between_frames(qwen25vl, clips, seconds):
    backend = shipped("qwen25vl", qwen25vl, video_timing="source")
    path = clips["seconds"][seconds]
    sampled = len(backend._frames(path).indices)
    inputs, _ = backend._encode([Request("k", "Describe.", media=Media("video", video=path))])
    temporal_patch = backend.processor.video_processor.temporal_patch_size
    assert inputs["second_per_grid_ts"].tolist() == pytest.approx([temporal_patch * seconds / sampled])
    if seconds >= 4:  # fps 1.0: two frames per temporal patch are two seconds apart, twice the paper's value
        assert inputs["second_per_grid_ts"][0] == pytest.approx(2.0, rel=0.1)
