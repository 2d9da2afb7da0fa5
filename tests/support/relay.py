"""A loopback relay in front of the simulator that rewrites chosen answers (another charset, 408, 409...)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

from airflow_provider_luma.hooks.luma import LumaHook
from airflow_provider_luma.testing import LumaSimulator
from tests.support.connection import connection_json


@dataclass
class Rewrite:
    """
    What the relay does to the next ``times`` requests whose path ends with ``path_suffix``.

    :param status: Answer this status (with a JSON error body) instead of forwarding; ``None`` forwards.
    :param headers: Extra headers of that answer (e.g. ``Retry-After``).
    :param content_type: Forward, then answer the upstream body under this ``Content-Type``.
    """

    path_suffix: str
    times: int = 1
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None


class Relay:
    """A loopback HTTP relay in front of the simulator that rewrites chosen answers; logs what it sent."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.rewrites: list[Rewrite] = []
        self.log: list[tuple[float, str, str, int]] = []  # (time, method, path, status)
        self._lock = threading.Lock()
        relay = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                relay._handle(self)

            def do_POST(self) -> None:
                relay._handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def rewrite(self, rule: Rewrite) -> None:
        with self._lock:
            self.rewrites.append(rule)

    def sent(self, path_suffix: str) -> list[tuple[float, int]]:
        """(time, status) of each answer to a path ending with ``path_suffix``."""
        return [(t, status) for t, _, path, status in self.log if path.split("?")[0].endswith(path_suffix)]

    def _take(self, path: str) -> Rewrite | None:
        with self._lock:
            for rule in self.rewrites:
                if path.split("?")[0].endswith(rule.path_suffix) and rule.times > 0:
                    rule.times -= 1
                    return rule
        return None

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        rule = self._take(request.path)
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else None
        headers: dict[str, str] = {}
        if rule is not None and rule.status is not None:
            status, headers = rule.status, dict(rule.headers)
            content = json.dumps({"message": f"relay says {status}", "statusCode": status}).encode()
            content_type = "application/json"
        else:
            upstream = requests.request(
                request.command,
                self.upstream + request.path,
                data=body,
                headers={k: v for k, v in request.headers.items() if k.lower() in ("authorization", "content-type")},
                timeout=60,
            )
            status, content = upstream.status_code, upstream.content
            content_type = upstream.headers.get("Content-Type", "application/json")
            if rule is not None and rule.content_type is not None:
                content_type = rule.content_type
        with self._lock:
            self.log.append((time.time(), request.command, request.path, status))
        request.send_response(status)
        request.send_header("Content-Type", content_type)
        request.send_header("Content-Length", str(len(content)))
        for name, value in headers.items():
            request.send_header(name, value)
        request.end_headers()
        request.wfile.write(content)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def relay_connection(sim: LumaSimulator, relay_url: str, **extras: Any) -> str:
    """The connection JSON of ``sim`` with the relay as host."""
    conn = json.loads(connection_json(sim, **extras))
    conn["host"] = relay_url
    return json.dumps(conn)


def create(path: str, prompt: str) -> Any:
    """Create a generation through the hook, on the worker's path (``sync``) or the triggerer's (``async``)."""
    hook = LumaHook()
    return hook.create_generation(prompt) if path == "sync" else asyncio.run(hook.acreate_generation(prompt))
