"""The simulator's request log: one bounded, JSON-safe entry per API or video request, never holding the key.

An entry holds only small plain values: texts are cut at :data:`TEXT_LIMIT` characters (the body at
:data:`BODY_LIMIT`), the parsed body (``json``) is kept only when it was valid and at most
:data:`JSON_LIMIT` bytes, and nesting is bounded where the body is read (:mod:`.wire`). So copying the log
or answering ``GET /_sim/requests`` works whatever was sent.
"""

from __future__ import annotations

import copy
import threading
import time
from typing import Any

from aiohttp import web

__all__ = ["BODY_LIMIT", "JSON_LIMIT", "TEXT_LIMIT", "RequestLog", "bounded", "record_body"]

#: Characters of a request body kept as text in ``body``.
BODY_LIMIT = 4096
#: Bytes of a body beyond which its parsed form (``json``) is not kept (``body`` still is).
JSON_LIMIT = 64 * 1024
#: Characters kept of a path, a query name or value, an ``Authorization`` scheme.
TEXT_LIMIT = 1024
#: Query parameters kept per entry (names beyond are counted in ``query_dropped``).
QUERY_LIMIT = 100


def bounded(text: str, limit: int = TEXT_LIMIT) -> str:
    """``text``, cut at ``limit`` characters with a marker saying how many more there were."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…[{len(text) - limit} more characters]"


def record_body(entry: dict[str, Any] | None, raw: bytes, parsed: Any) -> None:
    """Put a request body into its log entry: ``body`` as bounded text, ``json`` its value if kept (else None)."""
    if entry is None:
        return
    entry["body"] = bounded(raw.decode("utf-8", "replace"), BODY_LIMIT)
    entry["json"] = parsed if len(raw) <= JSON_LIMIT else None


def _redacted_auth(request: web.Request) -> str | None:
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, sep, _ = header.partition(" ")
    return f"{bounded(scheme, 40)} ***" if sep else "***"


def _query(request: web.Request) -> tuple[dict[str, Any], int]:
    query: dict[str, Any] = {}
    names = list(dict.fromkeys(request.query))
    for key in names[:QUERY_LIMIT]:
        values = request.query.getall(key)
        if len(values) == 1:
            value = values[0]
            query[bounded(key)] = value if len(value) <= TEXT_LIMIT else bounded(value)
        else:
            query[bounded(key)] = [bounded(v) for v in values[:QUERY_LIMIT]]
    return query, max(len(names) - QUERY_LIMIT, 0)


class RequestLog:
    """The entries of answered requests, in the order they were answered."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[dict[str, Any]] = []

    def open(self, request: web.Request, endpoint: str) -> dict[str, Any]:
        """A new entry for ``request`` (the handlers add to it; :meth:`close` files it)."""
        query, dropped = _query(request)
        entry: dict[str, Any] = {
            "time": time.time(),
            "method": request.method,
            "path": bounded(request.path),
            "endpoint": endpoint,
            "query": query,
            "status": 0,
            "authorization": _redacted_auth(request),
            # The client's port: tests tell a reused connection from a new one by it.
            "peer": request.transport.get_extra_info("peername")[1] if request.transport else None,
            "fault": None,
            "elapsed": 0.0,
            "held": 0.0,
            "released_by": None,
        }
        if dropped:
            entry["query_dropped"] = dropped
        return entry

    def close(self, entry: dict[str, Any]) -> None:
        """File the entry of an answered (or dropped) request."""
        entry["elapsed"] = time.time() - entry["time"]
        with self._lock:
            self._entries.append(entry)

    def entries(self, endpoint: str | None = None) -> list[dict[str, Any]]:
        """Copies of the entries, optionally only those to ``endpoint``."""
        with self._lock:
            chosen = [e for e in self._entries if endpoint is None or e["endpoint"] == endpoint]
        return copy.deepcopy(chosen)

    def count(self, endpoint: str | None = None) -> int:
        """How many entries (to ``endpoint``, if given) there are."""
        with self._lock:
            return sum(1 for e in self._entries if endpoint is None or e["endpoint"] == endpoint)

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._entries.clear()
