"""A real HTTP server on 127.0.0.1 for the OpenAI-compatible backend's tests.

Tests script what it answers through their own request handler; this module only starts the
server in a daemon thread on a free loopback port and stops it, so every endpoint test talks
to a real socket and never to anything beyond this machine.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that keeps the test output free of access logs."""

    def log_message(self, *args):
        pass


class LocalServer:
    """Serves ``handler`` on 127.0.0.1 (a free port) until :meth:`close`; ``url`` is its /v1 base."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
