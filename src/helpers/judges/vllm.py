"""Judging with vLLM's offline ``LLM`` on a GPU box.

Everything that decides *what* vLLM is asked — the chat prompt text, the ``multi_modal_data``,
``mm_processor_kwargs``, ``limit_mm_per_prompt`` and the sampling parameters — is built by pure
functions below, so it is tested here without vLLM installed. ``import vllm`` happens only in
:meth:`VLLMBackend._engine`, the first time a GPU run needs it (vLLM pins its own transformers
and ships CUDA-only wheels).

Prompt format: the checkpoint's own chat template (processor for multimodal families, tokenizer
for text LLMs), rendered to text with one placeholder per medium; vLLM expands the placeholders.
Qwen2.5-VL gets ``(frames, metadata)`` so that its processor times the already-sampled frames
correctly. Qwen2.5-Omni audio-in-video follows vLLM's thinker example: the prompt holds only the video
placeholder, ``multi_modal_data`` holds the frames and the mp4's 16 kHz audio, and
``mm_processor_kwargs={"use_audio_in_video": True}``.

Sampling: the judge's complete protocol (:func:`helpers.judges.decoding.protocol`, the same dict
the transformers backend translates), greedy as temperature 0, so vLLM's defaults (temperature
1.0, 16 tokens) never apply. Every request carries its own seed, so a round is reproducible
regardless of how vLLM schedules it. The pipeline hands over the pending requests in chunks of
:data:`CHUNK`; requests sharing a video are sent next to each other so vLLM's prefix and encoder
caches can reuse the video's tokens; responses come back in the caller's order. ``close()``
shuts the engine down and frees its GPU memory before the next model loads.

``spec.options`` understood here (besides the media ones of the transformers backend: ``fps``,
``max_frames``, ``num_frames``, ``system``): ``tensor_parallel_size``, ``gpu_memory_utilization``,
``max_model_len``, ``max_num_seqs``, ``limit_mm_per_prompt``, ``dtype``, ``revision``, ``enforce_eager``. Every
vLLM judge's YAML states the first four (sized by :mod:`helpers.judges.fit`; ``python -m helpers.run GRID
--dry-run`` prints whether they fit a GPU); being options, they are part of the run identity.
"""

from __future__ import annotations

import importlib.metadata
import os
import time
from collections.abc import Callable
from typing import Any

from helpers.judges import decoding
from helpers.judges import media as media_io
from helpers.judges.base import Backend, BackendError, JudgeSpec, Request, Response
from helpers.judges.families import build_messages, check_input, family_of, local_path, video_timing

PAPER_TEXT_SAMPLING = decoding.PAPER_TEXT_SAMPLING
"""The paper's vLLM settings for the S3/S4 text LLM (Qwen2.5-7B-Instruct)."""
ENGINE_OPTIONS = ("tensor_parallel_size", "gpu_memory_utilization", "max_model_len", "max_num_seqs",
                  "limit_mm_per_prompt", "dtype", "revision", "enforce_eager")
MAX_DECODED_BYTES = 2 * 1024**3
"""Host memory the decoded media of one ``LLM.generate`` call may hold (``options.max_decoded_bytes``):
512 requests of 720p clips would otherwise hold ~14 GB of frames before generation starts."""
CHUNK = 512
"""Requests handed to ``LLM.generate`` at once: enough for continuous batching and the prefix/
encoder caches to work, few enough that a killed run loses little (results are stored per chunk)."""


def sampling_kwargs(spec: JudgeSpec, seed: int) -> dict:
    """``SamplingParams`` keyword arguments for one request of this judge: its complete protocol
    (:func:`decoding.protocol`, the same dict the transformers backend translates), never
    vLLM's defaults, and the request's seed."""
    settings = decoding.translate(decoding.protocol(spec), "vllm", who=f"judge {spec.name!r}")
    settings["seed"] = int(seed)
    return settings


def limit_mm_per_prompt(spec: JudgeSpec) -> dict[str, int]:
    """How many items of each medium one prompt may carry. vLLM reserves memory for, and profiles,
    every medium the model supports that is not set to 0 (999 images when ``image`` is unset), so
    the modalities a judge never sends are stated as 0."""
    family = family_of(spec)
    if not family.processor:
        return {}
    limits = {"image": 0}
    if family.video:
        limits["video"] = 1
    if family.audio:
        limits["audio"] = 1
    return limits


def processor_kwargs(spec: JudgeSpec) -> dict[str, Any]:
    """The processor settings every request of this judge shares, given to the engine too
    (``mm_processor_kwargs`` of ``vllm.LLM``) so that its memory profiler sizes the largest
    frame the judge will send, not the processor's own bounds: the per-frame pixel bounds and,
    for a family timed by ``fps`` (Omni), that fps."""
    family, options = family_of(spec), spec.options
    kwargs: dict[str, Any] = {}
    if family.video and ("video_min_pixels" in options or "video_max_pixels" in options):
        kwargs["size"] = media_io.pixel_bounds(options)
    if family.fps_kwarg:
        kwargs["fps"] = float(options.get("fps", media_io.DEFAULT_FPS))
    return kwargs


def engine_kwargs(spec: JudgeSpec) -> dict:
    """Keyword arguments for ``vllm.LLM``: the checkpoint, media limits, the shared processor
    settings, the context length, caching and options."""
    if not spec.checkpoint:
        raise BackendError(f"judge {spec.name!r}: no checkpoint (a hub id or a local folder) in its YAML")
    kwargs: dict[str, Any] = {"model": spec.checkpoint, "enable_prefix_caching": True, "seed": 0}
    limits = limit_mm_per_prompt(spec)
    if limits:
        kwargs["limit_mm_per_prompt"] = limits
    shared = processor_kwargs(spec)
    if shared:
        kwargs["mm_processor_kwargs"] = shared
    kwargs.update({k: spec.options[k] for k in ENGINE_OPTIONS if k in spec.options})
    stated = dict(kwargs.get("limit_mm_per_prompt") or {})
    short = {m: n for m, n in limits.items() if n and int(stated.get(m, 0)) < n}
    if short:
        raise BackendError(f"judge {spec.name!r}: options.limit_mm_per_prompt {stated} allows fewer than each request "
                           f"sends ({limits}); vLLM would refuse every request")
    return kwargs


def multi_modal_inputs(
    request: Request,
    spec: JudgeSpec,
    load_video: Callable[..., media_io.VideoFrames] = media_io.load_video,
    load_audio: Callable[..., Any] = media_io.load_audio,
    cache: dict | None = None,
) -> tuple[dict, dict]:
    """``multi_modal_data`` and ``mm_processor_kwargs`` for one request (empty for text).

    ``cache`` (path -> decoded media) lets the requests of one chunk that share a video decode
    it once."""
    family = family_of(spec)
    input_type = check_input(spec, family, request)
    options = spec.options
    cache = {} if cache is None else cache
    data: dict[str, Any] = {}
    kwargs: dict[str, Any] = {}

    def once(kind: str, path, load: Callable[[], Any]):
        key = (kind, str(path))
        if key not in cache:
            cache[key] = load()
        return cache[key]

    if input_type in ("video", "audiovideo"):
        video = once("video", request.media.video, lambda: load_video(
            request.media.video,
            fps=float(options.get("fps", media_io.DEFAULT_FPS)),
            max_frames=int(options.get("max_frames", media_io.MAX_FRAMES)),
            num_frames=options.get("num_frames", family.num_frames),
        ))
        if family.timed_frames:
            # Qwen2.5-VL times frames from their metadata (else it assumes 24 fps); frames are sampled.
            data["video"] = (video.frames, video.metadata(video_timing(spec)))
            kwargs["do_sample_frames"] = False
        else:
            data["video"] = video.frames
        kwargs.update(processor_kwargs(spec))
    if input_type == "audio":
        data["audio"] = (once("audio", request.media.audio, lambda: load_audio(request.media.audio)),
                         media_io.SAMPLE_RATE)
    if input_type == "audiovideo":
        data["audio"] = (once("audio", request.media.video, lambda: load_audio(request.media.video)),
                         media_io.SAMPLE_RATE)
        kwargs["use_audio_in_video"] = True
    return data, kwargs


def decoded_bytes(cache: dict) -> int:
    """Host memory held by the decoded media of a chunk."""
    total = 0
    for value in cache.values():
        array = value.frames if isinstance(value, media_io.VideoFrames) else value
        total += int(getattr(array, "nbytes", 0))
    return total


def render_prompt(request: Request, spec: JudgeSpec, chat_template: Callable[[list[dict]], str]) -> str:
    """The prompt text: the checkpoint's chat template applied to system + media + user text.

    ``chat_template`` is e.g. ``lambda m: processor.apply_chat_template(m, tokenize=False,
    add_generation_prompt=True)``; for audio-in-video the chat holds only the video part, as
    vLLM's Qwen2.5-Omni example does.
    """
    system = request.system if request.system is not None else spec.options.get("system")
    return chat_template(build_messages(request, family_of(spec), system))


def cache_friendly_order(requests: list[Request]) -> list[int]:
    """Indices with requests sharing a video (then an audio file) adjacent, stable otherwise."""
    def media_key(index: int) -> tuple[str, str]:
        media = requests[index].media
        if media is None:
            return ("", "")
        return (str(media.video or ""), str(media.audio or ""))

    first_seen: dict[tuple[str, str], int] = {}
    for index in range(len(requests)):
        first_seen.setdefault(media_key(index), index)
    return sorted(range(len(requests)), key=lambda i: (first_seen[media_key(i)], i))


def build_inputs(
    requests: list[Request],
    spec: JudgeSpec,
    chat_template: Callable[[list[dict]], str],
    *,
    max_bytes: int | None = None,
    **loaders,
) -> tuple[list[int], list[dict], list[dict]]:
    """Everything ``LLM.generate`` needs, in cache-friendly order: (order, prompts, sampling kwargs).
    Each video is decoded once however many requests share it."""
    groups = list(input_groups(requests, spec, chat_template, max_bytes=max_bytes, **loaders))
    return ([i for g in groups for i in g[0]], [p for g in groups for p in g[1]], [k for g in groups for k in g[2]])


def input_groups(
    requests: list[Request],
    spec: JudgeSpec,
    chat_template: Callable[[list[dict]], str],
    *,
    max_bytes: int | None = None,
    **loaders,
):
    """:func:`build_inputs` in groups whose decoded media stay within ``max_bytes`` of host
    memory (a group always holds at least one request), yielded one at a time so that a group is
    generated and dropped before the next one is decoded."""
    order, prompts, sampling, cache = [], [], [], {}
    for index in cache_friendly_order(requests):
        request = requests[index]
        before = dict(cache)
        data, kwargs = multi_modal_inputs(request, spec, cache=cache, **loaders)
        if max_bytes is not None and order and decoded_bytes(cache) > max_bytes:
            yield order, prompts, sampling  # this request's media start the next group
            fresh = {k: v for k, v in cache.items() if k not in before}
            order, prompts, sampling, cache = [], [], [], fresh
        prompt: dict[str, Any] = {"prompt": render_prompt(request, spec, chat_template)}
        if data:
            prompt["multi_modal_data"] = data
        if kwargs:
            prompt["mm_processor_kwargs"] = kwargs
        order.append(index)
        prompts.append(prompt)
        sampling.append(sampling_kwargs(spec, request.seed))
    if order:
        yield order, prompts, sampling


def load_chat_template(spec: JudgeSpec) -> Callable[[list[dict]], str]:
    """The checkpoint's chat template via transformers (processor or tokenizer), rendered to text."""
    import transformers

    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    kwargs: dict[str, Any] = {"local_files_only": offline}
    if spec.options.get("revision"):
        kwargs["revision"] = spec.options["revision"]
    family = family_of(spec)
    loader = transformers.AutoProcessor if family.processor else transformers.AutoTokenizer
    owner = loader.from_pretrained(spec.checkpoint, **kwargs)
    return lambda messages: owner.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                      **family.chat_template_kwargs)


def _engine_facts(llm) -> dict[str, Any]:
    """The dtype the engine resolved (``auto`` becomes e.g. bfloat16) and the library versions
    it runs on; best effort, because vLLM's internals move between releases."""
    facts: dict[str, Any] = {}
    config = getattr(getattr(llm, "llm_engine", None), "model_config", None)
    if getattr(config, "dtype", None) is not None:
        facts["dtype"] = str(config.dtype)
    for name in ("torch", "transformers"):
        try:
            facts[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            facts[name] = None
    return facts


class VLLMBackend(Backend):
    """A judge served in-process by vLLM (GPU only; see the module docstring)."""

    kind = "vllm"

    chunk_size = CHUNK  # the pipeline hands over this many pending requests per call

    def __init__(self, spec: JudgeSpec):
        super().__init__(spec)
        if not family_of(spec).vllm:  # fail early on an unknown family, or one vLLM does not implement ...
            raise BackendError(f"judge {spec.name!r}: family {spec.family!r} has no vLLM implementation (vLLM 0.33's "
                               f"model registry lacks {family_of(spec).model_class}); run it with engine "
                               "'transformers'")
        engine_kwargs(spec)  # ... or a missing checkpoint
        self._llm = None
        self._sampling_params: Callable[..., Any] | None = None
        self._template: Callable[[list[dict]], str] | None = None
        self.info: dict[str, Any] = {"backend": "vllm", "checkpoint": spec.checkpoint,
                                     "local_path": local_path(spec.checkpoint, spec.options.get("revision")),
                                     "revision": spec.options.get("revision"),
                                     "dtype": spec.options.get("dtype", "auto"), "device": "cuda",
                                     "tensor_parallel_size": spec.options.get("tensor_parallel_size", 1)}

    def _engine(self):
        if self._llm is None:
            import vllm  # only here: the rest of the project never needs vLLM

            self._llm = vllm.LLM(**engine_kwargs(self.spec))
            self._sampling_params = vllm.SamplingParams
            self.info["vllm"] = vllm.__version__
            self.info.update(_engine_facts(self._llm))
        return self._llm

    def generate(self, requests: list[Request]) -> list[Response]:
        if not requests:
            return []
        if self._template is None:
            self._template = load_chat_template(self.spec)
        responses: list[Response | None] = [None] * len(requests)
        max_bytes = int(self.spec.options.get("max_decoded_bytes", MAX_DECODED_BYTES))
        for order, prompts, sampling in input_groups(requests, self.spec, self._template, max_bytes=max_bytes):
            llm = self._engine()
            start = time.perf_counter()
            outputs = llm.generate(prompts, [self._sampling_params(**kw) for kw in sampling], use_tqdm=False)
            latency = (time.perf_counter() - start) / len(order)
            for index, output in zip(order, outputs, strict=True):
                responses[index] = Response(requests[index].key, output.outputs[0].text, latency)
        self.calls += len(requests)
        return responses  # type: ignore[return-value]

    def close(self) -> None:
        """Shut the engine down and hand its GPU memory back before the next model loads
        (S3/S4's text LLM follows the MLLM in one process): vLLM's engine core runs in its own
        process and holds its memory until told to stop; garbage collection alone is not enough."""
        if self._llm is None:
            return
        import gc

        llm, self._llm = self._llm, None
        shutdown_engine(llm)
        del llm
        gc.collect()
        release_cuda()
        self.info["closed"] = True


def shutdown_engine(llm) -> list[str]:
    """Stop vLLM's engine core process and tear down its distributed state; returns what was
    called (for tests and logs). In vLLM 0.33 (the pinned range) ``LLM`` has no ``shutdown``:
    it lives on ``llm.llm_engine.engine_core`` (``EngineCoreClient.shutdown``)."""
    llm.llm_engine.engine_core.shutdown()
    called = ["engine_core.shutdown"]
    from vllm.distributed import parallel_state

    for name in ("destroy_model_parallel", "destroy_distributed_environment"):
        getattr(parallel_state, name)()
        called.append(name)
    return called


def release_cuda() -> None:
    """Empty torch's CUDA cache, only where this process has initialised CUDA itself: touching
    CUDA here first (``reset_peak_memory_stats`` does) would make vLLM start the next engine
    (S3/S4's text LLM) with ``spawn``, which holds memory and fails in scripts without a main guard."""
    try:
        import torch
    except ImportError:
        return
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
