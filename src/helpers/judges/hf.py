"""Judging with transformers on the user's machine: Qwen2.5-Omni (thinker), Qwen2.5-VL,
Qwen2-Audio, LLaVA-NeXT-Video and text-only causal LMs (what each family accepts:
:mod:`helpers.judges.families`).

Why the choices:
- Qwen2.5-Omni runs as its *thinker* only: the talker (speech output) is never built, which
  is what ``generate(..., return_audio=False)`` in the paper's code amounts to, at a fraction of
  the memory. ``use_audio_in_video`` is set once per batch from the input type and passed to
  both the processor and ``generate`` — a mismatch silently misplaces the audio positions.
- Media are decoded by :mod:`helpers.judges.media` (PyAV; fps 2, 16 kHz mono, Qwen's own
  defaults) and handed to the processor as arrays, so no CUDA-only torchcodec is needed.
- Requests are grouped by (seed, input type) and each group is generated in batches of
  ``spec.batch_size`` with left padding, after ``torch.manual_seed(seed)``: the same requests
  with the same seed give the same text. Only the newly generated tokens are decoded.
- Decoding follows the judge's complete protocol (:func:`helpers.judges.decoding.protocol`:
  the YAML's ``generation:`` with every unstated knob made explicit), passed to ``generate`` in
  full, so neither the checkpoint's ``generation_config.json`` nor transformers' 20-token
  default decides anything; ``info`` records the checkpoint's own values beside it.
- A >= 1 B-parameter model that lands on the CPU only because CUDA is unusable stops with what
  to install (:func:`check_cpu_fallback`), unless ``options.device`` is ``cpu``.

``spec.options`` understood here: ``system`` (default system prompt), ``dtype`` (GPU; default
``auto``), ``device`` (default ``cuda`` when available), ``device_map``,
``attn_implementation`` (e.g. ``flash_attention_2``), ``revision``, ``fps`` (default 2),
``max_frames``, ``num_frames`` (fixed frame count; LLaVA-NeXT-Video defaults to 8),
``video_min_pixels``/``video_max_pixels`` (per-frame pixel bounds passed on every processor
call; when unset, nothing is passed and the checkpoint's processor config supplies its own bounds).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from helpers.judges import decoding
from helpers.judges import media as media_io
from helpers.judges.base import Backend, BackendError, JudgeSpec, Request, Response
from helpers.judges.families import build_messages, check_input, family_of, local_path, video_timing


def seed_batches(requests: list[Request], batch_size: int, key=lambda r: r.seed) -> Iterator[list[int]]:
    """Indices of requests, grouped by ``key`` (first-seen order), in chunks of ``batch_size``."""
    groups: dict[Any, list[int]] = {}
    for index, request in enumerate(requests):
        groups.setdefault(key(request), []).append(index)
    for indices in groups.values():
        for start in range(0, len(indices), max(1, batch_size)):
            yield indices[start : start + batch_size]


def checkpoint_generation(model) -> dict:
    """The decoding knobs a checkpoint's own ``generation_config.json`` sets (for manifests: a
    YAML protocol that differs from them is visible, never silently overridden or inherited)."""
    config = getattr(model, "generation_config", None)
    if config is None:
        return {}
    stated = config.to_diff_dict() if hasattr(config, "to_diff_dict") else config.to_dict()
    return {k: stated[k] for k in (*decoding.KNOBS, "max_length") if k in stated}


CPU_PARAMS_LIMIT = 1_000_000_000
"""From this size on, a model that lands on the CPU because no GPU was found stops the run."""


def weight_bytes(folder: str | None) -> int:
    """Bytes of weight files in a checkpoint folder (0 when unknown), to size a model unloaded."""
    if not folder or not Path(folder).is_dir():
        return 0
    return sum(f.stat().st_size for f in Path(folder).iterdir() if f.suffix in (".safetensors", ".bin", ".pt")
               and f.name != "spk_dict.pt")


def cuda_report() -> str:
    """What this machine says about CUDA: torch's build, whether a GPU is usable, the driver."""
    import shutil
    import subprocess

    import torch

    parts = [f"torch {torch.__version__} (CUDA build {torch.version.cuda or 'none'})",
             f"torch.cuda.is_available() = {torch.cuda.is_available()}"]
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10, check=False).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        parts.append(f"nvidia-smi: {out or 'no GPU listed'}")
    else:
        parts.append("no nvidia-smi on PATH (no NVIDIA driver found)")
    return "; ".join(parts)


def check_cpu_fallback(spec: JudgeSpec, n_bytes: int) -> None:
    """Stop before a >= 1 B-parameter model runs on the CPU only because CUDA is unusable (a
    driver older than the CUDA build of torch looks exactly like a machine without a GPU)."""
    n_params = n_bytes / 2  # bf16/fp16 checkpoints: 2 bytes per parameter
    if n_params < CPU_PARAMS_LIMIT:
        return
    raise BackendError(
        f"judge {spec.name!r}: no usable CUDA GPU, so its ~{n_params / 1e9:.1f} B-parameter checkpoint "
        f"{spec.checkpoint!r} would run on the CPU in float32 (hours per round). Found: {cuda_report()}. "
        "Install a CUDA build of torch that your driver supports (CUDA 13 builds need NVIDIA driver >= 580; "
        "CUDA 12.x builds need >= 525), e.g. `conda env create -f environment.yml`; or pass `-p device cpu` "
        "(engine.run(device='cpu')) to run on the CPU anyway."
    )


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def omni_source(checkpoint: str, model_kwargs: dict) -> tuple[str, dict]:
    """Where to load a full Qwen2.5-Omni checkpoint from, and the kwargs to load it with.

    transformers' ``Qwen2_5OmniForConditionalGeneration.from_pretrained`` looks ``spk_dict.pt``
    up with ``kwargs.pop("revision", None)`` although ``revision`` is its own parameter, so the
    speaker file is always asked of ``main``: with ``HF_HUB_OFFLINE=1`` and only the pinned
    revision cached, loading fails, and online it reads ``main``'s file. A hub id with a revision
    is therefore resolved to that revision's snapshot folder first (downloading it when online,
    as ``from_pretrained`` would) and loaded from the folder, where every file is that revision's.
    """
    revision = model_kwargs.get("revision")
    if not revision or Path(checkpoint).is_dir():
        return checkpoint, model_kwargs
    from huggingface_hub import snapshot_download

    folder = snapshot_download(checkpoint, revision=revision, local_files_only=bool(model_kwargs.get("local_files_only")))
    return folder, {k: v for k, v in model_kwargs.items() if k != "revision"}


class TransformersBackend(Backend):
    """A judge model loaded in-process with transformers (see the module docstring)."""

    kind = "transformers"

    def __init__(self, spec: JudgeSpec):
        super().__init__(spec)
        self.family = family_of(spec)
        if not spec.checkpoint:
            raise BackendError(f"judge {spec.name!r}: no checkpoint (a hub id or a local folder) in its YAML")
        self.model = None
        self.processor = None
        self.tokenizer = None
        self.device = None
        self.info: dict[str, Any] = {"backend": "transformers", "checkpoint": spec.checkpoint,
                                     "local_path": local_path(spec.checkpoint, spec.options.get("revision")),
                                     "revision": spec.options.get("revision"), "loaded": False}
        self._default_generation: dict = {}
        self._checkpoint_generation: dict | None = None  # a full omni checkpoint's, read before its thinker is split off

    # -- loading -----------------------------------------------------------------------------
    def load(self) -> None:
        """Load model and processor once (first ``generate`` calls this)."""
        if self.model is not None:
            return
        import torch
        import transformers

        options = self.spec.options
        device = options.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
        if device == "cpu" and options.get("device") != "cpu":  # a fallback, not the user's choice
            check_cpu_fallback(self.spec, weight_bytes(self.info.get("local_path")))
        load_kwargs: dict[str, Any] = {"local_files_only": _offline()}
        if options.get("revision"):
            load_kwargs["revision"] = options["revision"]
        model_kwargs = dict(load_kwargs)
        if device == "cpu":
            # float32 unless a dtype is named: "auto" would pick the checkpoint's bf16, slow on CPUs
            dtype = options.get("dtype", "auto")
            model_kwargs["dtype"] = torch.float32 if dtype == "auto" else getattr(torch, dtype)
        else:
            model_kwargs["dtype"] = options.get("dtype", "auto")
            model_kwargs["device_map"] = options.get("device_map", "auto" if device == "cuda" else device)
        if options.get("attn_implementation"):
            model_kwargs["attn_implementation"] = options["attn_implementation"]
        checkpoint = self.spec.checkpoint
        try:
            if self.family.processor:
                self.processor = transformers.AutoProcessor.from_pretrained(checkpoint, **load_kwargs)
                self.tokenizer = self.processor.tokenizer
            else:
                self.tokenizer = transformers.AutoTokenizer.from_pretrained(checkpoint, **load_kwargs)
            self.model = self._load_model(transformers, checkpoint, model_kwargs)
        except OSError as exc:
            hint = " (HF_HUB_OFFLINE=1: use a local folder or a checkpoint already in the HF cache)" if _offline() else ""
            raise BackendError(f"judge {self.spec.name!r}: cannot load checkpoint {checkpoint!r}{hint}: {exc}") from exc
        if device == "cpu":
            self.model.to("cpu")
            if options.get("device") != "cpu":
                n_params = sum(p.numel() for p in self.model.parameters())
                if n_params >= CPU_PARAMS_LIMIT:
                    self.model = None
                    check_cpu_fallback(self.spec, 2 * n_params)
        self.model.eval()
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.device = next(self.model.parameters()).device
        self.info = {
            "backend": "transformers",
            "checkpoint": checkpoint,
            "local_path": local_path(checkpoint, options.get("revision")),
            "revision": options.get("revision"),
            "model_class": type(self.model).__name__,
            "dtype": str(next(self.model.parameters()).dtype),
            "device": str(self.device),
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "loaded": True,
            # what decodes (the YAML's protocol) beside what the checkpoint would have used
            "generation": {k: v for k, v in self.generation_settings().items() if k in decoding.KNOBS},
            "checkpoint_generation": (self._checkpoint_generation if self._checkpoint_generation is not None
                                      else checkpoint_generation(self.model)),
        }

    def _load_model(self, transformers, checkpoint: str, model_kwargs: dict):
        """The model; for a full omni checkpoint (Qwen2.5-Omni, Qwen3-Omni: ``Family.thinker_of``), its
        thinker with the talker never built."""
        if self.family.thinker_of:
            full_class = getattr(transformers, self.family.thinker_of)
            config = transformers.AutoConfig.from_pretrained(checkpoint, **{
                k: v for k, v in model_kwargs.items() if k in ("local_files_only", "revision")})
            if config.model_type == full_class.config_class.model_type:
                source, kwargs = omni_source(checkpoint, model_kwargs)
                full = full_class.from_pretrained(source, enable_audio_output=False, **kwargs)
                # the hub's generation_config.json belongs to the full model, not to its thinker
                self._checkpoint_generation = checkpoint_generation(full)
                # What the full model's generate gives its thinker when return_audio=False.
                eos = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
                self._default_generation = {"max_new_tokens": 1024, "eos_token_id": eos}
                return full.thinker
        model_class = getattr(transformers, self.family.model_class)
        return model_class.from_pretrained(checkpoint, **model_kwargs)

    # -- generation --------------------------------------------------------------------------
    def generate(self, requests: list[Request]) -> list[Response]:
        if not requests:
            return []
        for request in requests:
            check_input(self.spec, self.family, request)
        self.load()
        responses: list[Response | None] = [None] * len(requests)

        def group(request: Request) -> tuple:
            return request.seed, request.media.input_type if request.media is not None else "text"

        for indices in seed_batches(requests, self.spec.batch_size, key=group):
            batch = [requests[i] for i in indices]
            start = time.perf_counter()
            texts = self._generate_batch(batch)
            latency = (time.perf_counter() - start) / len(batch)
            for i, request, text in zip(indices, batch, texts, strict=True):
                responses[i] = Response(request.key, text, latency)
        self.calls += len(requests)
        return responses  # type: ignore[return-value]

    def _generate_batch(self, batch: list[Request]) -> list[str]:
        import torch

        inputs, extra = self._encode(batch)
        inputs = inputs.to(self.device)
        if self.family.processor:  # pixel values and audio features in the model's dtype (bf16 on GPU)
            inputs = inputs.to(self.model.dtype)
        settings = {**self.generation_settings(), **extra}
        torch.manual_seed(batch[0].seed)
        with torch.inference_mode():
            output = self.model.generate(**inputs, **settings)
        sequences = output.sequences if hasattr(output, "sequences") else output
        new_tokens = sequences[:, inputs["input_ids"].shape[1] :]
        return self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def generation_settings(self) -> dict:
        """The ``generate`` kwargs of every batch: the judge's complete protocol
        (:func:`decoding.protocol`), so no knob falls back to the checkpoint's
        ``generation_config.json`` (or to transformers' 20-token default)."""
        protocol = decoding.complete(self.spec.generation, {**decoding.defaults_for(self.spec),
                                                             **self._default_generation_knobs()},
                                     who=f"judge {self.spec.name!r}")
        settings = {**self._default_generation, **decoding.translate(protocol, "transformers")}
        if self.tokenizer is not None:
            settings.setdefault("pad_token_id", self.tokenizer.pad_token_id)
        return settings

    def _default_generation_knobs(self) -> dict:
        return {k: v for k, v in self._default_generation.items() if k in decoding.KNOBS}

    def _system(self, request: Request) -> str | None:
        return request.system if request.system is not None else self.spec.options.get("system")

    def _encode(self, batch: list[Request]) -> tuple[Any, dict]:
        """Tokenised inputs for a batch of one input type, and extra ``generate`` kwargs."""
        conversations = [build_messages(r, self.family, self._system(r)) for r in batch]
        if not self.family.processor:
            texts = [self.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True,
                                                        **self.family.chat_template_kwargs) for c in conversations]
            return self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False), {}
        if self.family.prompt_format:  # the family's own conversation template (Video-LLaVA's llava_v1)
            texts = [self.family.prompt_format.format(system=self._system(r) or "", prompt=r.prompt).lstrip()
                     for r in batch]
        else:
            texts = [self.processor.apply_chat_template(c, tokenize=False, add_generation_prompt=True,
                                                        **self.family.chat_template_kwargs) for c in conversations]
        input_type = batch[0].media.input_type if batch[0].media is not None else "text"
        kwargs: dict[str, Any] = {"text": texts, "padding": True, "return_tensors": "pt"}
        extra: dict[str, Any] = {}
        if input_type in ("video", "audiovideo"):
            videos = [self._frames(r.media.video) for r in batch]
            kwargs["videos"] = [v.frames for v in videos]
            kwargs["videos_kwargs"] = self._videos_kwargs()
            if self.family.timed_frames:  # its processor times the frames from their metadata
                timing = video_timing(self.spec)
                kwargs["videos_kwargs"]["video_metadata"] = [v.metadata(timing) for v in videos]
        if input_type == "audio":
            kwargs["audio"] = [media_io.load_audio(r.media.audio) for r in batch]
            kwargs["sampling_rate"] = media_io.SAMPLE_RATE
        if self.family.audio_in_video:
            in_video = input_type == "audiovideo"
            extra["use_audio_in_video"] = in_video
            if in_video:
                kwargs.update(self._audio_in_video_kwargs([r.media.video for r in batch]))
        return self.processor(**kwargs), extra

    def _frames(self, path: Path) -> media_io.VideoFrames:
        options = self.spec.options
        if self.family.frame_rule:
            return media_io.load_video_frames(path, self.family.frame_rule,
                                              max_frames=int(options.get("num_frames", self.family.num_frames)))
        return media_io.load_video(
            path,
            fps=float(options.get("fps", media_io.DEFAULT_FPS)),
            max_frames=int(options.get("max_frames", media_io.MAX_FRAMES)),
            num_frames=options.get("num_frames", self.family.num_frames),
        )

    def _videos_kwargs(self) -> dict:
        """Per-call video settings: frames are already sampled; the size bounds stop the
        processor from resizing tiny or huge frames to its own defaults behind our back."""
        options = self.spec.options
        kwargs: dict[str, Any] = {"do_sample_frames": False}
        if self.family.fps_kwarg:  # Omni times frames by this fps (2.0 when none is given)
            kwargs["fps"] = float(options.get("fps", media_io.DEFAULT_FPS))
        if "video_min_pixels" in options or "video_max_pixels" in options:
            kwargs["size"] = media_io.pixel_bounds(options)
        return kwargs

    def _audio_in_video_kwargs(self, videos: list[Path]) -> dict:
        """The mp4s' own audio tracks, passed the way the installed processor expects them."""
        audio = [media_io.load_audio(path) for path in videos]
        kwargs: dict[str, Any] = {"audio": audio, "sampling_rate": media_io.SAMPLE_RATE}
        if hasattr(self.processor, "_resolve_audio_from_video"):  # transformers >= 5.2x
            kwargs["load_audio_from_video"] = True
            kwargs["audio_from_video_indices"] = list(range(len(videos)))
        else:  # older processors: the audio list is the videos' audio, flagged by use_audio_in_video
            kwargs["use_audio_in_video"] = True
        return kwargs

    def after_out_of_memory(self) -> None:
        """Hand the failed batch's cached blocks back before the engine retries half of it."""
        import gc

        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def close(self) -> None:
        """Drop the model and hand its GPU memory back (the engine loads the text LLM next)."""
        if self.model is None:
            return
        import gc

        import torch

        self.model = self.processor = self.tokenizer = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

