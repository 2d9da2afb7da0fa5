"""A local simulator of the AI/ML API wrapper of Luma's video generation: :class:`LumaSimulator`.

It serves the API on one origin and the finished videos on a second origin (like a CDN), with scriptable
timelines, faults and a request log. Only ``aiohttp`` and the standard library are used, so it runs beside
any Airflow version. Its parts, each a module of this package:

* :mod:`.options`: every option, declared once (constructor keywords, ``/_sim/config``, CLI flags, docs);
* :mod:`.store`: the generations, their timelines and scripts, the state file, long-poll holds;
* the endpoint families, registered in :data:`FAMILIES`: :mod:`.luma_ai` (the seed's endpoints with the
  long poll) and :mod:`.universal` (``/v2/video/generations``); :mod:`.family` says what a family is;
* :mod:`.video`: the clip of each aspect ratio, served from the video origin;
* :mod:`.middleware` (request log, gone routes, faults, errors, auth), with :mod:`.requestlog` and
  :mod:`.faults`;
* :mod:`.control` (the methods below and the ``/_sim/`` HTTP API) and :mod:`.client` (that API from Python);
* :mod:`.server`: sockets and the background thread.

API origin: ``Authorization: Bearer <key>`` required (401 wrong or missing, 403 an exhausted key). The
families share one generation store and the same timelines, but a generation made by one family is not
found (404) by another's fetch. Errors use the service's envelope ``{"message", "path", "requestId",
"statusCode", "timestamp"}`` (plus ``errors`` for validation), except routes the server does not have:
NestJS's ``{"message": "Cannot GET /path", "error": "Not Found", "statusCode": 404}``. Request bodies are
strict JSON nested at most 32 deep (else 400), and at most 1 MiB (else 413).

Video origin: ``GET /videos/<uuid>.mp4`` serves the clip of the generation's aspect ratio once it is
completed (no auth; whether an ``Authorization`` header came along is logged, redacted).

Prompt directives, handy when the DAG runs in another process: ``[sim:fail]`` anywhere in the prompt fails
the generation with ``"simulated failure"``; ``[sim:slow]`` makes its queued and dreaming times ten times
longer.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import json
import logging
from typing import Any

from aiohttp import web

from airflow_provider_luma.testing.control import SimulatorControls, control_routes
from airflow_provider_luma.testing.family import Family, FamilyContext, Route
from airflow_provider_luma.testing.faults import FAULT_KINDS, FaultQueue
from airflow_provider_luma.testing.luma_ai import API_PREFIX, LumaAiFamily
from airflow_provider_luma.testing.middleware import api_middlewares, cdn_middlewares
from airflow_provider_luma.testing.options import (
    BY_NAME,
    DEFAULT_API_KEY,
    HOLD_PARAMS,
    MULTI_SHAPES,
    OPTIONS,
    Settings,
)
from airflow_provider_luma.testing.requestlog import RequestLog
from airflow_provider_luma.testing.server import LoopThread, Sockets
from airflow_provider_luma.testing.store import STATES, Generation, Store
from airflow_provider_luma.testing.universal import UNIVERSAL_MODELS, UNIVERSAL_PATH, UniversalFamily
from airflow_provider_luma.testing.video import SAMPLE_VIDEO_PATH, clip_bytes, video_handler, video_name, video_of
from airflow_provider_luma.testing.wire import ApiError, envelope, nest_not_found

__all__ = [
    "API_PREFIX",
    "DEFAULT_API_KEY",
    "ENDPOINTS",
    "FAMILIES",
    "FAULT_KINDS",
    "HOLD_PARAMS",
    "LOG_ENDPOINTS",
    "MULTI_SHAPES",
    "SAMPLE_VIDEO_PATH",
    "STATES",
    "UNIVERSAL_MODELS",
    "UNIVERSAL_PATH",
    "LumaSimulator",
]

log = logging.getLogger(__name__)

#: The endpoint families served, in the order their endpoints are listed. One more family: one more line.
FAMILIES: tuple[type[Family], ...] = (LumaAiFamily, UniversalFamily)

_FAMILY_ENDPOINTS = tuple(endpoint for family in FAMILIES for endpoint in family.endpoints)
#: Endpoints a fault can target (``any``: every one of them).
ENDPOINTS: tuple[str, ...] = (*_FAMILY_ENDPOINTS, "video", "any")
#: Endpoint names in the request log (``other``: a route the server does not have).
LOG_ENDPOINTS: tuple[str, ...] = (*_FAMILY_ENDPOINTS, "video", "other")
#: Request bodies larger than this are refused with 413.
MAX_BODY_BYTES = 1024**2


class LumaSimulator(SimulatorControls):
    """
    A local, scriptable stand-in for the Luma video API (plus a CDN for the videos).

    Every option (a keyword here; also an attribute, which may be assigned while running for the options
    ``POST /_sim/config`` may change) is declared once in :data:`.options.OPTIONS`; a wrong value is a
    ``ValueError`` naming it, an unknown keyword a ``TypeError``. The options are listed below.

    :param host: Interface to bind both origins to; loopback by default.
    :param port: API port; 0 picks a free one (a restart of the same instance reuses it).
    :param cdn_port: Video origin port; 0 picks a free one.
    :param options: Any other option by name (``hold_seconds=1``, ``api_key=...``, ``state_file=...``).
    """

    def __init__(self, host: str | None = None, port: int | None = None, cdn_port: int | None = None, **options: Any):
        given = {
            name: value for name, value in (("host", host), ("port", port), ("cdn_port", cdn_port)) if value is not None
        }
        self.settings = Settings(**given, **options)
        # The key is kept apart: a test may replace it (``_api_key``) to play a key rotation.
        self._api_key: str = self.settings.api_key
        self.store = Store(self.settings.state_file)
        self.log = RequestLog()
        self.faults = FaultQueue(
            lambda: self.settings.fault_rate, lambda: self.settings.fault_kinds, self.settings.seed
        )
        self.fault_endpoints = ENDPOINTS
        context = FamilyContext(self.store, self.settings, self._video_url)
        self.families: list[Family] = [family(context) for family in FAMILIES]
        self._by_name = {family.name: family for family in self.families}
        self._routes: dict[Any, tuple[Route, Family | None]] = {}
        self._sockets = Sockets(self.settings.host, self.settings.backlog, self.settings.shutdown_timeout)
        self._thread = LoopThread(self.astart, self.astop, self.settings.shutdown_timeout + 10)
        self._port: int | None = None
        self._cdn_port: int | None = None

    # ------------------------------------------------------------------ options as attributes

    def __getattr__(self, name: str) -> Any:
        settings = self.__dict__.get("settings")
        if settings is None or name not in BY_NAME:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(settings, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in BY_NAME and "settings" in self.__dict__ and not hasattr(type(self), name):
            self.settings.update({name: value}, live_only=True)
            return
        object.__setattr__(self, name, value)

    # ------------------------------------------------------------------ properties

    @property
    def api_key(self) -> str:
        """The accepted API key."""
        return self._api_key

    @property
    def port(self) -> int:
        """The bound API port."""
        if self._port is None:
            raise RuntimeError("simulator is not running")
        return self._port

    @property
    def cdn_port(self) -> int:
        """The bound video (CDN) port."""
        if self._cdn_port is None:
            raise RuntimeError("simulator is not running")
        return self._cdn_port

    @property
    def base_url(self) -> str:
        """API origin, e.g. ``http://127.0.0.1:8089``."""
        return f"http://{self.settings.host}:{self.port}"

    @property
    def cdn_url(self) -> str:
        """Video origin, e.g. ``http://127.0.0.1:8090``."""
        return f"http://{self.settings.host}:{self.cdn_port}"

    @property
    def running(self) -> bool:
        """Whether the simulator is listening."""
        return self._sockets.running

    def connection_json(self, **extras: Any) -> str:
        """JSON for ``AIRFLOW_CONN_LUMA_DEFAULT`` pointing at this simulator.

        :param extras: If any, the connection's ``extra``.
        """
        conn: dict[str, Any] = {"conn_type": "luma", "host": self.base_url, "password": self._api_key}
        if extras:
            conn["extra"] = extras
        return json.dumps(conn)

    def family_of(self, gen: Generation) -> Family:
        """The family that made ``gen``."""
        return self._by_name[gen.family]

    # ------------------------------------------------------------------ lifecycle

    async def astart(self) -> None:
        """Start serving inside the running event loop."""
        if self._sockets.running:
            raise RuntimeError("simulator already running")
        self.store.attach(asyncio.get_running_loop())
        self.store.load()
        try:
            # Restarting the same instance reuses its ports so clients keep working.
            self._port = await self._sockets.serve(self._api_app(), self._port or self.settings.port)
            self._cdn_port = await self._sockets.serve(self._cdn_app(), self._cdn_port or self.settings.cdn_port)
        except BaseException:
            await self._sockets.close()
            raise
        log.info("Luma simulator listening on %s (videos: %s)", self.base_url, self.cdn_url)

    async def astop(self) -> None:
        """Release held requests and stop serving."""
        self.store.release_all()
        self.store.save()
        await self._sockets.close()

    def start(self) -> LumaSimulator:
        """Run in a background thread with its own event loop; return once listening."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the background thread started by :meth:`start` (idempotent)."""
        self._thread.stop()

    def __enter__(self) -> LumaSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> LumaSimulator:
        await self.astart()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.astop()

    def _api_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=api_middlewares(_Host(self)))
        health = lambda: {"base_url": self.base_url, "cdn_url": self.cdn_url}  # noqa: E731
        for method, path, handler in control_routes(self, health):
            app.router.add_route(method, path, handler)
        # Routes named here are logged (and faulted, authenticated) by the middlewares.
        self._routes = {}
        for family in self.families:
            for route in family.routes():
                self._routes[app.router.add_route(route.method, route.path, route.handler)] = (route, family)
        unknown = Route("*", "/{tail:.*}", "other", self._unknown, ok_status=404)
        self._routes[app.router.add_route("*", unknown.path, unknown.handler)] = (unknown, None)
        return app

    def _cdn_app(self) -> web.Application:
        app = web.Application(middlewares=cdn_middlewares(_Host(self)))

        def not_found(request: web.Request) -> web.Response:
            return web.json_response(envelope(request, ApiError(404)), status=404)

        video = Route("GET", "/videos/{name}", "video", video_handler(self.store, not_found))
        self._routes[app.router.add_route(video.method, video.path, video.handler)] = (video, None)

        async def cdn_unknown(request: web.Request) -> web.Response:
            return not_found(request)

        app.router.add_route("*", "/{tail:.*}", cdn_unknown)
        return app

    @staticmethod
    async def _unknown(request: web.Request) -> web.Response:
        return nest_not_found(request)

    def _video_url(self, gen: Generation) -> str | None:
        return f"{self.cdn_url}/videos/{video_name(gen)}" if self._cdn_port else None


class _Host:
    """The simulator as the middlewares see it (:class:`~.middleware.Host`)."""

    def __init__(self, sim: LumaSimulator) -> None:
        self.sim = sim

    @property
    def log(self) -> RequestLog:
        return self.sim.log

    @property
    def faults(self) -> FaultQueue:
        return self.sim.faults

    def route_of(self, request: web.Request) -> Route | None:
        found = self.sim._routes.get(request.match_info.route)
        return found[0] if found else None

    def route_gone(self, request: web.Request) -> bool:
        path = request.path
        return any(family.gone(path) for family in self.sim.families)

    def check_auth(self, request: web.Request) -> None:
        header = request.headers.get("Authorization")
        if header is None:
            raise ApiError(401, "Unauthorized: missing Authorization header")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "Unauthorized: expected 'Authorization: Bearer <key>'")
        if token in self.sim.settings.exhausted_keys:
            raise ApiError(403, "Forbidden: insufficient credits on this API key")
        # surrogatepass: a header's undecodable bytes arrive as lone surrogates; they only have to compare.
        if not hmac.compare_digest(token.encode("utf-8", "surrogatepass"), self.sim.api_key.encode()):
            raise ApiError(401, "Unauthorized: invalid API key")

    def error_response(self, request: web.Request, exc: ApiError) -> web.Response:
        found = self.sim._routes.get(request.match_info.route)
        family = found[1] if found else None
        if family is not None:
            body = family.error_body(request, exc)
        else:
            body = envelope(request, exc, status_code_as_string=self.sim.settings.status_code_as_string)
        return web.json_response(body, status=exc.status, headers=exc.headers)

    def video_bytes(self, request: web.Request) -> bytes | None:
        name = request.match_info.get("name", "")
        return video_of(self.sim.store, name, completed_only=False) or clip_bytes()


def _signature() -> inspect.Signature:
    """``LumaSimulator(host, port, cdn_port, *, <every other option>)`` with the declared defaults."""
    positional = ("host", "port", "cdn_port")  # declared first, so the order is valid
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    for o in OPTIONS:
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD if o.name in positional else inspect.Parameter.KEYWORD_ONLY
        params.append(inspect.Parameter(o.name, kind, default=o.default))
    return inspect.Signature(params)


# help(LumaSimulator) and IDEs that read signatures show every option with its default.
LumaSimulator.__init__.__signature__ = _signature()  # type: ignore[attr-defined]
LumaSimulator.__doc__ = (
    (LumaSimulator.__doc__ or "")
    + "\n    Options:\n\n"
    + "".join(f"    * ``{o.name}`` (default ``{o.default!r}``): {o.help}.\n" for o in OPTIONS)
)
