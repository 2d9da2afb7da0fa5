"""
A loopback HTTP server that answers with the exact bytes a test writes, as fast or as slowly as it
says: raw JSON the standard encoder would never emit (``1e999999``, a lone surrogate escape), a body
or headers dripped one byte at a time, a server that quotes the request's key back.

Unlike :mod:`.stub_server` it writes the status line, headers and body itself, so nothing between the
test and the socket reformats them; it also counts TCP connections (a TLS handshake to it is one).
"""

from __future__ import annotations

import itertools
import socket
import socketserver
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RawRequest:
    """One request a :class:`RawServer` read: method, path (with query), headers, body."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes

    @property
    def key(self) -> str:
        """The bearer key the request carried ("" without one)."""
        return self.headers.get("authorization", "").removeprefix("Bearer ")


@dataclass
class Reply:
    """
    What a :class:`RawServer` sends back.

    :param status: The HTTP status.
    :param body: The body, sent as is (``str`` is encoded as UTF-8 with ``surrogatepass``).
    :param headers: Extra headers (``Content-Length`` is always added).
    :param drip: Seconds between bytes of the body (0: all at once).
    :param drip_headers: Drip the status line and headers too.
    :param drip_for: Stop dripping (and close) after this many seconds; the body may be cut.
    """

    status: int = 200
    body: bytes | str = b"{}"
    headers: Mapping[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    drip: float = 0.0
    drip_headers: bool = False
    drip_for: float | None = None


_BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
_REASONS = {200: "OK", 201: "Created", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many"}


class RawServer:
    """
    A threaded HTTP/1.1 server on 127.0.0.1; ``answer(request) -> Reply`` makes every answer.

    ``requests`` lists what it read, ``connections`` counts accepted TCP connections. Use as a
    context manager; on exit, replies still dripping stop.
    """

    def __init__(self, answer: Callable[[RawRequest], Reply]) -> None:
        self.answer = answer
        self.requests: list[RawRequest] = []
        self.connections = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        server = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                with server._lock:
                    server.connections += 1
                try:
                    first = self.connection.recv(1, socket.MSG_PEEK)
                except OSError:
                    return
                if first == b"\x16":  # a TLS handshake: answer as plain-HTTP servers do, then close
                    self.connection.sendall(_BAD_REQUEST)
                    return
                while not server._stop.is_set():
                    request = _read_request(self.rfile)
                    if request is None:
                        return
                    with server._lock:
                        server.requests.append(request)
                    reply = server.answer(request)
                    if not server._send(self.connection, reply):
                        return

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def _send(self, sock: socket.socket, reply: Reply) -> bool:
        body = reply.body.encode("utf-8", "surrogatepass") if isinstance(reply.body, str) else reply.body
        head = f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Answer')}\r\n"
        for name, value in {**reply.headers, "Content-Length": str(len(body))}.items():
            head += f"{name}: {value}\r\n"
        head += "\r\n"
        try:
            if not reply.drip:
                sock.sendall(head.encode("latin-1") + body)
                return True
            ends = None if reply.drip_for is None else time.monotonic() + reply.drip_for
            if not reply.drip_headers:
                sock.sendall(head.encode("latin-1"))
            data = (head.encode("latin-1") if reply.drip_headers else b"") + body
            for index in range(len(data)):
                if self._stop.is_set() or (ends is not None and time.monotonic() >= ends):
                    return False
                sock.sendall(data[index : index + 1])
                time.sleep(reply.drip)
            return True
        except OSError:  # the client went away (a deadline closed the connection)
            return False

    def __enter__(self) -> RawServer:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()

    def count(self, method: str | None = None) -> int:
        """Requests read (of ``method``)."""
        return len([r for r in self.requests if method is None or r.method == method])


def _read_request(rfile: Any) -> RawRequest | None:
    try:
        line = rfile.readline(65537)
    except OSError:
        return None
    if not line or not line.strip():
        return None
    try:
        method, path, _ = line.decode("latin-1").split(" ", 2)
    except ValueError:
        return None  # not HTTP (e.g. a TLS ClientHello): close
    headers: dict[str, str] = {}
    while True:
        raw = rfile.readline(65537)
        if raw in (b"\r\n", b"\n", b""):
            break
        name, _, value = raw.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length") or 0)
    return RawRequest(method, path, headers, rfile.read(length) if length else b"")


class FakeLumaApi:
    """
    A :class:`RawServer` playing the ``luma-ai`` endpoints with answers a test sets as raw JSON text:
    a create makes a new id (``creates`` counts them); a fetch answers ``fetch_body`` with ``{id}``
    replaced by the id asked for (JSON-escaped as is: a template is raw text).

    :param create_body: The create answer's text; ``{id}`` is the new id.
    :param fetch_body: The fetch answer's text; ``{id}`` is the id asked for.
    """

    def __init__(self, create_body: str = '{"id": "{id}", "state": "queued"}', fetch_body: str = "") -> None:
        self.create_body = create_body
        self.fetch_body = (
            fetch_body or '{"id": "{id}", "state": "completed", "assets": {"video": "https://cdn.example/v.mp4"}}'
        )
        self.created: list[str] = []
        self.reply: Callable[[RawRequest], Reply | None] | None = None
        self._ids = itertools.count(1)
        self.server = RawServer(self._answer)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def creates(self) -> int:
        return len(self.created)

    def _answer(self, request: RawRequest) -> Reply:
        if self.reply is not None:
            custom = self.reply(request)
            if custom is not None:
                return custom
        if request.method == "POST":
            generation_id = str(uuid.UUID(int=0x4F1C << 112 | next(self._ids)))
            self.created.append(generation_id)
            return Reply(201, self.create_body.replace("{id}", generation_id))
        asked = _asked_id(request.path)
        return Reply(200, self.fetch_body.replace("{id}", asked))

    def __enter__(self) -> FakeLumaApi:
        self.server.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.__exit__(*exc_info)


def _asked_id(path: str) -> str:
    from urllib.parse import parse_qs, urlsplit

    query = parse_qs(urlsplit(path).query)
    for name in ("generation_id", "generation_ids[]", "generation_ids"):
        if query.get(name):
            return query[name][0].split(",")[0]
    return ""
