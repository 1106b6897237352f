"""Will a judge fit on a GPU under vLLM? The memory arithmetic of its YAML's engine settings.

vLLM 0.33 (``vllm/v1/worker/gpu_worker.py`` ``determine_available_memory`` and
``vllm/v1/core/kv_cache_utils.py`` ``check_enough_kv_cache_memory``) gives one engine
``gpu_memory_utilization x total GPU memory``; from that it takes the weights and the peak
activations of its profiling run, and what is left is the KV cache. It refuses to start when that
cache cannot hold ONE sequence of ``max_model_len`` tokens ("To serve at least one request with the
model's max seq len ... KV cache is needed, which is larger than the available KV cache memory").
This module does that sum before any GPU is touched:

``KV bytes per token = 2 (K and V) x attention layers that own a cache x KV heads x head dim x dtype bytes``
    the page size of vLLM's ``FullAttentionSpec`` (``vllm/v1/kv_cache_interface.py``:
    ``2 * block_size * num_kv_heads * head_size * dtype_size`` per layer) divided by the block size.
    Layers, KV heads and head dim are the checkpoint's ``config.json`` (its text config: for an omni
    checkpoint ``thinker_config.text_config``); the judge YAML's ``shape:`` states them with their
    source, and a checkpoint folder on disk is read instead when one is there.
``weights = parameters of what vLLM loads (the thinker only, for omni checkpoints) x dtype bytes``
``KV budget = gpu_memory_utilization x GPU memory - weights - ACTIVATION_RESERVE``
    ``ACTIVATION_RESERVE`` (profiling peak, CUDA graphs, non-torch memory) is an estimate, stated
    as such; ``benchmarks/gpu_check.py`` measures the real peak.

The longest request a judge sends bounds ``max_model_len``: the longest prompt text of the data
(UTF-8 bytes: a byte-level BPE token covers at least one byte, so bytes bound tokens), plus, for S2,
a description of ``max_new_tokens`` tokens, plus the media tokens of a clip of ``max_clip_s``
seconds (:func:`media_tokens`, from each processor's token rate), plus the answer's
``max_new_tokens`` and a chat-template allowance.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable
from pathlib import Path

from helpers.judges.base import JudgeSpec
from helpers.judges.families import family_of, local_path

GIB = 1024**3
GPUS: dict[str, float] = {"80 GB (H100)": 81_559 * 1024**2 / GIB, "141 GB (H200)": 143_771 * 1024**2 / GIB}
"""Total memory of the named GPUs as nvidia-smi reports it (MiB), in GiB."""
ACTIVATION_RESERVE_GIB = 6.0
"""Estimate of vLLM's profiling peak (activations of a ``max_num_batched_tokens`` prefill and the
multimodal encoder's dummy batch), CUDA graphs and non-torch memory; ``gpu_check`` measures it."""
TEMPLATE_TOKENS = 128
"""Allowance for the chat template's own tokens (role markers, media start/end tokens)."""
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "half": 2, "auto": 2, "float32": 4, "float": 4}
DEFAULT_CLIP_S = 30.0
"""Clip length the settings are sized for when a YAML names none (``options.max_clip_s``)."""


class FitError(ValueError):
    """A judge's YAML cannot be sized (no ``shape:``, an unknown dtype); the message names the field."""


@dataclasses.dataclass(frozen=True)
class Shape:
    """What of a checkpoint's config decides its memory (see the module docstring)."""

    layers: int
    kv_heads: int
    head_dim: int
    params_b: float
    kv_layers: int | None = None  # layers owning a KV cache (Gemma 3n's last layers share earlier ones')
    source: str = ""

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        return 2 * (self.kv_layers or self.layers) * self.kv_heads * self.head_dim * dtype_bytes


def spec_shape(spec: JudgeSpec) -> Shape:
    """The judge's shape: its checkpoint's ``config.json`` when the folder is on disk, else its YAML's ``shape:``."""
    stated = dict(spec.shape or {})
    if not stated:
        raise FitError(f"judge {spec.name!r}: no 'shape:' (layers, kv_heads, head_dim, params_b) in its YAML")
    try:
        shape = Shape(**stated)
    except TypeError as exc:
        raise FitError(f"judge {spec.name!r}: 'shape:' {exc}") from None
    folder = local_path(spec.checkpoint, spec.options.get("revision"))
    read = config_shape(Path(folder) / "config.json") if folder else None
    if read is None:
        return shape
    return dataclasses.replace(shape, **read, source=f"{folder}/config.json")


def text_config(config: dict) -> dict:
    """The language model's part of a hub config (omni: thinker_config.text_config; VL: text_config)."""
    for path in (("thinker_config", "text_config"), ("text_config",)):
        part = config
        for key in path:
            part = part.get(key) if isinstance(part, dict) else None
        if isinstance(part, dict) and "num_hidden_layers" in part:
            return part
    return config


def config_shape(path: Path) -> dict | None:
    """layers, kv_heads, head_dim (and kv_layers) read from a checkpoint's config.json (None when absent)."""
    if not path.is_file():
        return None
    text = text_config(json.loads(path.read_text(encoding="utf-8")))
    heads = int(text["num_attention_heads"])
    head_dim = int(text.get("head_dim") or text["hidden_size"] // heads)
    layers = int(text["num_hidden_layers"])
    shared = int(text.get("num_kv_shared_layers") or 0)
    return {"layers": layers, "kv_heads": int(text.get("num_key_value_heads") or heads), "head_dim": head_dim,
            "kv_layers": layers - shared if shared else None}


def dtype_bytes(spec: JudgeSpec) -> int:
    dtype = str(spec.options.get("dtype", "auto"))
    if dtype not in DTYPE_BYTES:
        raise FitError(f"judge {spec.name!r}: options.dtype {dtype!r} is not one of {sorted(DTYPE_BYTES)}")
    return DTYPE_BYTES[dtype]


# --------------------------------------------------------------------------- the longest request


def clip_seconds(spec: JudgeSpec) -> float:
    return float(spec.options.get("max_clip_s", DEFAULT_CLIP_S))


def media_tokens(spec: JudgeSpec, input_type: str | None = None) -> int:
    """Upper bound on the media tokens of one request for a clip of ``max_clip_s`` seconds.

    Video (Qwen2.5-Omni/VL, Qwen3-Omni/VL): frames at ``fps`` (at most ``max_frames``), two frames
    per temporal patch, at most ``video_max_pixels`` (the processor class's default when unset)
    per frame, one token per merged patch of ``(patch x merge)^2`` pixels. LLaVA-NeXT-Video:
    ``num_frames`` x 144 (24x24 patches pooled 2x2); Video-LLaVA ``num_frames`` x 257. Audio: Whisper-style encoders give 25 tokens
    per second (Qwen2-Audio, Qwen2.5-Omni: 100 mel frames/s, conv stride 2, pooling 2); Qwen3-Omni's
    AuT encoder 12.5 per second; Gemma 3n a fixed 188 per clip (``audio_seq_length``)."""
    input_type = input_type or spec.input_type
    seconds, options, name = clip_seconds(spec), spec.options, spec.family
    tokens = 0
    if input_type in ("video", "audiovideo"):
        if name == "llavanextvideo":
            tokens += int(options.get("num_frames", 8)) * 144
        elif name == "videollava":  # 224 px frames, 16x16 patches of 14 px and the CLS token each
            tokens += int(options.get("num_frames", 8)) * 257
        else:
            pixel = 32 if name in ("qwen3omni", "qwen3vl") else 28
            max_pixels = int(options.get("video_max_pixels", 768 * pixel * pixel))
            frames = min(int(options.get("max_frames", 768)), math.ceil(seconds * float(options.get("fps", 2.0))))
            frames = max(4, frames + frames % 2)
            tokens += (frames // 2) * math.ceil(max_pixels / (pixel * pixel))
    if input_type in ("audio", "audiovideo"):
        rate = {"qwen3omni": 12.5}.get(name, 25.0)
        tokens += 188 if name == "gemma3n" else math.ceil(seconds * rate)
    return tokens


def longest_texts(pairs: Iterable[tuple[str, str]]) -> dict[str, int]:
    """UTF-8 bytes of the longest prompt of each kind over the pairs (a1, a2) of the data."""
    from helpers import prompts

    worst = {"S1": 0, "judge": 0, "reason": 0}
    for a1, a2 in pairs:
        worst["S1"] = max(worst["S1"], len(prompts.build_s1(a1, a2).encode()))
        worst["judge"] = max(worst["judge"], len(prompts.build_judge("", a1, a2).encode()))
        worst["reason"] = max(worst["reason"], len(prompts.build_reason("", a1, a2).encode()))
    return worst


def dataset_texts(dataset: str, data_dir: str | Path | None = None) -> dict[str, int]:
    """:func:`longest_texts` over both orders of a dataset's pairs (a DataError when they cannot be read)."""
    from helpers.data import load_pairs

    pairs = [(r.a1, r.a2) for order in ("normal", "reverse") for r in load_pairs(dataset, order, data_dir).itertuples()]
    return longest_texts(pairs)


def judge_fits(spec: JudgeSpec, texts: dict[str, int], description_tokens: int | None = None) -> list[Fit]:
    """``spec`` on each of :data:`GPUS`."""
    longest = longest_request(spec, texts, description_tokens)
    return [fit(spec, gpu, gib, longest) for gpu, gib in GPUS.items()]


def longest_request(spec: JudgeSpec, texts: dict[str, int], description_tokens: int | None = None) -> int:
    """Tokens of the longest request this judge sends (prompt + media + answer), an upper bound.

    A multimodal judge sends S1 (pair + media), describe (media) and S2 (pair + its own description
    + media); a text LLM sends S3 (pair + a description of ``description_tokens``), S4's reasoning
    prompt and its extraction (its own reasoning)."""
    from helpers import prompts

    answer = int(decoding_max_tokens(spec))
    system = len((prompts.prompt(spec.options["system_prompt"]) if spec.options.get("system_prompt") else "").encode())
    if family_of(spec).processor and spec.input_type != "text":
        describe = len(prompts.build_describe(spec.options.get("describe_prompt", "describe_input")).encode())
        text = max(texts["S1"], texts["judge"] + answer, describe)  # S2 holds its own description (<= answer)
        return system + text + media_tokens(spec) + answer + TEMPLATE_TOKENS
    described = description_tokens if description_tokens is not None else answer
    text = max(texts["S1"], texts["judge"] + described, texts["reason"] + described,
               len(prompts.build_extract("").encode()) + answer)
    return system + text + answer + TEMPLATE_TOKENS


def decoding_max_tokens(spec: JudgeSpec) -> int:
    from helpers.judges import decoding

    return int(decoding.protocol(spec)["max_new_tokens"])


# --------------------------------------------------------------------------- the fit


@dataclasses.dataclass(frozen=True)
class Fit:
    """One judge on one GPU: what its settings leave for the KV cache, and whether vLLM starts."""

    judge: str
    gpu: str
    weights_gib: float
    kv_budget_gib: float
    kv_needed_gib: float  # one sequence of max_model_len
    longest_request: int
    max_model_len: int
    concurrent: int  # longest requests the KV budget holds at once
    fits: bool
    reason: str

    def line(self) -> str:
        verdict = "fits" if self.fits else "DOES NOT FIT"
        return (f"{self.judge} on {self.gpu}: weights {self.weights_gib:.1f} GiB, KV budget {self.kv_budget_gib:.1f} "
                f"GiB (needs {self.kv_needed_gib:.2f} GiB for one {self.max_model_len}-token sequence; holds "
                f"{self.concurrent} longest requests of {self.longest_request} tokens at once): {verdict}"
                + (f" -- {self.reason}" if self.reason else ""))


def engine_settings(spec: JudgeSpec) -> dict:
    """The vLLM engine settings a judge's YAML must state (none is left to vLLM's defaults)."""
    missing = [k for k in ("max_model_len", "gpu_memory_utilization", "max_num_seqs") if k not in spec.options]
    if missing:
        raise FitError(f"judge {spec.name!r}: options {', '.join(missing)} missing from params/models/{spec.name}.yaml "
                       "(vLLM would take the checkpoint's context, 0.9 utilisation and up to 1024 sequences)")
    return {k: spec.options[k] for k in ("max_model_len", "gpu_memory_utilization", "max_num_seqs")}


def fit(spec: JudgeSpec, gpu: str, gpu_gib: float, longest: int) -> Fit:
    """Whether ``spec``'s engine settings start vLLM on a GPU of ``gpu_gib`` GiB (see the module docstring)."""
    settings, shape, size = engine_settings(spec), spec_shape(spec), dtype_bytes(spec)
    tp = int(spec.options.get("tensor_parallel_size", 1))
    weights = shape.params_b * 1e9 * size / GIB / tp
    budget = float(settings["gpu_memory_utilization"]) * gpu_gib - weights - ACTIVATION_RESERVE_GIB
    per_token = shape.kv_bytes_per_token(size) / tp
    length = int(settings["max_model_len"])
    needed = length * per_token / GIB
    reasons = []
    if longest > length:
        reasons.append(f"the longest request needs {longest} tokens but max_model_len is {length}")
    if budget < needed:
        reasons.append(f"KV budget {budget:.1f} GiB < {needed:.2f} GiB for one {length}-token sequence")
    concurrent = max(0, int(budget * GIB // (longest * per_token))) if budget > 0 else 0
    return Fit(spec.name, gpu, round(weights, 2), round(budget, 2), round(needed, 2), int(longest), length,
               concurrent, not reasons, "; ".join(reasons))


__all__ = ["GPUS", "Fit", "FitError", "Shape", "fit", "engine_settings", "media_tokens", "longest_request",
           "longest_texts", "spec_shape", "config_shape", "dataset_texts", "judge_fits"]
