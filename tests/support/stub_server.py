"""A tiny loopback HTTP server whose every answer a test writes, for what the simulator cannot do."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class StubRequest:
    """One request a :class:`StubServer` received."""

    method: str
    path: str
    headers: Mapping[str, str]


class StubServer:
    """
    A tiny HTTP server on 127.0.0.1 for what the simulator cannot do (cookies, proxying, odd 404s).

    ``answer(request) -> (status, headers, body)`` makes every answer; ``requests`` logs them. As a
    forward proxy it sees the absolute URL in ``path``.
    """

    def __init__(self, answer: Callable[[StubRequest], tuple[int, Mapping[str, str], bytes]]) -> None:
        self.answer = answer
        self.requests: list[StubRequest] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                request = StubRequest(self.command, self.path, dict(self.headers))
                stub.requests.append(request)
                status, headers, body = stub.answer(request)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _any

            def log_message(self, *args: Any) -> None:  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> StubServer:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()
