"""Decoding a sample's media into the arrays model processors take.

Why this module exists: transformers' own video/audio loaders go through torchcodec, whose PyPI
wheels are CUDA-only, and ``qwen_omni_utils`` needs decord and the ``ffmpeg`` program. PyAV
(bundled FFmpeg) decodes everything here, on any machine, and the backends hand the arrays to
the processors (``videos=``, ``audio=``) or to an HTTP endpoint (JPEG data URLs).

Sampling follows Qwen's own defaults (``qwen_vl_utils``/``qwen_omni_utils``): 2 frames per
second, a frame count rounded to a multiple of 2 (the temporal patch), at least 4 frames and a
bounded maximum; audio is 16 kHz mono float32. Paths arrive ready-made in ``Request.media``:
nothing here turns a sample name into a path.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000
DEFAULT_FPS = 2.0
FRAME_FACTOR = 2
MIN_FRAMES = 4
MAX_FRAMES = 768


class MediaError(Exception):
    """A media file cannot be decoded as the judge needs it; the message names the file."""


@dataclass(frozen=True)
class VideoFrames:
    """Sampled RGB frames ``(T, H, W, 3)`` uint8, the rate they represent, and where they came from."""

    frames: np.ndarray
    fps: float
    duration_s: float
    indices: tuple[int, ...] = ()
    source_fps: float = 0.0
    source_frames: int = 0

    def metadata(self, timing: str = "source") -> dict:
        """transformers' ``VideoMetadata`` fields for these frames (without any, processors assume
        24 fps).

        ``source``: the clip as it is (its rate, length and the sampled indices), so a processor
        that times frames (Qwen2.5-VL: ``second_per_grid_ts = 2 / sampled_fps``) gets the real
        seconds between them. ``paper``: the frames as transformers 4.49 timed them in the
        paper's code, which handed already-sampled frames to the processor without any rate, so
        it assumed its default fps :data:`PAPER_ASSUMED_FPS`: the metadata then describes exactly
        these frames as a clip at that rate (``sampled_fps`` = 2.0, ``second_per_grid_ts`` = 1.0
        whatever the clip's length).
        """
        if timing == "paper":
            n = len(self.frames)
            return {"total_num_frames": n, "fps": PAPER_ASSUMED_FPS, "frames_indices": list(range(n)),
                    "duration": n / PAPER_ASSUMED_FPS}
        if timing != "source":
            raise MediaError(f"unknown video timing {timing!r} (known: {', '.join(TIMINGS)})")
        return {"total_num_frames": self.source_frames, "fps": self.source_fps, "frames_indices": list(self.indices),
                "duration": self.duration_s}


PAPER_ASSUMED_FPS = 2.0
"""The fps transformers 4.49's Qwen2.5-VL processor took when none was passed
(``output_kwargs["videos_kwargs"].pop("fps", 2.0)``), as in the paper's ``utils/qwen25vl.py``,
which called ``process_vision_info`` without ``return_video_kwargs``."""
TIMINGS = ("paper", "source")


VIDEO_MIN_PIXELS = 128 * 28 * 28
VIDEO_MAX_PIXELS = 768 * 28 * 28


def pixel_bounds(options: dict) -> dict[str, int]:
    """A judge's per-frame pixel bounds (``video_min_pixels``/``video_max_pixels``, Qwen's
    defaults where unset) in the processors' ``size`` spelling, the same for every backend."""
    return {"shortest_edge": int(options.get("video_min_pixels", VIDEO_MIN_PIXELS)),
            "longest_edge": int(options.get("video_max_pixels", VIDEO_MAX_PIXELS))}


def _open(path: Path):
    import av

    path = Path(path)
    if not path.is_file():
        raise MediaError(f"media file not found: {path}")
    try:
        return av.open(str(path))
    except Exception as exc:  # PyAV raises several error types for unreadable files
        raise MediaError(f"cannot open media file {path}: {exc}") from exc


def frame_count(
    total_frames: int,
    video_fps: float,
    *,
    fps: float = DEFAULT_FPS,
    min_frames: int = MIN_FRAMES,
    max_frames: int = MAX_FRAMES,
    factor: int = FRAME_FACTOR,
) -> int:
    """How many frames to sample: ``fps`` per second, a multiple of ``factor``, within bounds.

    Mirrors ``qwen_vl_utils.smart_nframes`` so that a transformers run sees the frames the
    paper's code saw; never more frames than the file has. A clip shorter than one temporal
    patch gives its single frame (the processors repeat it).
    """
    def floor_to(x: float) -> int:
        return int(x // factor) * factor

    def ceil_to(x: float) -> int:
        return int(-(-x // factor)) * factor

    lower = ceil_to(min_frames)
    upper = floor_to(min(max_frames, total_frames))
    wanted = total_frames / max(video_fps, 1e-6) * fps
    n = floor_to(min(max(wanted, lower), upper, total_frames))
    return n if n > 0 else min(total_frames, 1)


def _video_stream(container, path: Path):
    streams = container.streams.video
    if not streams:
        raise MediaError(f"no video stream in {path}")
    return streams[0]


def _count_frames(path: Path) -> tuple[int, float]:
    """Frame count (by demuxing, no decoding: headers lie for some files) and the stream rate."""
    with _open(path) as container:
        stream = _video_stream(container, path)
        rate = float(stream.average_rate or stream.guessed_rate or 25)
        count = sum(1 for packet in container.demux(stream) if packet.size)
    if count == 0:
        raise MediaError(f"video stream of {path} has no frames")
    return count, rate


def load_video(
    path: str | Path,
    *,
    fps: float = DEFAULT_FPS,
    max_frames: int = MAX_FRAMES,
    min_frames: int = MIN_FRAMES,
    num_frames: int | None = None,
) -> VideoFrames:
    """Sample frames uniformly over the clip: ``num_frames`` if given, else ``fps`` per second.

    Frames are decoded in one pass and only the chosen ones are kept, so long clips do not
    fill memory.
    """
    path = Path(path)
    total, rate = _count_frames(path)
    if num_frames is None:
        n = frame_count(total, rate, fps=fps, min_frames=min_frames, max_frames=max_frames)
        return load_frames(path, np.linspace(0, total - 1, n).round().astype(int), total, rate)
    return load_frames(path, np.asarray(fixed_count_indices(total, num_frames), dtype=int), total, rate)


def fixed_count_indices(total_frames: int, num_frames: int) -> list[int]:
    """``num_frames`` frames as transformers 4.49's ``default_sample_indices_fn`` picked them for
    ``apply_chat_template(num_frames=...)`` (the paper's LLaVA-NeXT-Video path):
    ``np.arange(0, total, total / num_frames, dtype=int)``.

    numpy's integer ``arange`` casts the *step* to an integer (``int(start + step) - int(start)``)
    and keeps the float length ``ceil(total / step)``, so the indices are ``i * int(total / n)``:
    75 frames give 0, 9, ..., 63 (the clip's last 11 frames are never seen) and a clip shorter than
    ``num_frames`` gives its first frame ``num_frames`` times. Written out rather than left to
    numpy so that the rule is visible.
    """
    if total_frames < 1 or num_frames < 1:
        raise MediaError(f"cannot pick {num_frames} frames from a clip of {total_frames}")
    step = int(total_frames / num_frames)
    length = int(np.ceil(total_frames / (total_frames / num_frames)))
    return [i * step for i in range(length)]


def emoprefer_gpt_indices(total_frames: int, video_fps: float, max_frames: int = 3) -> list[int]:
    """The frames EmoPrefer's ``utils/gpt.py`` (``extract_base64_frames``) sends: one per second
    for a clip of at most ``max_frames`` seconds, else ``max_frames`` evenly spaced ones.

    Copied rule for rule (``int(i * fps)`` / ``int(i * total / max_frames)``); where it would give
    no frame at all (a clip shorter than one second) the first frame is sent, so the judge
    still sees the video.
    """
    duration = total_frames / max(video_fps, 1e-6)
    if duration <= max_frames:
        indices = [int(i * video_fps) for i in range(int(duration))]
    else:
        indices = [int(i * total_frames / max_frames) for i in range(max_frames)]
    return [i for i in indices if i < total_frames] or [0]


def fps_indices(total_frames: int, video_fps: float, fps: float = 1.0) -> list[int]:
    """One frame every ``1 / fps`` seconds from the start (how Gemini samples a video sent with
    ``VideoMetadata(fps=1)``), at least one."""
    duration = total_frames / max(video_fps, 1e-6)
    n = max(1, int(np.ceil(duration * fps - 1e-9)))
    return sorted({min(total_frames - 1, int(i * video_fps / fps)) for i in range(n)})


def linspace_indices(total_frames: int, num_frames: int) -> list[int]:
    """``np.linspace(0, total - 1, num_frames, dtype=int)``: Video-LLaVA's LanguageBind video loader
    (decord backend), first and last frame included; a short clip repeats frames."""
    if total_frames < 1 or num_frames < 1:
        raise MediaError(f"cannot pick {num_frames} frames from a clip of {total_frames}")
    return [int(i) for i in np.linspace(0, total_frames - 1, num_frames, dtype=int)]


def load_video_frames(path: str | Path, rule: str, *, max_frames: int = 3, fps: float = 1.0) -> VideoFrames:
    """Frames picked by a named rule: ``emoprefer_gpt`` (:func:`emoprefer_gpt_indices`), ``fps``
    (:func:`fps_indices`) or ``linspace`` (:func:`linspace_indices`, ``max_frames`` of them)."""
    path = Path(path)
    total, rate = _count_frames(path)
    if rule == "emoprefer_gpt":
        indices = emoprefer_gpt_indices(total, rate, max_frames)
    elif rule == "fps":
        indices = fps_indices(total, rate, fps)
    elif rule == "linspace":
        indices = linspace_indices(total, max_frames)
    else:
        raise MediaError(f"unknown frame rule {rule!r} (known: emoprefer_gpt, fps, linspace)")
    return load_frames(path, np.asarray(indices, dtype=int), total, rate)


def load_frames(path: Path, wanted: np.ndarray, total: int, rate: float) -> VideoFrames:
    """Decode ``path`` once, keeping the frames at the sorted indices ``wanted``."""
    n = len(wanted)
    frames: list[np.ndarray] = []
    with _open(path) as container:
        stream = _video_stream(container, path)
        picks = iter(wanted)
        target = next(picks)
        for index, frame in enumerate(container.decode(stream)):
            while target == index:
                frames.append(frame.to_ndarray(format="rgb24"))
                target = next(picks, None)
            if target is None:
                break
    if not frames:
        raise MediaError(f"could not decode any frame of {path}")
    while len(frames) < n:  # fewer decodable frames than packets: repeat the last one
        frames.append(frames[-1])
    duration = total / rate
    return VideoFrames(np.stack(frames), fps=n / max(duration, 1e-6), duration_s=duration,
                       indices=tuple(int(i) for i in wanted), source_fps=rate, source_frames=total)


def _resample_mono(container, stream, path: Path, sample_rate: int) -> np.ndarray:
    import av

    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    chunks: list[np.ndarray] = []
    for frame in container.decode(stream):
        frame.pts = None
        for out in resampler.resample(frame):
            chunks.append(out.to_ndarray().reshape(-1))
    for out in resampler.resample(None):
        chunks.append(out.to_ndarray().reshape(-1))
    if not chunks:
        raise MediaError(f"audio stream of {path} has no samples")
    return np.concatenate(chunks).astype(np.float32)


def load_audio(path: str | Path, *, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Mono float32 waveform at ``sample_rate`` from a .wav (soundfile) or any container's
    first audio track (PyAV), e.g. the audio of an .mp4 for Omni's audio-in-video."""
    path = Path(path)
    if path.suffix.lower() == ".wav":
        return _load_wav(path, sample_rate)
    with _open(path) as container:
        if not container.streams.audio:
            raise MediaError(f"no audio track in {path}: audio-in-video needs one")
        return _resample_mono(container, container.streams.audio[0], path, sample_rate)


def _load_wav(path: Path, sample_rate: int) -> np.ndarray:
    import soundfile as sf
    from scipy.signal import resample_poly

    if not path.is_file():
        raise MediaError(f"media file not found: {path}")
    try:
        wave, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:
        raise MediaError(f"cannot read audio file {path}: {exc}") from exc
    wave = wave.mean(axis=1)
    if rate != sample_rate:
        ratio = Fraction(sample_rate, rate).limit_denominator(1000)
        wave = resample_poly(wave, ratio.numerator, ratio.denominator)
    return wave.astype(np.float32)


def jpeg_data_url(frame: np.ndarray, *, quality: int = 85, max_side: int | None = 768) -> str:
    """One RGB frame as a ``data:image/jpeg;base64,...`` URL (the OpenAI image_url form),
    shrunk so that its longer side is at most ``max_side`` to bound request size."""
    from PIL import Image

    image = Image.fromarray(np.asarray(frame, dtype=np.uint8))
    if max_side is not None and max(image.size) > max_side:
        image.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def wav_base64(wave: np.ndarray, *, sample_rate: int = SAMPLE_RATE) -> str:
    """A waveform as base64 16-bit PCM WAV bytes (the OpenAI ``input_audio`` payload)."""
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, np.asarray(wave, dtype=np.float32), sample_rate, format="WAV", subtype="PCM_16")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
