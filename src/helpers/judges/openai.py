"""Judging through any OpenAI-compatible chat-completions endpoint: closed models (GPT-4o,
Gemini's compatibility endpoint) or a user's own ``vllm serve``.

Why plain HTTP (urllib) and not the ``openai`` package: the request is one JSON POST, the
package is not installed in the CPU environment, and owning the retry loop lets it honour
``Retry-After`` and name the endpoint and status in the final error.

- Video goes as JPEG frames (data URLs), because chat-completions endpoints take images, not
  video files: by default ``options.num_frames`` (8) uniformly; the paper's GPT rule
  (``frames: emoprefer_gpt``: 1 fps for clips up to 3 s, else 3 frames) or Gemini's 1 fps
  (``frames: fps``) where the judge's YAML says so (see :func:`video_frames`).
- Audio goes as ``input_audio`` (16 kHz mono WAV) only where the judge's YAML says the endpoint
  takes it (``options.audio_input: true``); otherwise an audio input type is refused rather
  than silently judged without sound.
- Requests run ``spec.batch_size`` at a time (threads); 429, 5xx, connection errors, timeouts
  and transport failures of the reply itself (a connection closed or reset before or during the
  response, a body shorter than its Content-Length, a body that is not UTF-8) are retried with
  exponential backoff (``options.max_retries``, default 5; ``options.backoff_s``, default 1 s,
  doubling, capped at ``options.max_backoff_s``), waiting what ``Retry-After`` asks where the
  server says so. When the attempts are spent, :class:`OpenAIError` names the endpoint and the
  last cause, so a flaky proxy ends a run with a sentence, not a traceback.
- The key is read from the environment variable *named* by ``spec.api_key_env`` at call time
  and lives only in the request header: never in errors, logs, ``info`` or manifests.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import platform
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from helpers.judges import media as media_io
from helpers.judges.base import Backend, JudgeSpec, Request, Response
from helpers.secrets import SecretError, read_key, redact

RETRY_STATUSES = {408, 409, 429, 500, 502, 503, 504}
# Failures of the connection after the request went out (urllib wraps only those before it in
# URLError): RemoteDisconnected, ConnectionResetError, IncompleteRead, BadStatusLine, other OSError.
TRANSPORT_ERRORS = (http.client.HTTPException, OSError)
GENERATION_KEYS = ("temperature", "top_p", "max_tokens", "presence_penalty", "frequency_penalty")
MAX_REPLY_BYTES = 8 * 2**20
"""Largest reply read (``options.max_reply_bytes`` overrides): a chat completion whose answer the
store keeps at most 64 KB of is far smaller; a server streaming hundreds of megabytes would
otherwise be read whole into memory (a 300 MB reply took 1.1 GB)."""


class ReplyTooLarge(Exception):
    """Internal: the reply exceeds the byte limit (not retried: the same server sends it again)."""


class OpenAIError(RuntimeError):
    """The endpoint could not answer a request; the message names the endpoint and why."""


def chat_url(api_base: str) -> str:
    return api_base.rstrip("/") + "/chat/completions"


def request_body(
    request: Request,
    spec: JudgeSpec,
    load_video=media_io.load_video,
    load_audio=media_io.load_audio,
) -> dict:
    """The chat-completions JSON for one request: system, then the user turn of media parts
    and the prompt (prompt first where ``options.text_first``, as the paper sent GPT-4o/4.1),
    then the generation fields and, unless ``options.send_seed`` is false, the seed."""
    options = spec.options
    input_type = request.media.input_type if request.media is not None else "text"
    parts: list[dict] = []
    if input_type in ("video", "audiovideo"):
        parts += [image_part(frame, options) for frame in video_frames(request.media.video, options, load_video)]
    if input_type in ("audio", "audiovideo"):
        if not options.get("audio_input"):
            raise OpenAIError(
                f"judge {spec.name!r}: input type {input_type!r} needs audio, but its YAML does not say the "
                f"endpoint takes audio (set options.audio_input: true if it accepts input_audio)"
            )
        source = request.media.audio if input_type == "audio" else request.media.video
        parts.append({"type": "input_audio", "input_audio": {"data": media_io.wav_base64(load_audio(source)), "format": "wav"}})
    messages: list[dict] = []
    system = request.system if request.system is not None else options.get("system")
    if system:
        messages.append({"role": "system", "content": system})
    text = {"type": "text", "text": request.prompt}
    content: str | list[dict] = request.prompt if not parts else (
        [text, *parts] if options.get("text_first") else [*parts, text])
    messages.append({"role": "user", "content": content})
    body: dict[str, Any] = {"model": spec.checkpoint, "messages": messages, **generation_fields(spec)}
    if options.get("send_seed", True):  # Gemini's compatible endpoint answers 400 to a seed
        body["seed"] = request.seed
    return body


def video_frames(path, options: dict, load_video=media_io.load_video) -> list:
    """The frames a judge's YAML asks for: ``frames: emoprefer_gpt`` (the official GPT wrapper's
    rule, ``max_frames`` default 3), ``frames: fps`` (one every ``1/fps`` s, as Gemini samples
    an uploaded video), else ``num_frames`` (default 8) uniformly."""
    rule = options.get("frames", "uniform")
    if rule == "uniform":
        return list(load_video(path, num_frames=int(options.get("num_frames", 8))).frames)
    return list(media_io.load_video_frames(path, rule, max_frames=int(options.get("max_frames", 3)),
                                           fps=float(options.get("fps", 1.0))).frames)


def image_part(frame, options: dict) -> dict:
    """One frame as an ``image_url`` part: JPEG at ``jpeg_quality`` (default 85; the paper's
    cv2.imencode uses 95), longer side at most ``frame_max_side`` (default 768; null keeps the
    full frame, as the paper sent it)."""
    max_side = options.get("frame_max_side", 768)
    url = media_io.jpeg_data_url(frame, quality=int(options.get("jpeg_quality", 85)),
                                 max_side=None if max_side is None else int(max_side))
    image: dict[str, Any] = {"url": url}
    if options.get("detail"):
        image["detail"] = options["detail"]
    return {"type": "image_url", "image_url": image}


def generation_fields(spec: JudgeSpec) -> dict:
    settings = dict(spec.generation)
    if "max_new_tokens" in settings:
        settings.setdefault("max_tokens", settings.pop("max_new_tokens"))
    unknown = set(settings) - set(GENERATION_KEYS)
    if unknown:
        raise OpenAIError(f"judge {spec.name!r}: generation settings {sorted(unknown)} are not sent to OpenAI-compatible "
                          f"endpoints (known: {', '.join(GENERATION_KEYS)})")
    return settings


def retry_after_s(value: str | None) -> float | None:
    """Seconds asked by a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def response_text(payload: dict) -> str:
    """The assistant's text (content given as a string or as a list of text parts); content of
    any other type (a number, an object) is a TypeError: the reply is not a chat completion."""
    content = payload["choices"][0]["message"].get("content")
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    if content is not None and not isinstance(content, str):
        raise TypeError(f"message content is {type(content).__name__} {str(content)[:40]!r}, not text")
    return content or ""


class OpenAIBackend(Backend):
    """An OpenAI-compatible chat-completions judge (see the module docstring)."""

    kind = "openai"

    def __init__(self, spec: JudgeSpec):
        super().__init__(spec)
        if not spec.api_base:
            raise OpenAIError(f"judge {spec.name!r}: api_base (the endpoint URL) is missing from its YAML")
        if not spec.api_key_env:
            raise OpenAIError(f"judge {spec.name!r}: api_key_env (the NAME of the key's variable) is missing")
        options = spec.options
        self.url = chat_url(spec.api_base)
        self.timeout_s = float(options.get("timeout_s", 120))
        self.max_retries = int(options.get("max_retries", 5))
        self.backoff_s = float(options.get("backoff_s", 1.0))
        self.max_backoff_s = float(options.get("max_backoff_s", 60.0))
        self.max_reply_bytes = int(options.get("max_reply_bytes", MAX_REPLY_BYTES))
        self.sleep = time.sleep
        self.info = {"backend": "openai", "endpoint": self.url, "model": spec.checkpoint, "checkpoint": spec.checkpoint,
                     "key_variable": spec.api_key_env, "client": f"urllib (python {platform.python_version()})"}

    def _api_key(self) -> str:
        """The key, read stripped (``helpers.secrets.read_key``); errors name the variable, never the value."""
        try:
            key = read_key(self.spec.api_key_env or "")
        except SecretError as exc:
            raise OpenAIError(f"judge {self.spec.name!r}: {exc}") from None
        if not key:
            raise OpenAIError(f"judge {self.spec.name!r}: environment variable {self.spec.api_key_env} is not set; "
                              f"it must hold the API key for {self.url}")
        return key

    def generate(self, requests: list[Request]) -> list[Response]:
        if not requests:
            return []
        key = self._api_key()
        bodies = [request_body(r, self.spec) for r in requests]  # media errors surface before any call
        with ThreadPoolExecutor(max_workers=max(1, self.spec.batch_size)) as pool:
            futures = [pool.submit(self._complete, body, key) for body in bodies]
            try:
                results = [future.result() for future in futures]
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
        self.calls += len(requests)
        return [Response(r.key, text, latency) for r, (text, latency) in zip(requests, results, strict=True)]

    def _complete(self, body: dict, key: str) -> tuple[str, float]:
        """POST one body, retrying what is worth retrying; (text, seconds of the successful call)."""
        data = json.dumps(body).encode("utf-8")
        last = ""
        for attempt in range(self.max_retries + 1):
            wait = min(self.max_backoff_s, self.backoff_s * 2**attempt)
            start = time.perf_counter()
            try:
                payload = self._post(data, key)
                return response_text(payload), time.perf_counter() - start
            except ReplyTooLarge as exc:
                raise OpenAIError(f"{self.url} sent a reply larger than the {self.max_reply_bytes:,} bytes read ({exc}); "
                                  f"not a chat completion of this study (options.max_reply_bytes raises the limit; "
                                  f"model {self.spec.checkpoint!r}; not retried)") from None
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}: {self._error_detail(exc, key)}"
                if exc.code not in RETRY_STATUSES:
                    raise OpenAIError(f"{self.url} answered {last} (model {self.spec.checkpoint!r}; not retried)") from None
                asked = retry_after_s(exc.headers.get("Retry-After"))
                wait = min(self.max_backoff_s, asked) if asked is not None else wait
            except TimeoutError:
                last = f"timed out after {self.timeout_s:g} s"
            except urllib.error.URLError as exc:
                last = f"connection failed: {self._redact(str(exc.reason), key)}"
            except UnicodeDecodeError as exc:
                last = f"reply body is not UTF-8 (byte 0x{exc.object[exc.start:exc.start + 1].hex().upper()} at {exc.start})"
            except TRANSPORT_ERRORS as exc:
                last = f"connection broke during the reply: {type(exc).__name__}: {self._redact(str(exc), key)}"
            except (json.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
                raise OpenAIError(f"{self.url} sent a reply that is not a chat completion ({type(exc).__name__}: "
                                  f"{self._redact(str(exc), key)[:200]})") from None
            if attempt < self.max_retries:
                self.sleep(wait)
        raise OpenAIError(f"{self.url} failed after {self.max_retries + 1} attempts; last: {last} "
                          f"(model {self.spec.checkpoint!r})")

    def _post(self, data: bytes, key: str) -> dict:
        """One POST and its decoded JSON reply; every failure propagates for ``_complete`` to sort."""
        post = urllib.request.Request(self.url, data=data, method="POST", headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {key}"})
        with urllib.request.urlopen(post, timeout=self.timeout_s) as reply:
            declared = reply.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > self.max_reply_bytes:
                raise ReplyTooLarge(f"Content-Length {int(declared):,}")
            data = reply.read(self.max_reply_bytes + 1)  # never more than the limit into memory
            if len(data) > self.max_reply_bytes:
                raise ReplyTooLarge("no Content-Length; cut off at the limit")
            if declared and declared.isdigit() and len(data) < int(declared):  # read(n) does not raise it itself
                raise http.client.IncompleteRead(data, int(declared) - len(data))
            return json.loads(data.decode("utf-8"))

    def _error_detail(self, exc: urllib.error.HTTPError, key: str) -> str:
        """The start of an error reply's body, key redacted; empty where reading it fails too."""
        try:
            return self._redact(exc.read(4096).decode("utf-8", "replace")[:300], key)
        except TRANSPORT_ERRORS:
            return ""

    def _redact(self, text: str, key: str) -> str:
        """``text`` with ``key`` masked as everywhere else (``helpers.secrets.redact``)."""
        return redact(text, {self.spec.api_key_env: key})
