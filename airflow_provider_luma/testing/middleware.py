"""The simulator's aiohttp middlewares: request log, gone routes, fault injection, errors, auth.

Route handlers only do their endpoint's own work; everything cross-cutting happens here, in
this order (outermost first) on the API origin::

    log -> gone -> faults -> errors -> auth -> handler

and ``log -> faults`` on the video origin. A request whose route has no endpoint name (the
``/_sim/`` control calls, the video origin's unknown paths) passes through untouched.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from airflow_provider_luma.testing.simulator import LumaSimulator

__all__ = [
    "ENTRY_KEY",
    "VIDEO_ONLY_FAULTS",
    "ApiError",
    "Fault",
    "api_middlewares",
    "cdn_middlewares",
    "nest_not_found",
    "sample_video",
]

SAMPLE_VIDEO_PATH = Path(__file__).with_name("sample.mp4")


def _request_key(name: str) -> Any:
    # aiohttp >= 3.13 wants typed keys for a request's storage; older ones have none.
    factory = getattr(web, "RequestKey", None)
    return factory(name, object) if factory is not None else name


#: ``request[ENTRY_KEY]``: the request's log entry (handlers add ``json``, ``held``, ...).
ENTRY_KEY: Any = _request_key("luma_sim_entry")
ENDPOINT_KEY: Any = _request_key("luma_sim_endpoint")
_DROPPED_KEY: Any = _request_key("luma_sim_dropped")

#: Fault kinds that only make sense on a video download.
VIDEO_ONLY_FAULTS = frozenset({"short_body", "tiny_video"})
#: Size of the ``huge`` fault's padding string.
HUGE_PADDING = 20 * 1024 * 1024
HTML_PAGE = (
    "<!DOCTYPE html>\n<html><head><title>Service Temporarily Unavailable</title></head>\n"
    "<body><h1>Please wait</h1><p>Checking your browser before accessing the site.</p></body></html>\n"
)

STATUS_MESSAGES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden: insufficient credits on this API key",
    404: "Not Found",
    405: "Method Not Allowed",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@functools.cache
def sample_video() -> bytes:
    return SAMPLE_VIDEO_PATH.read_bytes()


class ApiError(Exception):
    """An error answer in the service's format (rendered by the errors middleware)."""

    def __init__(
        self,
        status: int,
        message: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message or STATUS_MESSAGES.get(status, "Error"))
        self.status = status
        self.message = message or STATUS_MESSAGES.get(status, "Error")
        self.errors = errors
        self.headers = headers or {}


@dataclass
class Fault:
    kind: str
    endpoint: str
    remaining: int
    retry_after: float | str | None = None
    delay: float | None = None
    after: bool = False


def nest_not_found(request: web.Request) -> web.Response:
    """NestJS's answer to a route it does not have (not the service's error envelope)."""
    body = {"message": f"Cannot {request.method} {request.path}", "error": "Not Found", "statusCode": 404}
    return web.json_response(body, status=404)


def _success_status(endpoint: str) -> int:
    return 201 if endpoint == "create" else 200


# ---------------------------------------------------------------- the middlewares


def api_middlewares(sim: LumaSimulator) -> list[Any]:
    """Middlewares of the API origin, outermost first."""
    return [_log(sim), _gone(sim), _faults(sim), _errors(sim), _auth(sim)]


def cdn_middlewares(sim: LumaSimulator) -> list[Any]:
    """Middlewares of the video origin, outermost first (no auth: it is a CDN)."""
    return [_log(sim), _faults(sim)]


def _log(sim: LumaSimulator) -> Any:
    @web.middleware
    async def log_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
        endpoint = sim._endpoint_of(request)
        if endpoint is None:
            return await handler(request)
        request[ENDPOINT_KEY] = endpoint
        entry = sim._new_entry(request, endpoint)
        request[ENTRY_KEY] = entry
        response: web.StreamResponse | None = None
        try:
            response = await handler(request)
            return response
        finally:
            # status stays 0 when the connection was dropped or the client went away.
            if response is not None and not request.get(_DROPPED_KEY):
                entry["status"] = response.status
            sim._finish_entry(entry)

    return log_requests


def _gone(sim: LumaSimulator) -> Any:
    @web.middleware
    async def gone_routes(request: web.Request, handler: Handler) -> web.StreamResponse:
        if sim._route_gone(request):
            return nest_not_found(request)
        return await handler(request)

    return gone_routes


def _faults(sim: LumaSimulator) -> Any:
    @web.middleware
    async def inject_faults(request: web.Request, handler: Handler) -> web.StreamResponse:
        endpoint = request.get(ENDPOINT_KEY)
        if endpoint is None or endpoint == "other":  # unknown routes: a plain 404, always
            return await handler(request)
        fault = sim._take_fault(endpoint, random_ok=endpoint != "video")
        if fault is None:
            return await handler(request)
        request[ENTRY_KEY]["fault"] = fault.kind
        return await _apply(sim, request, handler, endpoint, fault)

    return inject_faults


def _errors(sim: LumaSimulator) -> Any:
    @web.middleware
    async def render_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return sim._error_response(request, exc)

    return render_errors


def _auth(sim: LumaSimulator) -> Any:
    @web.middleware
    async def check_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        # Unknown routes are 404 whatever the key; the video origin needs none.
        if request.get(ENDPOINT_KEY) not in (None, "other", "video"):
            sim._check_auth(request)
        return await handler(request)

    return check_auth


# ---------------------------------------------------------------- fault answers


async def _apply(
    sim: LumaSimulator, request: web.Request, handler: Handler, endpoint: str, fault: Fault
) -> web.StreamResponse:
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
    return await _fault_answer(sim, request, endpoint, fault, normal)


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


async def _fault_answer(
    sim: LumaSimulator,
    request: web.Request,
    endpoint: str,
    fault: Fault,
    normal: web.StreamResponse | None,
) -> web.StreamResponse:
    kind = fault.kind
    video = endpoint == "video"
    ok = _success_status(endpoint)
    if kind == "drop":
        if video:
            return await _stream_video(request, sent=len(sample_video()) // 2, abort=True)
        request[_DROPPED_KEY] = True
        # Abort (RST) rather than answer; aiohttp then finds the transport gone and
        # writes nothing. The returned object is never sent.
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=500)
    if kind == "short_body":
        return await _stream_video(request, sent=len(sample_video()), abort=False)
    if kind == "tiny_video":
        return web.Response(body=sample_video()[:5], content_type="video/mp4")
    if kind == "malformed":
        if video:
            return web.Response(body=b"not an mp4", content_type="video/mp4")
        return web.Response(status=200, text='{"id": "oops", "state": ', content_type="application/json")
    if kind == "missing_fields":
        if video:
            return web.Response(body=b"", content_type="video/mp4")
        return web.json_response({}, status=200)
    if kind == "html":
        return web.Response(status=ok, text=HTML_PAGE, content_type="text/html")
    if kind == "empty":
        return web.Response(status=ok, body=b"", content_type="video/mp4" if video else "application/json")
    if kind == "huge":
        answer = _normal_json(normal)
        body: dict[str, Any] = answer if isinstance(answer, dict) else {} if answer is None else {"data": answer}
        return web.json_response({**body, "padding": "x" * HUGE_PADDING}, status=ok)
    headers: dict[str, str] = {}
    if kind == "429" and fault.retry_after is not None:
        headers["Retry-After"] = str(fault.retry_after)
    return sim._error_response(request, ApiError(int(kind), headers=headers))


async def _stream_video(request: web.Request, *, sent: int, abort: bool) -> web.StreamResponse:
    """Promise the whole video (and more unless aborting), send ``sent`` bytes, then cut.

    ``abort``: reset the connection mid-download; otherwise end the response normally and
    close the connection (the client sees fewer bytes than ``Content-Length``).
    """
    data = sample_video()
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
