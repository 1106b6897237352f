"""The OpenAI-compatible backend against a local HTTP server that this test scripts.

The server answers from a script of (status, headers, body, delay) steps and records what it
received, so the tests can say exactly what goes over the wire and how failures are handled.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time

import pytest
import soundfile as sf
from local_server import LocalServer, QuietHandler
from tiny_models import write_mp4, write_wav

from helpers.judges.base import JudgeSpec, Media, Request
from helpers.judges.openai import OpenAIBackend, OpenAIError, request_body, retry_after_s

KEY = "sk-test-SECRET-0123456789"
KEY_ENV = "EMOPREFER_TEST_API_KEY"


def completion(text: str) -> dict:
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}


class ScriptedServer(LocalServer):
    """A chat-completions endpoint on 127.0.0.1 that plays back scripted answers."""

    def __init__(self):
        self.script: list[tuple[int, dict, dict, float]] = []
        self.default = (200, {}, completion("a1"), 0.0)
        self.received: list[dict] = []
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = 0
        owner = self

        class Handler(QuietHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with owner.lock:
                    owner.received.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                    status, headers, payload, delay = owner.script.pop(0) if owner.script else owner.default
                    owner.in_flight += 1
                    owner.max_in_flight = max(owner.max_in_flight, owner.in_flight)
                time.sleep(delay)
                with owner.lock:
                    owner.in_flight -= 1
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

        super().__init__(Handler)


@pytest.fixture
def server():
    srv = ScriptedServer()
    yield srv
    srv.close()


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    return KEY


def judge(url: str, **options) -> JudgeSpec:
    return JudgeSpec(name="tiny_api", family="openai", backend="openai", checkpoint="gpt-test", input_type="video",
                     batch_size=3, api_base=url, api_key_env=KEY_ENV, generation={"temperature": 0},
                     options={"backoff_s": 0.01, "max_retries": 3, "timeout_s": 5, **options})


def backend_for(spec: JudgeSpec) -> tuple[OpenAIBackend, list[float]]:
    backend = OpenAIBackend(spec)
    waits: list[float] = []
    backend.sleep = waits.append  # record the backoff instead of sleeping
    return backend, waits


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("api_media")
    return {"video": write_mp4(folder / "s.mp4"), "audio": write_wav(folder / "s.wav")}


def test_video_is_sent_as_jpeg_frames_before_the_prompt_with_the_key_in_the_header(server, key, clip):
    backend, _ = backend_for(judge(server.url, num_frames=4))
    requests = [Request(f"k{i}", f"prompt {i}", media=Media("video", video=clip["video"]), system="sys", seed=i)
                for i in range(5)]
    responses = backend.generate(requests)
    assert [r.key for r in responses] == [f"k{i}" for i in range(5)]
    assert all(r.text == "a1" for r in responses) and backend.calls == 5
    assert len(server.received) == 5
    sent = {item["body"]["seed"]: item for item in server.received}
    item = sent[2]
    assert item["path"] == "/v1/chat/completions" and item["auth"] == f"Bearer {KEY}"
    body = item["body"]
    assert body["model"] == "gpt-test" and body["temperature"] == 0
    system, user = body["messages"]
    assert system == {"role": "system", "content": "sys"}
    kinds = [part["type"] for part in user["content"]]
    assert kinds == ["image_url"] * 4 + ["text"]
    assert user["content"][-1]["text"] == "prompt 2"
    assert user["content"][0]["image_url"]["url"].startswith("data:image/jpeg;base64,")


def test_at_most_batch_size_requests_are_in_flight(server, key):
    server.default = (200, {}, completion("a2"), 0.3)
    backend, _ = backend_for(judge(server.url))  # batch_size 3
    responses = backend.generate([Request(f"k{i}", "p", seed=i) for i in range(7)])
    assert [r.text for r in responses] == ["a2"] * 7
    assert 1 < server.max_in_flight <= 3, "concurrent, but bounded by batch_size"


def test_429_is_retried_after_the_wait_the_server_asks_for(server, key):
    server.script = [(429, {"Retry-After": "2"}, {"error": "slow down"}, 0.0), (200, {}, completion("same"), 0.0)]
    backend, waits = backend_for(judge(server.url))
    (response,) = backend.generate([Request("k", "text only")])
    assert response.text == "same"
    assert waits == [2.0] and len(server.received) == 2
    assert server.received[0]["body"]["messages"] == [{"role": "user", "content": "text only"}]


def test_server_errors_back_off_exponentially_then_fail_naming_endpoint_and_status(server, key):
    server.default = (500, {}, {"error": f"boom; your key was {KEY}"}, 0.0)
    backend, waits = backend_for(judge(server.url))
    with pytest.raises(OpenAIError) as failure:
        backend.generate([Request("k", "p")])
    message = str(failure.value)
    assert server.url + "/chat/completions" in message and "HTTP 500" in message and "4 attempts" in message
    assert KEY not in message, "the key must never appear in an error"
    assert f"your key was [redacted:{KEY_ENV}]" in message, "masked as everywhere else (helpers.secrets)"
    assert waits == pytest.approx([0.01, 0.02, 0.04])
    assert len(server.received) == 4


def test_client_errors_are_not_retried(server, key):
    server.default = (401, {}, {"error": "bad key"}, 0.0)
    backend, waits = backend_for(judge(server.url))
    with pytest.raises(OpenAIError, match="HTTP 401.*not retried"):
        backend.generate([Request("k", "p")])
    assert waits == [] and len(server.received) == 1


def test_a_timeout_is_retried_and_then_reported(server, key):
    server.script = [(200, {}, completion("late"), 1.0), (200, {}, completion("a2"), 0.0)]
    backend, _ = backend_for(judge(server.url, timeout_s=0.3))
    assert backend.generate([Request("k", "p")])[0].text == "a2"
    server.default = (200, {}, completion("late"), 1.0)
    backend, _ = backend_for(judge(server.url, timeout_s=0.2, max_retries=1))
    with pytest.raises(OpenAIError, match="failed after 2 attempts; last: timed out after 0.2 s"):
        backend.generate([Request("k", "p")])


def test_the_key_comes_from_the_named_variable_at_call_time(server, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    backend, _ = backend_for(judge(server.url))  # constructing needs no key
    with pytest.raises(OpenAIError, match=f"environment variable {KEY_ENV} is not set"):
        backend.generate([Request("k", "p")])
    assert server.received == []
    monkeypatch.setenv(KEY_ENV, "sk-rotated")
    backend.generate([Request("k", "p")])
    assert server.received[-1]["auth"] == "Bearer sk-rotated"
    assert "sk-rotated" not in json.dumps(backend.info)


def test_audio_is_sent_only_where_the_endpoint_takes_it(clip):
    spec = judge("http://unused", audio_input=True)
    body = request_body(Request("k", "p", media=Media("audiovideo", video=clip["video"])), spec)
    parts = body["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["image_url"] * 8 + ["input_audio", "text"]
    wave, rate = sf.read(io.BytesIO(base64.b64decode(parts[-2]["input_audio"]["data"])))
    assert rate == 16_000 and len(wave) == pytest.approx(32_000, rel=0.05)
    audio_only = request_body(Request("k", "p", media=Media("audio", audio=clip["audio"])), spec)
    assert [p["type"] for p in audio_only["messages"][0]["content"]] == ["input_audio", "text"]
    with pytest.raises(OpenAIError, match="options.audio_input"):
        request_body(Request("k", "p", media=Media("audio", audio=clip["audio"])), judge("http://unused"))


def test_retry_after_accepts_seconds_and_http_dates():
    assert retry_after_s("3") == 3.0
    assert retry_after_s(None) is None and retry_after_s("soon") is None
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: no wait


# -- issue 12: the paper's request shape for the closed models ----------------------------------

def test_emoprefer_gpt_frame_rule_copies_the_official_extract_base64_frames():
    from helpers.judges.media import emoprefer_gpt_indices

    # <= 3 s: one frame per second, int(i * fps); the official code gives 2 frames for 2.5 s
    assert emoprefer_gpt_indices(25, 10.0) == [0, 10]
    assert emoprefer_gpt_indices(30, 10.0) == [0, 10, 20]
    # > 3 s: three evenly spaced, int(i * total / 3)
    assert emoprefer_gpt_indices(100, 25.0) == [0, 33, 66]
    assert emoprefer_gpt_indices(5, 10.0) == [0], "under 1 s the official rule gives none: the first frame"


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    return write_mp4(tmp_path_factory.mktemp("api_long") / "long.mp4", seconds=5.0, fps=10)


@pytest.mark.parametrize("name", ["gpt4o", "gpt41"])
def test_gpt_judges_send_the_text_first_then_the_papers_three_frames_at_full_size(name, clip, long_clip):
    """Issue 12 case 4: 8 frames after the text was not the paper's request."""
    from helpers.judges.registry import load_spec

    spec = load_spec(name)
    short = request_body(Request("k", "p", media=Media("video", video=clip["video"]), seed=1), spec)
    parts = short["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["text", "image_url", "image_url"], "2 s clip: 1 frame per second"
    assert parts[0]["text"] == "p"
    longer = request_body(Request("k", "p", media=Media("video", video=long_clip)), spec)["messages"][0]["content"]
    assert [p["type"] for p in longer] == ["text"] + ["image_url"] * 3
    from PIL import Image

    jpeg = base64.b64decode(parts[1]["image_url"]["url"].split(",", 1)[1])
    assert Image.open(io.BytesIO(jpeg)).size == (56, 56), "full-size frames, not shrunk"
    assert short["model"] == spec.checkpoint
    assert "seed" not in short, "the paper's GPT wrapper sent no seed (params/paper_protocol.yaml)"


def test_the_gemini_stand_in_sends_no_seed_and_frames_at_one_per_second_with_the_soundtrack(long_clip):
    from helpers.judges.registry import load_spec

    spec = load_spec("gemini15flash")
    body = request_body(Request("k", "p", media=Media("audiovideo", video=long_clip), seed=3), spec)
    assert "seed" not in body, "Gemini's OpenAI-compatible endpoint answers 400 to a seed"
    kinds = [p["type"] for p in body["messages"][0]["content"]]
    assert kinds == ["image_url"] * 5 + ["input_audio", "text"], "5 s at 1 fps, media before text as utils/gemini.py"
    assert spec.checkpoint != "gemini-1.5-flash"
