"""The simulator's faults: the kinds, the queue of scripted ones, random ones, and the answers each gives.

A fault is checked when it is queued (:func:`make_fault`), so a wrongly typed argument is refused with a 400
at ``POST /_sim/faults`` instead of failing the request that takes it.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from airflow_provider_luma.testing.checks import Choice, Flag, Maybe, Number, Text

__all__ = ["FAULT_KINDS", "HUGE_PADDING", "VIDEO_ONLY_FAULTS", "Fault", "FaultQueue", "answer_with", "make_fault"]

FAULT_KINDS: tuple[str, ...] = (
    "429",
    "500",
    "502",
    "503",
    "504",
    "drop",
    "slow",
    "malformed",
    "missing_fields",
    "401",
    "403",
    "html",
    "charset_base64",
    "empty",
    "short_body",
    "tiny_video",
    "huge",
)
#: Fault kinds that only make sense on a video download.
VIDEO_ONLY_FAULTS = frozenset({"short_body", "tiny_video"})
#: Size of the ``huge`` fault's padding string.
HUGE_PADDING = 20 * 1024 * 1024
HTML_PAGE = (
    "<!DOCTYPE html>\n<html><head><title>Service Temporarily Unavailable</title></head>\n"
    "<body><h1>Please wait</h1><p>Checking your browser before accessing the site.</p></body></html>\n"
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ErrorAnswer = Callable[[web.Request, int, dict[str, str]], web.Response]


@dataclass
class Fault:
    """A queued fault: ``kind`` for the next ``remaining`` requests to ``endpoint``."""

    kind: str
    endpoint: str
    remaining: int
    retry_after: float | str | None = None
    delay: float | None = None
    after: bool = False


def make_fault(
    kind: Any,
    endpoint: Any,
    times: Any,
    retry_after: Any,
    delay: Any,
    after: Any,
    *,
    endpoints: tuple[str, ...],
) -> Fault:
    """A checked :class:`Fault`; ``ValueError`` naming the argument that is wrong."""
    checks: dict[str, tuple[Any, Any]] = {
        "kind": (Choice(*FAULT_KINDS), kind),
        "endpoint": (Choice(*endpoints), endpoint),
        "times": (Number(1, integer=True), times),
        "delay": (Maybe(Number(0, 3600)), delay),
        "after": (Flag(), after),
    }
    for name, (check, value) in checks.items():
        try:
            check(value)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    if retry_after is not None:
        try:
            (Text(empty=False, longest=100, header=True) if isinstance(retry_after, str) else Number(0))(retry_after)
        except ValueError as exc:
            raise ValueError(f"retry_after: {exc}") from None
    if kind in VIDEO_ONLY_FAULTS and endpoint not in ("video", "any"):
        raise ValueError(f"{kind} is a fault of the video endpoint only")
    return Fault(kind, endpoint, times, retry_after, delay, after)


class FaultQueue:
    """
    Scripted faults, consumed first in, first out, and random ones.

    :param rate: Returns the current ``fault_rate`` (probability of a random fault per API call).
    :param kinds: Returns the current ``fault_kinds`` drawn from.
    :param seed: Seed of the random draws, for reproducible load tests.
    """

    def __init__(self, rate: Callable[[], float], kinds: Callable[[], list[str]], seed: int | None) -> None:
        self._rate, self._kinds = rate, kinds
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._queue: list[Fault] = []

    def add(self, fault: Fault) -> None:
        """Queue a fault (checked by :func:`make_fault`)."""
        with self._lock:
            self._queue.append(fault)

    def clear(self) -> None:
        """Forget the queued faults."""
        with self._lock:
            self._queue.clear()

    def take(self, endpoint: str, *, random_ok: bool) -> Fault | None:
        """The fault the next request to ``endpoint`` gets, if any (scripted first, then random)."""
        if not self._queue and (not random_ok or self._rate() <= 0):
            return None  # the usual case, without the lock
        with self._lock:
            for fault in self._queue:
                if fault.endpoint not in (endpoint, "any"):
                    continue
                if fault.kind in VIDEO_ONLY_FAULTS and endpoint != "video":
                    continue
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._queue.remove(fault)
                return fault
            if not random_ok or self._rate() <= 0:
                return None
            kinds = [k for k in self._kinds() if k not in VIDEO_ONLY_FAULTS]
            if kinds and self._rng.random() < self._rate():
                return Fault(self._rng.choice(kinds), endpoint, 1, delay=1.0)
        return None


# ---------------------------------------------------------------- the answers


async def answer_with(
    fault: Fault,
    request: web.Request,
    handler: Handler,
    *,
    ok_status: int,
    video: bytes | None,
    error: ErrorAnswer,
    dropped: Callable[[], None],
) -> web.StreamResponse:
    """The answer to ``request`` under ``fault``.

    :param ok_status: What the route answers on success (``html``, ``empty`` and ``huge`` pretend success).
    :param video: The video the request would get (video origin), else None.
    :param error: Renders an error of a status in the route's format.
    :param dropped: Called when the connection is reset (the log then keeps status 0).
    """
    kind = fault.kind
    if kind == "slow":
        delay = 5.0 if fault.delay is None else fault.delay
        if fault.after:
            response = await handler(request)
            await asyncio.sleep(delay)
            return response
        await asyncio.sleep(delay)
        return await handler(request)
    if kind == "charset_base64":  # the normal answer, always: only its Content-Type lies
        return _with_charset(await handler(request), "base64")
    normal = await handler(request) if fault.after else None
    if video is not None and (answer := await _video_fault(kind, request, video)) is not None:
        return answer
    if kind == "drop":
        dropped()
        # Abort (RST) rather than answer; aiohttp then finds the transport gone and writes nothing.
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=500)
    if kind == "malformed":
        return web.Response(status=200, text='{"id": "oops", "state": ', content_type="application/json")
    if kind == "missing_fields":
        return web.json_response({}, status=200)
    if kind == "html":
        return web.Response(status=ok_status, text=HTML_PAGE, content_type="text/html")
    if kind == "empty":
        return web.Response(status=ok_status, body=b"", content_type="application/json")
    if kind == "huge":
        answer = _normal_json(normal)
        body: dict[str, Any] = answer if isinstance(answer, dict) else {} if answer is None else {"data": answer}
        return web.json_response({**body, "padding": "x" * HUGE_PADDING}, status=ok_status)
    headers: dict[str, str] = {}
    if kind == "429" and fault.retry_after is not None:
        headers["Retry-After"] = str(fault.retry_after)
    return error(request, int(kind), headers)


async def _video_fault(kind: str, request: web.Request, video: bytes) -> web.StreamResponse | None:
    """The video origin's own answer to ``kind`` (None: the same as the API's)."""
    if kind == "drop":  # mid-body: the headers and half the video went out (the log keeps that status)
        return await _stream_video(request, video, sent=len(video) // 2, abort=True)
    if kind == "short_body":
        return await _stream_video(request, video, sent=len(video), abort=False)
    if kind == "tiny_video":
        return web.Response(body=video[:5], content_type="video/mp4")
    if kind == "malformed":
        return web.Response(body=b"not an mp4", content_type="video/mp4")
    if kind in ("missing_fields", "empty"):
        return web.Response(body=b"", content_type="video/mp4")
    return None


def _with_charset(response: web.StreamResponse, charset: str) -> web.StreamResponse:
    if not isinstance(response, web.Response) or response.prepared or not isinstance(response.body, bytes):
        return response
    headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-type", "content-length")}
    headers["Content-Type"] = f"{response.content_type}; charset={charset}"
    return web.Response(body=response.body, status=response.status, headers=headers)


def _normal_json(normal: web.StreamResponse | None) -> Any:
    if isinstance(normal, web.Response) and isinstance(normal.body, bytes) and normal.status < 300:
        try:
            return json.loads(normal.body)
        except ValueError:
            return None
    return None


async def _stream_video(request: web.Request, data: bytes, *, sent: int, abort: bool) -> web.StreamResponse:
    """Promise the whole video (and more unless aborting), send ``sent`` bytes, then cut.

    ``abort``: reset the connection mid-download; otherwise end the response normally and close the
    connection (the client sees fewer bytes than ``Content-Length``).
    """
    response = web.StreamResponse(status=200)
    response.content_type = "video/mp4"
    response.content_length = len(data) if abort else len(data) + 4096
    if not abort:
        response.force_close()
    await response.prepare(request)
    await response.write(data[:sent])
    if abort:
        if request.transport is not None:
            request.transport.abort()
    else:
        await response.write_eof()
    return response
