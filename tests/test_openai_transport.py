"""The OpenAI-compatible backend survives, or clearly reports, a connection that breaks mid-reply.

A real HTTP server on 127.0.0.1 misbehaves the way proxies and overloaded ``vllm serve``
instances do: it closes the connection without answering, promises a longer body than it sends,
sends bytes that are not UTF-8, or resets the connection. Each failure is retried like a 5xx
(same backoff, same attempt budget) and, when it never stops, ends in an ``OpenAIError`` that
names the endpoint and the last cause, never the key.
"""

from __future__ import annotations

import json
import socket
import struct
import threading

import pytest
from local_server import LocalServer, QuietHandler

from helpers.judges.base import JudgeSpec, Request
from helpers.judges.openai import OpenAIBackend, OpenAIError

KEY = "sk-test-SECRET-transport-42"
KEY_ENV = "EMOPREFER_TEST_TRANSPORT_KEY"
MAX_REQUESTS = 20  # a runaway retry loop meets a 410 (not retried) instead of spinning
GOOD = json.dumps({"choices": [{"message": {"role": "assistant", "content": "a2"}}]}).encode()


class MisbehavingServer(LocalServer):
    """Plays back a script of behaviours, one per request, then ``default``."""

    def __init__(self):
        self.script: list[str] = []
        self.default = "ok"
        self.requests = 0
        self.lock = threading.Lock()
        owner = self

        class Handler(QuietHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))  # read it all: no RST from unread data
                with owner.lock:
                    owner.requests += 1
                    over = owner.requests > MAX_REQUESTS
                    behaviour = owner.script.pop(0) if owner.script else owner.default
                getattr(self, "gone" if over else behaviour)()

            def reply(self, body: bytes, length: int | None = None, status: int = 200):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body) if length is None else length))
                self.end_headers()

            def ok(self):
                self.reply(GOOD)
                self.wfile.write(GOOD)

            def gone(self):
                self.reply(b"{}", status=410)
                self.wfile.write(b"{}")

            def drop(self):  # close without a status line: http.client.RemoteDisconnected
                self.close_connection = True

            def truncate(self):  # Content-Length larger than the body: http.client.IncompleteRead
                self.reply(GOOD, length=len(GOOD) + 100)
                self.wfile.write(GOOD[:10])
                self.close_connection = True

            def bad_utf8(self):  # a complete reply whose bytes are not UTF-8
                body = b'{"choices": "\xff\xfe caf\xe9"}'
                self.reply(body)
                self.wfile.write(body)

            def reset(self):  # half a reply, then RST (SO_LINGER 0): ConnectionResetError
                self.reply(GOOD, length=len(GOOD) + 100)
                self.wfile.write(GOOD[:10])
                self.rfile.close()
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
                self.close_connection = True

        super().__init__(Handler)


@pytest.fixture
def server():
    srv = MisbehavingServer()
    yield srv
    srv.close()


@pytest.fixture(autouse=True)
def key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)


def backend_for(url: str, max_retries: int = 3) -> tuple[OpenAIBackend, list[float]]:
    spec = JudgeSpec(name="tiny_api", family="openai", backend="openai", checkpoint="gpt-test", input_type="text",
                     batch_size=1, api_base=url, api_key_env=KEY_ENV, generation={"temperature": 0},
                     options={"backoff_s": 0.01, "max_retries": max_retries, "timeout_s": 5})
    backend = OpenAIBackend(spec)
    waits: list[float] = []
    backend.sleep = waits.append  # record the backoff instead of sleeping
    return backend, waits


# behaviour -> what the final error says the last cause was
FAILURES = {
    "drop": "RemoteDisconnected",
    "truncate": "IncompleteRead",
    "bad_utf8": "not UTF-8 (byte 0xFF",
    "reset": "ConnectionResetError",
}
CASES = pytest.mark.parametrize("behaviour", list(FAILURES), ids=[
    "connection_closed_without_response", "body_shorter_than_content_length", "body_not_utf8", "connection_reset"])


@CASES
def test_transport_failure_is_retried_then_succeeds(server, behaviour):
    server.script = [behaviour, behaviour]
    backend, waits = backend_for(server.url)
    (response,) = backend.generate([Request("k", "p")])
    assert response.text == "a2" and backend.calls == 1
    assert server.requests == 3
    assert waits == pytest.approx([0.01, 0.02]), "the same exponential backoff as a 5xx"


@CASES
def test_transport_failure_that_never_stops_names_endpoint_and_cause(server, behaviour):
    server.default = behaviour
    backend, waits = backend_for(server.url, max_retries=2)
    with pytest.raises(OpenAIError) as failure:
        backend.generate([Request("k", "p")])
    message = str(failure.value)
    assert f"{server.url}/chat/completions failed after 3 attempts" in message
    assert FAILURES[behaviour] in message
    assert KEY not in message, "the key must never appear in an error"
    assert server.requests == 3 and waits == pytest.approx([0.01, 0.02])


def test_a_failure_in_one_request_of_a_batch_is_retried_alone(server):
    server.script = ["ok", "drop", "ok", "ok"]
    backend, waits = backend_for(server.url)
    responses = backend.generate([Request(f"k{i}", "p") for i in range(3)])  # batch_size 1: in order
    assert [r.key for r in responses] == ["k0", "k1", "k2"] and {r.text for r in responses} == {"a2"}
    assert server.requests == 4 and waits == pytest.approx([0.01])
