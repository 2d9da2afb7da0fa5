"""The simulator's aiohttp middlewares: request log, gone routes, fault injection, errors, auth.

Route handlers only do their endpoint's own work; everything cross-cutting happens here, in this order
(outermost first) on the API origin::

    log -> gone -> faults -> errors -> auth -> handler

and ``log -> faults`` on the video origin. A request whose route has no endpoint name (the ``/_sim/``
control calls, the video origin's unknown paths) passes through untouched. The middlewares see the
simulator only through :class:`Host`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from airflow_provider_luma.testing.family import Route
from airflow_provider_luma.testing.faults import FaultQueue, answer_with
from airflow_provider_luma.testing.requestlog import RequestLog
from airflow_provider_luma.testing.wire import ENTRY_KEY, ApiError, nest_not_found, request_key

__all__ = ["Host", "api_middlewares", "cdn_middlewares"]

ROUTE_KEY: Any = request_key("luma_sim_route")
_DROPPED_KEY: Any = request_key("luma_sim_dropped")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Host(Protocol):
    """What the middlewares need from the simulator, and all they may use."""

    @property
    def log(self) -> RequestLog:
        """Where answered requests are filed."""
        ...

    @property
    def faults(self) -> FaultQueue:
        """The faults to apply."""
        ...

    def route_of(self, request: web.Request) -> Route | None:
        """The family route (or the video route) the request matched; None for control and unnamed routes."""
        ...

    def route_gone(self, request: web.Request) -> bool:
        """Whether the request's path belongs to a family whose routes are switched off."""
        ...

    def check_auth(self, request: web.Request) -> None:
        """Raise :class:`~.wire.ApiError` 401/403 unless the request carries an accepted key."""
        ...

    def error_response(self, request: web.Request, exc: ApiError) -> web.Response:
        """The error answer in the format of the request's family."""
        ...

    def video_bytes(self, request: web.Request) -> bytes | None:
        """The clip a video request would get (for faults cut from it); None on the API origin."""
        ...


def api_middlewares(host: Host) -> list[Any]:
    """Middlewares of the API origin, outermost first."""
    return [_log(host), _gone(host), _faults(host), _errors(host), _auth(host)]


def cdn_middlewares(host: Host) -> list[Any]:
    """Middlewares of the video origin, outermost first (no auth: it is a CDN)."""
    return [_log(host), _faults(host)]


def _log(host: Host) -> Any:
    @web.middleware
    async def log_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = host.route_of(request)
        if route is None:
            return await handler(request)
        request[ROUTE_KEY] = route
        entry = host.log.open(request, route.endpoint)
        request[ENTRY_KEY] = entry
        response: web.StreamResponse | None = None
        try:
            response = await handler(request)
            return response
        finally:
            # status stays 0 when the connection was dropped or the client went away.
            if response is not None and not request.get(_DROPPED_KEY):
                entry["status"] = response.status
            host.log.close(entry)

    return log_requests


def _gone(host: Host) -> Any:
    @web.middleware
    async def gone_routes(request: web.Request, handler: Handler) -> web.StreamResponse:
        if host.route_gone(request):
            return nest_not_found(request)
        return await handler(request)

    return gone_routes


def _faults(host: Host) -> Any:
    @web.middleware
    async def inject_faults(request: web.Request, handler: Handler) -> web.StreamResponse:
        route: Route | None = request.get(ROUTE_KEY)
        if route is None or route.endpoint == "other":  # unknown routes: a plain 404, always
            return await handler(request)
        video = route.endpoint == "video"
        fault = host.faults.take(route.endpoint, random_ok=not video)
        if fault is None:
            return await handler(request)
        request[ENTRY_KEY]["fault"] = fault.kind

        def error(req: web.Request, status: int, headers: dict[str, str]) -> web.Response:
            return host.error_response(req, ApiError(status, headers=headers))

        def dropped() -> None:
            request[_DROPPED_KEY] = True

        return await answer_with(
            fault,
            request,
            handler,
            ok_status=route.ok_status,
            video=host.video_bytes(request) if video else None,
            error=error,
            dropped=dropped,
        )

    return inject_faults


def _errors(host: Host) -> Any:
    @web.middleware
    async def render_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return host.error_response(request, exc)

    return render_errors


def _auth(host: Host) -> Any:
    @web.middleware
    async def check_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        # Unknown routes are 404 whatever the key; the video origin needs none.
        route: Route | None = request.get(ROUTE_KEY)
        if route is not None and route.endpoint not in ("other", "video"):
            host.check_auth(request)
        return await handler(request)

    return check_auth
