"""What each model family accepts: the transformers class that runs it, whether it perceives audio
and video, whether it takes a processor's multimodal chat or a tokenizer's plain one, and how many
frames it wants. The transformers (``hf``) and vLLM (``vllm``) backends both read these, so a
family refuses an input it cannot perceive the same way on either backend, and a judge YAML's
``family:`` means one thing.

Also here, because both backends record it the same way: where a checkpoint's weights are on disk
(:func:`local_path`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers.judges.base import BackendError, JudgeSpec, Request


@dataclass(frozen=True)
class Family:
    """What a model family can take in and which transformers class runs it."""

    model_class: str
    audio: bool = False
    video: bool = False
    processor: bool = True
    num_frames: int | None = None  # fixed frame count instead of fps sampling
    audio_in_video: bool = False  # hears a video's own soundtrack (input type audiovideo)
    timed_frames: bool = False  # its processor times frames from their metadata (else assumes 24 fps)
    thinker_of: str | None = None  # full omni class of a hub checkpoint: load it talker-less, run its .thinker
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. Qwen3's enable_thinking=False
    fps_kwarg: bool = False  # its processor times frames from the ``fps`` it is given (default 2.0)
    prompt_format: str | None = None  # a fixed conversation template ({system}, {prompt}) instead of the chat template
    frame_rule: str | None = None  # a named frame rule of helpers.judges.media.load_video_frames for num_frames
    vllm: bool = True  # vLLM 0.33's model registry has the family's architecture


FAMILIES: dict[str, Family] = {
    "qwen25omni": Family("Qwen2_5OmniThinkerForConditionalGeneration", audio=True, video=True,
                         audio_in_video=True, thinker_of="Qwen2_5OmniForConditionalGeneration", fps_kwarg=True),
    "qwen25vl": Family("Qwen2_5_VLForConditionalGeneration", video=True, timed_frames=True),
    "qwen2audio": Family("Qwen2AudioForConditionalGeneration", audio=True),
    "llavanextvideo": Family("LlavaNextVideoForConditionalGeneration", video=True, num_frames=8),
    "text": Family("AutoModelForCausalLM", processor=False),
    "qwen25": Family("AutoModelForCausalLM", processor=False),
    # Current families (issue 21; not in the paper). Each is in vLLM 0.33's model registry too:
    # Qwen3OmniMoeForConditionalGeneration (its thinker), Qwen3VLForConditionalGeneration,
    # Gemma3nForConditionalGeneration, Qwen3ForCausalLM.
    # Qwen3-Omni: the thinker of a full checkpoint (model_type qwen3_omni_moe), audio inside video as
    # for Qwen2.5-Omni; its processor is an OmniModalProcessorMixin like Qwen2.5-Omni's (same call shape).
    "qwen3omni": Family("Qwen3OmniMoeThinkerForConditionalGeneration", audio=True, video=True,
                        audio_in_video=True, thinker_of="Qwen3OmniMoeForConditionalGeneration", fps_kwarg=True),
    # Qwen3-VL: video only; its processor writes each frame pair's timestamp from the video metadata.
    "qwen3vl": Family("Qwen3VLForConditionalGeneration", video=True, timed_frames=True),
    # Gemma 3n: audio (and images); no video input in transformers or vLLM, so it judges the audio track.
    "gemma3n": Family("Gemma3nForConditionalGeneration", audio=True),
    # Qwen3 text LLM in non-thinking mode: its chat template pre-fills an empty <think></think>.
    "qwen3": Family("AutoModelForCausalLM", processor=False, chat_template_kwargs={"enable_thinking": False}),
    # Video-LLaVA (MER2026 Track 3 baseline, not in the paper), as the authors' utils/videollava.py runs it: the
    # "llava_v1" conversation rendered by hand (the hub checkpoint's later chat_template.json is not what the
    # authors used), 8 frames at np.linspace(0, n - 1, 8) (LanguageBind's decord loader). vLLM 0.33 has no
    # VideoLlavaForConditionalGeneration: transformers only.
    "videollava": Family("VideoLlavaForConditionalGeneration", video=True, num_frames=8, frame_rule="linspace",
                         prompt_format="{system} USER: <video>\n{prompt} ASSISTANT:", vllm=False),
}


def family_of(spec: JudgeSpec) -> Family:
    try:
        return FAMILIES[spec.family]
    except KeyError:
        raise BackendError(
            f"judge {spec.name!r}: family {spec.family!r} is not supported by the transformers backend "
            f"(known: {', '.join(sorted(FAMILIES))})"
        ) from None


def check_input(spec: JudgeSpec, family: Family, request: Request) -> str:
    """The request's input type, refused when the family cannot perceive it."""
    input_type = request.media.input_type if request.media is not None else "text"
    needs_audio = input_type in ("audio", "audiovideo")
    needs_video = input_type in ("video", "audiovideo")
    if input_type == "audiovideo" and not family.audio_in_video:
        takers = ", ".join(name for name, f in FAMILIES.items() if f.audio_in_video)
        raise BackendError(f"judge {spec.name!r} ({spec.family}) cannot take audio inside video; families that can: "
                           f"{takers}")
    if (needs_audio and not family.audio) or (needs_video and not family.video):
        raise BackendError(f"judge {spec.name!r} ({spec.family}) cannot take input type {input_type!r}")
    return input_type


ENGINES = ("transformers", "vllm")
"""The local engines a judge runs on; a local judge's YAML names the paper's in ``options.engine``."""


def video_timing(spec: JudgeSpec) -> str:
    """How a timed family's frames are timed: ``paper`` (default; the paper's transformers 4.49
    assumed 2 fps for already-sampled frames, :meth:`media.VideoFrames.metadata`) or ``source``
    (the clip's real seconds between the sampled frames), from ``options.video_timing``."""
    from helpers.judges.media import TIMINGS

    timing = spec.options.get("video_timing", "paper")
    if timing not in TIMINGS:
        raise BackendError(f"judge {spec.name!r}: options.video_timing must be one of {TIMINGS}, got {timing!r}")
    return timing


def build_messages(request: Request, family: Family, system: str | None) -> list[dict]:
    """The chat for one request: optional system turn, then a user turn of media then text."""
    messages: list[dict] = []
    if not family.processor:
        if system:
            messages.append({"role": "system", "content": system})
        messages.append({"role": "user", "content": request.prompt})
        return messages
    if system:
        messages.append({"role": "system", "content": [{"type": "text", "text": system}]})
    content: list[dict] = []
    input_type = request.media.input_type if request.media is not None else "text"
    if input_type == "audio":
        content.append({"type": "audio", "audio": str(request.media.audio)})
    elif input_type in ("video", "audiovideo"):
        content.append({"type": "video", "video": str(request.media.video)})
    content.append({"type": "text", "text": request.prompt})
    messages.append({"role": "user", "content": content})
    return messages


def local_path(checkpoint: str | None, revision: str | None = None) -> str | None:
    """Where the weights are on disk: the folder itself, or the HF-cache snapshot a hub id
    resolves to (looked up offline; None when it is not cached), so a manifest tells which
    files were read, not just which name was asked for."""
    if not checkpoint:
        return None
    if Path(checkpoint).is_dir():
        return str(Path(checkpoint).resolve())
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(checkpoint, "config.json", revision=revision)
    except (ImportError, ValueError):  # no hub client, or not a valid repo id
        return None
    return str(Path(found).parent) if isinstance(found, str) else None
