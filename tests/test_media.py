"""Media decoding: the frames and waveforms the judges perceive, as Qwen's own utilities sample them."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image
from tiny_models import write_mp4, write_wav

from helpers.judges import media


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_mp4(tmp_path_factory.mktemp("media") / "clip.mp4", seconds=2.0, fps=10)


def test_frame_count_follows_qwen_smart_nframes():
    # 2 fps of a 10 s clip at 25 fps: 20 frames; always a multiple of 2, at least 4 and at most max.
    assert media.frame_count(250, 25.0) == 20
    assert media.frame_count(250, 25.0, max_frames=7) == 6
    assert media.frame_count(25, 25.0) == 4  # 1 s would be 2 frames: raised to the minimum of 4
    assert media.frame_count(3, 25.0) == 2  # never more frames than the file has
    assert media.frame_count(1, 25.0) == 1


def test_video_is_sampled_at_two_frames_per_second(clip):
    video = media.load_video(clip)
    assert video.frames.shape == (4, 56, 56, 3)
    assert video.frames.dtype == np.uint8
    assert video.fps == pytest.approx(2.0)
    assert video.duration_s == pytest.approx(2.0)
    red = video.frames[..., 0].mean(axis=(1, 2))
    assert np.all(np.diff(red) > 0), "frames must come in time order (the red channel ramps up)"


def test_a_fixed_frame_count_spreads_over_the_clip(clip):
    # transformers 4.49's rule for a fixed count, as the paper's LLaVA-NeXT-Video ran it: numpy's
    # integer arange casts the step total/8 = 2.5 to 2, so 20 frames give 0, 2, ..., 14 (not the last)
    video = media.load_video(clip, num_frames=8)
    assert video.frames.shape[0] == 8
    assert list(video.indices) == [0, 2, 4, 6, 8, 10, 12, 14]
    red = video.frames[..., 0].mean(axis=(1, 2))
    assert red[0] < 30 and np.all(np.diff(red) > 0), "from the first frame, in time order"


def test_audio_track_of_an_mp4_is_16khz_mono(clip):
    wave = media.load_audio(clip)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert len(wave) == pytest.approx(2 * media.SAMPLE_RATE, rel=0.05)
    spectrum = np.abs(np.fft.rfft(wave))
    peak_hz = np.argmax(spectrum) * media.SAMPLE_RATE / len(wave)
    assert peak_hz == pytest.approx(440, abs=5)


def test_stereo_44khz_wav_is_resampled_to_16khz_mono(tmp_path):
    wav = write_wav(tmp_path / "tone.wav", seconds=1.5, rate=44_100, channels=2, tone_hz=300)
    wave = media.load_audio(wav)
    assert wave.ndim == 1 and len(wave) == int(1.5 * media.SAMPLE_RATE)
    peak_hz = np.argmax(np.abs(np.fft.rfft(wave))) * media.SAMPLE_RATE / len(wave)
    assert peak_hz == pytest.approx(300, abs=3)


def test_missing_or_silent_media_give_errors_naming_the_file(tmp_path):
    with pytest.raises(media.MediaError, match="nothere.mp4"):
        media.load_video(tmp_path / "nothere.mp4")
    with pytest.raises(media.MediaError, match="nothere.wav"):
        media.load_audio(tmp_path / "nothere.wav")
    silent = write_mp4(tmp_path / "silent.mp4", with_audio=False)
    with pytest.raises(media.MediaError, match="no audio track in .*silent.mp4"):
        media.load_audio(silent)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    with pytest.raises(media.MediaError, match="broken.mp4"):
        media.load_video(broken)


def test_frames_become_jpeg_data_urls_bounded_in_size(clip):
    frame = np.zeros((1000, 500, 3), dtype=np.uint8)
    url = media.jpeg_data_url(frame, max_side=200)
    assert url.startswith("data:image/jpeg;base64,")
    image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert image.format == "JPEG" and image.size == (100, 200)


def test_waveform_round_trips_through_base64_wav():
    import soundfile as sf

    wave = (0.5 * np.sin(np.linspace(0, 100, 16_000))).astype(np.float32)
    decoded, rate = sf.read(io.BytesIO(base64.b64decode(media.wav_base64(wave))), dtype="float32")
    assert rate == media.SAMPLE_RATE
    np.testing.assert_allclose(decoded, wave, atol=1e-4)
