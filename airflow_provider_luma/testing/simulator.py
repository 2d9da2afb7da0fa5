"""A local simulator of the AI/ML API wrapper of Luma's video generation.

It serves the API the provider uses on one origin and the finished videos on a second
origin (like a CDN), with scriptable timelines, faults and a request log. Only ``aiohttp``
and the standard library are used, so it runs beside any Airflow version.

API origin (``Authorization: Bearer <key>`` required; 401 wrong/missing, 403 exhausted key).
Two endpoint families share one generation store and the same timelines, but a generation
made by one family is not found (404) by the other's fetch.

The ``luma-ai`` family (the seed docs'; 30 s long poll):

* ``POST /v2/generate/video/luma-ai/generation``: validate the body, answer 201 + generation.
* ``GET  /v2/generate/video/luma-ai/generation?generation_id=ID&state=S``: long poll, held
  until the state is S or later (queued < dreaming < completed < failed) or ``hold_seconds``.
  The hold parameter's name is ``single_hold_param`` (``state`` by default).
* ``GET  /v2/generate/video/luma-ai/generations?generation_ids[]=A&generation_ids=B,C&status=S``:
  held until all reached S, any failed, or the hold expires. The hold parameter's name is
  ``multi_hold_param`` (``status`` by default, as in the service's OpenAPI schema).

The universal family (the service's current API; see :mod:`.universal`):

* ``POST /v2/video/generations`` with ``model`` and ``prompt`` (plus the model's own fields:
  ``luma/ray-2``, ``luma/ray-flash-2``, ``luma/ray-3.2``, ``luma/ray-1-6``; any other
  ``luma/...`` model is accepted unchecked): answer 200 ``{"id": "<uuid>:<model>", "status"}``.
* ``GET /v2/video/generations?generation_id=ID``: at once, never held:
  ``{"id", "status", "video": {"url"} | null, "error": {"name", "message"} | null,
  "meta": {"usage": {"credits_used", "usd_spent"}} | null, "model"}``; status words
  ``queued``, ``generating``, ``completed``, ``error`` unless ``universal_status_words``.

Errors use the service's envelope ``{"message", "path", "requestId", "statusCode",
"timestamp"}`` (plus ``errors`` for validation), except routes the server does not have:
NestJS's ``{"message": "Cannot GET /path", "error": "Not Found", "statusCode": 404}``.

Video origin: ``GET /videos/<uuid>.mp4`` serves ``sample.mp4`` (no auth; whether an
``Authorization`` header came along is logged, redacted). Universal ids are served by their
uuid part (they contain ``:`` and ``/``).

Options that change the API's behaviour (constructor keywords, ``POST /_sim/config`` keys):

* ``single_hold_param`` / ``multi_hold_param``: ``"state"`` or ``"status"``, the query name
  each ``luma-ai`` fetch holds on; the other name is ignored, or rejected if ``strict_query``.
* ``strict_query``: every API GET answers 400 ``"Query validation error!"`` (``errors``:
  ``[{"path": name, "message": "property <name> should not exist"}]``) for unknown parameters.
* ``ignore_state_param``: no hold at all, whatever the name.
* ``luma_ai_routes_gone``: every ``/v2/generate/video/luma-ai/...`` route answers NestJS's 404.
* ``universal_id_field`` (``"id"`` or ``"generation_id"``), ``universal_id_suffix`` (False:
  bare uuid ids), ``universal_status_words`` (overrides of the state -> status word map).
* ``hold_seconds``, ``queued_seconds``, ``dreaming_seconds``, ``multi_shape``,
  ``fault_rate``, ``fault_kinds``, ``status_code_as_string``.

Request log (``requests()``, ``GET /_sim/requests``): one entry per API/video request with
``time``, ``method``, ``path``, ``endpoint`` (``create``, ``get``, ``list``, ``video_create``,
``video_get``, ``video`` or ``other``), ``query``, ``status`` (0: dropped), ``authorization``
(redacted), ``peer``, ``fault``, ``elapsed``, ``json`` (create bodies), ``held`` (seconds a
fetch was held; 0.0 if answered at once) and ``released_by`` (fetches: ``"state"`` the
generations reached the target while held, ``"timeout"`` the hold expired, ``"immediate"``
answered at once, ``"shutdown"`` the simulator stopped; ``None`` for other endpoints and for
fetches answered with an error). A request to a gone ``luma-ai`` route keeps its endpoint name.

Faults (``inject_fault()``, ``POST /_sim/faults``; endpoint ``create``, ``get``, ``list``,
``video_create``, ``video_get``, ``video`` or ``any``), :data:`FAULT_KINDS`:

* ``429``, ``500``, ``502``, ``503``, ``504``, ``401``, ``403``: that error (``Retry-After``
  on 429 if asked); ``drop``: reset the connection (video: mid-body); ``slow``: sleep first.
* ``malformed`` (truncated JSON; video: not an mp4), ``missing_fields`` (``{}``; video: empty).
* ``html``: 2xx (201 on the ``luma-ai`` create) ``text/html`` page, like a proxy's.
* ``charset_base64``: the normal answer, with ``Content-Type: application/json;
  charset=base64`` (the request always takes effect).
* ``empty``: 2xx with an empty body. ``huge``: 2xx JSON object of ~20 MB (a ``padding``
  string; with ``after`` merged into the normal answer).
* ``short_body`` (video only): ``Content-Length`` larger than the bytes sent, then a clean
  close. ``tiny_video`` (video only): 200 with a 5-byte body.

``after=True`` applies the fault once the request took effect (a create that made a
generation, then the fault answer). Unknown routes and gone routes never take faults.

Control, on the API origin, no auth, not logged: ``GET /_sim/health``, ``GET /_sim/requests``
(``?endpoint=``), ``GET /_sim/generations``, ``POST /_sim/script`` (``script()`` args),
``POST /_sim/faults`` (``inject_fault()`` args), ``DELETE /_sim/faults``, ``POST /_sim/state``
(``{"id", "state", "failure_reason"}``), ``POST /_sim/config`` (any option above),
``POST /_sim/reset``.

Prompt directives, handy when the DAG runs in another process:

* ``[sim:fail]`` anywhere in the prompt: the generation fails with ``"simulated failure"``.
* ``[sim:slow]``: the queued and dreaming durations are ten times longer.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hmac
import json
import logging
import os
import random
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from aiohttp import web

from airflow_provider_luma.testing.middleware import (
    ENTRY_KEY,
    SAMPLE_VIDEO_PATH,
    VIDEO_ONLY_FAULTS,
    ApiError,
    Fault,
    api_middlewares,
    cdn_middlewares,
    nest_not_found,
    sample_video,
)
from airflow_provider_luma.testing.universal import (
    DEFAULT_STATUS_WORDS,
    UNIVERSAL_MODELS,
    UNIVERSAL_PATH,
    check_keyframes,
    check_prompt,
    render_universal,
    validate_universal,
)

__all__ = [
    "API_PREFIX",
    "DEFAULT_API_KEY",
    "ENDPOINTS",
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

DEFAULT_API_KEY = "luma-simulator-key"
API_PREFIX = "/v2/generate/video/luma-ai"
SINGLE_PATH = f"{API_PREFIX}/generation"
MULTI_PATH = f"{API_PREFIX}/generations"

#: States in priority order; a waiter for a state is answered by it or any later one.
STATES: tuple[str, ...] = ("queued", "dreaming", "completed", "failed")
_PRIORITY = {state: rank for rank, state in enumerate(STATES)}

#: Endpoints a fault can target (``any``: every one of them).
ENDPOINTS: tuple[str, ...] = ("create", "get", "list", "video_create", "video_get", "video", "any")
#: Endpoint names in the request log (``other``: a route the server does not have).
LOG_ENDPOINTS: tuple[str, ...] = ("create", "get", "list", "video_create", "video_get", "video", "other")
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
MULTI_SHAPES: tuple[str, ...] = ("list", "generations", "data")
#: Query names a ``luma-ai`` fetch can read its long-poll target from.
HOLD_PARAMS: tuple[str, ...] = ("state", "status")
_ID_FIELDS = ("id", "generation_id")

_ASPECT_RATIOS = ("1:1", "16:9", "9:16", "4:3", "3:4", "21:9", "9:21")
_MODELS = ("ray-1-6", "ray-2", "ray-flash-2")
_RESOLUTIONS = ("540p", "720p", "1080p", "4k")
_DURATIONS = ("5s", "9s")
_BODY_FIELDS = frozenset(
    {
        "prompt",
        "generation_type",
        "aspect_ratio",
        "loop",
        "keyframes",
        "callback_url",
        "model",
        "resolution",
        "duration",
    }
)
# Never sleep less than this, so a wake-up a hair early cannot spin.
_MIN_SLEEP = 0.001

Endpoint = Literal["create", "get", "list", "video_create", "video_get", "video", "other"]
_Family = Literal["luma-ai", "universal"]


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _check_options(options: Mapping[str, Any]) -> None:
    """Raise ValueError for an invalid value of a behaviour option."""
    choices: dict[str, tuple[str, ...]] = {
        "multi_shape": MULTI_SHAPES,
        "single_hold_param": HOLD_PARAMS,
        "multi_hold_param": HOLD_PARAMS,
        "universal_id_field": _ID_FIELDS,
    }
    for name, allowed in choices.items():
        if name in options and options[name] not in allowed:
            raise ValueError(f"{name} must be one of {allowed}")
    words = options.get("universal_status_words")
    if words is not None and (
        not isinstance(words, Mapping)
        or set(words) - set(STATES)
        or not all(isinstance(v, str) for v in words.values())
    ):
        raise ValueError(f"universal_status_words must map some of {STATES} to strings")
    kinds = options.get("fault_kinds")
    if kinds is not None and (isinstance(kinds, str) or set(kinds) - set(FAULT_KINDS)):
        raise ValueError(f"fault_kinds must be a list of {FAULT_KINDS}")


@dataclass
class _Rule:
    prompt_contains: str
    outcome: Literal["completed", "failed"]
    failure_reason: str
    queued_seconds: float | None
    dreaming_seconds: float | None


@dataclass
class _Generation:
    """One generation and its timeline, as absolute wall-clock times (restart-proof)."""

    id: str
    created_at: float
    request: dict[str, Any]
    model: str
    outcome: str
    failure_reason: str | None
    dreaming_at: float
    done_at: float
    forced_state: str | None = None
    forced_failure_reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    family: str = "luma-ai"

    @property
    def uuid(self) -> str:
        """The uuid part of the id (universal ids carry ``:<model>`` after it)."""
        return self.id.partition(":")[0]

    def state_at(self, now: float) -> str:
        if self.forced_state is not None:
            return self.forced_state
        if now < self.dreaming_at:
            return "queued"
        if now < self.done_at:
            return "dreaming"
        return self.outcome

    def reached_at(self, state: str) -> float:
        """Wall-clock time at which the generation is at ``state`` or later (inf: never)."""
        if self.forced_state is not None:
            # A forced state freezes the timeline: only set_state moves it on.
            return 0.0 if _PRIORITY[self.forced_state] >= _PRIORITY[state] else float("inf")
        if state == "queued":
            return self.created_at
        if state == "dreaming":
            return self.dreaming_at
        if state == "completed":
            return self.done_at
        return self.done_at if self.outcome == "failed" else float("inf")


class LumaSimulator:
    """A local, scriptable stand-in for the Luma video API (plus a CDN for the videos).

    :param host: Interface to bind both origins to; loopback by default.
    :param port: API port; 0 picks a free one (a restart of the same instance reuses it).
    :param cdn_port: Video origin port; 0 picks a free one.
    :param api_key: The only key accepted in ``Authorization: Bearer <key>``.
    :param exhausted_keys: Keys answered with 403 (no credits).
    :param hold_seconds: How long a long poll is held at most (the real service: 30 s).
    :param queued_seconds: Default time a new generation stays ``queued``.
    :param dreaming_seconds: Default time it then stays ``dreaming``.
    :param multi_shape: Answer shape of the multi-fetch: ``"list"`` (a JSON list),
        ``"generations"`` (``{"generations": [...]}``) or ``"data"`` (``{"data": [...]}``).
    :param ignore_state_param: Answer long polls at once, whatever the hold parameter's name.
    :param state_file: If set, generations are saved there on every change and loaded on
        start, so a restarted simulator keeps them.
    :param fault_rate: Probability of a random transient fault on each API call.
    :param fault_kinds: Kinds drawn from when ``fault_rate`` triggers.
    :param seed: Seed of the random fault generator, for reproducible load tests.
    :param status_code_as_string: Send ``statusCode`` in error bodies as a string (seen live).
    :param single_hold_param: Query name the single fetch holds on: ``"state"`` or ``"status"``.
    :param multi_hold_param: Query name the multi fetch holds on: ``"state"`` or ``"status"``.
    :param strict_query: Answer 400 "Query validation error!" to unknown query parameters on
        every API GET (else they are ignored).
    :param luma_ai_routes_gone: Answer every ``luma-ai`` route with NestJS's generic 404.
    :param universal_id_field: Key of the id in the universal create's answer.
    :param universal_id_suffix: Universal ids end with ``:<model>`` (False: bare uuids).
    :param universal_status_words: Overrides of the universal fetch's status words, keyed by
        simulator state (e.g. ``{"queued": "waiting", "dreaming": "active"}``).
    :param backlog: Listen backlog of both sockets (large, for benchmarks).
    :param shutdown_timeout: Seconds ``stop()`` waits for in-flight requests.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        cdn_port: int = 0,
        *,
        api_key: str = DEFAULT_API_KEY,
        exhausted_keys: Iterable[str] = (),
        hold_seconds: float = 30.0,
        queued_seconds: float = 1.0,
        dreaming_seconds: float = 2.0,
        multi_shape: str = "list",
        ignore_state_param: bool = False,
        state_file: str | os.PathLike[str] | None = None,
        fault_rate: float = 0.0,
        fault_kinds: Iterable[str] = ("500", "503", "429", "drop"),
        seed: int | None = 0,
        status_code_as_string: bool = False,
        single_hold_param: str = "state",
        multi_hold_param: str = "status",
        strict_query: bool = False,
        luma_ai_routes_gone: bool = False,
        universal_id_field: str = "id",
        universal_id_suffix: bool = True,
        universal_status_words: Mapping[str, str] | None = None,
        backlog: int = 4096,
        shutdown_timeout: float = 2.0,
    ) -> None:
        _check_options(
            {
                "multi_shape": multi_shape,
                "single_hold_param": single_hold_param,
                "multi_hold_param": multi_hold_param,
                "universal_id_field": universal_id_field,
                "universal_status_words": universal_status_words,
                "fault_kinds": list(fault_kinds),
            }
        )
        self.host = host
        self._want_port = port
        self._want_cdn_port = cdn_port
        self._api_key = api_key
        self.exhausted_keys: set[str] = set(exhausted_keys)
        self.hold_seconds = hold_seconds
        self.queued_seconds = queued_seconds
        self.dreaming_seconds = dreaming_seconds
        self.multi_shape = multi_shape
        self.ignore_state_param = ignore_state_param
        self.state_file = Path(state_file) if state_file is not None else None
        self.fault_rate = fault_rate
        self.fault_kinds: list[str] = list(fault_kinds)
        self.status_code_as_string = status_code_as_string
        self.single_hold_param = single_hold_param
        self.multi_hold_param = multi_hold_param
        self.strict_query = strict_query
        self.luma_ai_routes_gone = luma_ai_routes_gone
        self.universal_id_field = universal_id_field
        self.universal_id_suffix = universal_id_suffix
        self.universal_status_words: dict[str, str] | None = (
            dict(universal_status_words) if universal_status_words is not None else None
        )
        self.backlog = backlog
        self.shutdown_timeout = shutdown_timeout

        # One lock for all shared state: the test thread and the loop thread both touch it.
        self._lock = threading.RLock()
        self._rng = random.Random(seed)
        self._generations: dict[str, _Generation] = {}
        self._rules: list[_Rule] = []
        self._faults: list[Fault] = []
        self._log: list[dict[str, Any]] = []
        self._route_endpoints: dict[Any, Endpoint] = {}

        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        self._stopping = False
        self._runners: list[web.AppRunner] = []
        self._port: int | None = None
        self._cdn_port: int | None = None
        self._thread: threading.Thread | None = None
        self._thread_stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None

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
        return f"http://{self.host}:{self.port}"

    @property
    def cdn_url(self) -> str:
        """Video origin, e.g. ``http://127.0.0.1:8090``."""
        return f"http://{self.host}:{self.cdn_port}"

    @property
    def running(self) -> bool:
        """Whether the simulator is listening."""
        return bool(self._runners)

    def connection_json(self, **extras: Any) -> str:
        """JSON for ``AIRFLOW_CONN_LUMA_DEFAULT`` pointing at this simulator.

        ``extras`` (if any) become the connection's ``extra``.
        """
        conn: dict[str, Any] = {"conn_type": "luma", "host": self.base_url, "password": self._api_key}
        if extras:
            conn["extra"] = extras
        return json.dumps(conn)

    # ------------------------------------------------------------------ scripting

    def script(
        self,
        prompt_contains: str,
        *,
        outcome: Literal["completed", "failed"] = "completed",
        failure_reason: str = "simulated failure",
        queued_seconds: float | None = None,
        dreaming_seconds: float | None = None,
    ) -> None:
        """Script generations whose prompt contains ``prompt_contains``.

        The first matching rule applies; ``None`` durations use the simulator defaults.
        """
        if outcome not in ("completed", "failed"):
            raise ValueError("outcome must be 'completed' or 'failed'")
        with self._lock:
            self._rules.append(
                _Rule(
                    prompt_contains,
                    outcome,
                    failure_reason,
                    queued_seconds,
                    dreaming_seconds,
                )
            )

    def clear_scripts(self) -> None:
        """Forget all script rules."""
        with self._lock:
            self._rules.clear()

    def set_state(self, generation_id: str, state: str, failure_reason: str | None = None) -> None:
        """Force a generation into ``state``, freezing its timeline, and wake waiters."""
        if state not in _PRIORITY:
            raise ValueError(f"state must be one of {STATES}")
        with self._lock:
            gen = self._generations[generation_id]
            gen.forced_state = state
            gen.forced_failure_reason = (failure_reason or "simulated failure") if state == "failed" else None
            self._save_locked()
        self._wake_waiters()

    def inject_fault(
        self,
        kind: str,
        *,
        endpoint: str = "any",
        times: int = 1,
        retry_after: float | str | None = None,
        delay: float | None = None,
        after: bool = False,
    ) -> None:
        """Queue a fault for the next ``times`` requests to ``endpoint``.

        :param kind: One of :data:`FAULT_KINDS`.
        :param endpoint: One of :data:`ENDPOINTS`: ``create``, ``get``, ``list``,
            ``video_create``, ``video_get``, ``video`` or ``any``. ``short_body`` and
            ``tiny_video`` only hit ``video`` (so only ``video`` or ``any`` are accepted).
        :param times: How many matching requests it hits; faults are consumed FIFO.
        :param retry_after: ``Retry-After`` header value for ``429`` (none if unset).
        :param delay: Seconds a ``slow`` fault sleeps (default 5).
        :param after: Apply the fault after the request took effect (e.g. a create that
            made a generation but whose answer was lost) rather than before.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {FAULT_KINDS}")
        if endpoint not in ENDPOINTS:
            raise ValueError(f"endpoint must be one of {ENDPOINTS}")
        if kind in VIDEO_ONLY_FAULTS and endpoint not in ("video", "any"):
            raise ValueError(f"{kind} is a fault of the video endpoint only")
        if times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._faults.append(Fault(kind, endpoint, int(times), retry_after, delay, bool(after)))

    def clear_faults(self) -> None:
        """Forget queued faults and switch random faults off."""
        with self._lock:
            self._faults.clear()
            self.fault_rate = 0.0

    def reset(self) -> None:
        """Forget generations, scripts, faults (also ``fault_rate``) and the request log."""
        with self._lock:
            self._generations.clear()
            self._rules.clear()
            self._faults.clear()
            self._log.clear()
            self.fault_rate = 0.0
            self._save_locked()
        self._wake_waiters()

    # ------------------------------------------------------------------ inspection

    def requests(self, endpoint: str | None = None) -> list[dict[str, Any]]:
        """Copies of the logged requests, optionally only those to ``endpoint``.

        Entries are appended when answered; ``/_sim/`` control calls are not logged.
        Keys: ``time`` (arrival), ``method``, ``path``, ``endpoint``, ``query``, ``status``
        (0: connection dropped), ``authorization`` (``"Bearer ***"`` or None, never the key),
        ``peer`` (client port), ``fault``, ``elapsed``, ``held`` (seconds a fetch was held),
        ``released_by`` (``"state"``, ``"timeout"``, ``"immediate"``, ``"shutdown"``, or None
        when not a fetch or answered with an error) and, for creates, ``json`` (the body).
        """
        with self._lock:
            return [copy.deepcopy(e) for e in self._log if endpoint is None or e["endpoint"] == endpoint]

    def count(self, endpoint: str | None = None) -> int:
        """How many requests (to ``endpoint``, if given) were answered."""
        with self._lock:
            return sum(1 for e in self._log if endpoint is None or e["endpoint"] == endpoint)

    def generation(self, generation_id: str) -> dict[str, Any]:
        """The generation as its family's fetch would return it now."""
        with self._lock:
            return self._render(self._generations[generation_id], time.time())

    def generations(self) -> list[dict[str, Any]]:
        """All generations as their family's fetch would return them, oldest first."""
        now = time.time()
        with self._lock:
            return [self._render(g, now) for g in self._generations.values()]

    # ------------------------------------------------------------------ lifecycle

    async def astart(self) -> None:
        """Start serving inside the running event loop."""
        if self._runners:
            raise RuntimeError("simulator already running")
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        self._stopping = False
        self._load()
        api_app = web.Application(client_max_size=1024**2, middlewares=api_middlewares(self))
        api_app.router.add_post("/_sim/script", self._ctl_script)
        api_app.router.add_post("/_sim/faults", self._ctl_faults)
        api_app.router.add_delete("/_sim/faults", self._ctl_clear_faults)
        api_app.router.add_post("/_sim/state", self._ctl_state)
        api_app.router.add_post("/_sim/reset", self._ctl_reset)
        api_app.router.add_post("/_sim/config", self._ctl_config)
        api_app.router.add_get("/_sim/requests", self._ctl_requests)
        api_app.router.add_get("/_sim/generations", self._ctl_generations)
        api_app.router.add_get("/_sim/health", self._ctl_health)
        # Routes named here are logged (and faulted, authenticated) by the middlewares.
        self._route_endpoints = {}

        def named(endpoint: Endpoint, route: web.AbstractRoute) -> None:
            self._route_endpoints[route] = endpoint

        named("create", api_app.router.add_post(SINGLE_PATH, self._create))
        named("get", api_app.router.add_get(SINGLE_PATH, self._get_one, allow_head=False))
        named("list", api_app.router.add_get(MULTI_PATH, self._get_many, allow_head=False))
        named("video_create", api_app.router.add_post(UNIVERSAL_PATH, self._video_create))
        named("video_get", api_app.router.add_get(UNIVERSAL_PATH, self._video_get, allow_head=False))
        named("other", api_app.router.add_route("*", "/{tail:.*}", self._unknown))
        cdn_app = web.Application(middlewares=cdn_middlewares(self))
        named("video", cdn_app.router.add_get("/videos/{name}", self._video))
        cdn_app.router.add_route("*", "/{tail:.*}", self._cdn_unknown)
        try:
            # Restarting the same instance reuses its ports so clients keep working.
            self._port = await self._serve(api_app, self._port or self._want_port)
            self._cdn_port = await self._serve(cdn_app, self._cdn_port or self._want_cdn_port)
        except BaseException:
            await self._cleanup_runners()
            raise
        log.info("Luma simulator listening on %s (videos: %s)", self.base_url, self.cdn_url)

    async def astop(self) -> None:
        """Release held requests and stop serving."""
        self._stopping = True
        self._notify_now()
        with self._lock:
            self._save_locked()
        await self._cleanup_runners()

    def start(self) -> LumaSimulator:
        """Run in a background thread with its own event loop; return once listening."""
        if self._thread is not None:
            raise RuntimeError("simulator already running")
        self._ready.clear()
        self._start_error = None
        self._thread = threading.Thread(target=self._thread_main, name="luma-simulator", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._start_error is not None:
            self._thread.join()
            self._thread = None
            raise self._start_error
        return self

    def stop(self) -> None:
        """Stop the background thread started by :meth:`start` (idempotent)."""
        thread, loop, stop_event = self._thread, self._loop, self._thread_stop
        if thread is None:
            return
        if loop is not None and stop_event is not None:
            with contextlib.suppress(RuntimeError):  # loop already gone
                loop.call_soon_threadsafe(stop_event.set)
        thread.join(timeout=self.shutdown_timeout + 10)
        self._thread = None

    def __enter__(self) -> LumaSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> LumaSimulator:
        await self.astart()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.astop()

    def _thread_main(self) -> None:
        asyncio.run(self._thread_run())

    async def _thread_run(self) -> None:
        try:
            await self.astart()
        except BaseException as exc:  # handed to start() in the caller's thread
            self._start_error = exc
            self._ready.set()
            return
        self._thread_stop = asyncio.Event()
        self._ready.set()
        try:
            await self._thread_stop.wait()
        finally:
            await self.astop()

    async def _serve(self, app: web.Application, port: int) -> int:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=self.shutdown_timeout)
        await runner.setup()
        self._runners.append(runner)
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
        try:
            # SO_REUSEADDR lets a restart bind the same port despite TIME_WAIT sockets.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, port))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        site = web.SockSite(runner, sock, backlog=self.backlog)
        await site.start()
        return int(sock.getsockname()[1])

    async def _cleanup_runners(self) -> None:
        runners, self._runners = self._runners, []
        for runner in runners:
            await runner.cleanup()

    # ------------------------------------------------------------------ waking

    def _notify_now(self) -> None:
        # Swap in a fresh event first so waiters re-arming after the wake-up wait anew.
        old, self._changed = self._changed, asyncio.Event()
        if old is not None:
            old.set()

    def _wake_waiters(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed() or not self._runners:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._notify_now()
        else:
            with contextlib.suppress(RuntimeError):  # loop closing concurrently
                loop.call_soon_threadsafe(self._notify_now)

    async def _hold(self, check: Callable[[float], tuple[bool, float]]) -> tuple[float, str]:
        """Sleep until ``check`` says done, the hold expires, a change, or shutdown.

        ``check(now)`` returns (done, wall-clock time it will be done by the timeline).
        Timelines are known, so one timer per request suffices: no polling loop.
        Returns (seconds held, released_by): ``"immediate"`` (done at once), ``"state"``,
        ``"timeout"`` or ``"shutdown"``.
        """
        start = time.time()
        hold_until = start + self.hold_seconds
        first = True
        while True:
            changed = self._changed
            now = time.time()
            done, done_at = check(now)
            if done:
                return (0.0, "immediate") if first else (now - start, "state")
            if self._stopping or changed is None:
                return now - start, "shutdown"
            if now >= hold_until:
                return now - start, "timeout"
            first = False
            delay = max(min(hold_until, done_at) - now, _MIN_SLEEP)
            try:
                async with asyncio.timeout(delay):
                    await changed.wait()
            except TimeoutError:
                pass

    # ------------------------------------------------------------------ persistence

    def _save_locked(self) -> None:
        if self.state_file is None:
            return
        data = {"version": 1, "generations": [asdict(g) for g in self._generations.values()]}
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.state_file.parent, prefix=self.state_file.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh)
            os.replace(tmp, self.state_file)  # atomic: readers never see half a file
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _load(self) -> None:
        if self.state_file is None or not self.state_file.exists():
            return
        data = json.loads(self.state_file.read_text(encoding="utf-8"))
        with self._lock:
            self._generations = {g["id"]: _Generation(**g) for g in data.get("generations", [])}

    # ------------------------------------------------------------------ rendering

    def _video_url(self, gen: _Generation) -> str | None:
        return f"{self.cdn_url}/videos/{gen.uuid}.mp4" if self._cdn_port else None

    @staticmethod
    def _failure_reason(gen: _Generation, state: str) -> str | None:
        if state != "failed":
            return None
        return gen.forced_failure_reason if gen.forced_state else gen.failure_reason

    def _public(self, gen: _Generation, now: float) -> dict[str, Any]:
        state = gen.state_at(now)
        return {
            "id": gen.id,
            "generation_type": "video",
            "state": state,
            "failure_reason": self._failure_reason(gen, state),
            "created_at": _iso(gen.created_at),
            "assets": {
                "video": self._video_url(gen) if state == "completed" else None,
                "image": None,
                "progress_video": None,
            },
            "model": gen.model,
            "request": copy.deepcopy(gen.request),
        }

    def _status_words(self) -> dict[str, str]:
        return {**DEFAULT_STATUS_WORDS, **(self.universal_status_words or {})}

    def _public_universal(self, gen: _Generation, now: float) -> dict[str, Any]:
        state = gen.state_at(now)
        return render_universal(
            generation_id=gen.id,
            model=gen.model,
            state=state,
            failure_reason=self._failure_reason(gen, state),
            video_url=self._video_url(gen),
            request=gen.request,
            words=self._status_words(),
        )

    def _render(self, gen: _Generation, now: float) -> dict[str, Any]:
        if gen.family == "universal":
            return self._public_universal(gen, now)
        return self._public(gen, now)

    def _error_body(self, request: web.Request, exc: ApiError) -> dict[str, Any]:
        body: dict[str, Any] = {
            "message": exc.message,
            "path": request.path,
            "requestId": str(uuid.uuid4()),
            "statusCode": str(exc.status) if self.status_code_as_string else exc.status,
            "timestamp": _iso(time.time()),
        }
        if exc.errors is not None:
            body["errors"] = exc.errors
        return body

    def _error_response(self, request: web.Request, exc: ApiError) -> web.Response:
        return web.json_response(self._error_body(request, exc), status=exc.status, headers=exc.headers)

    # ------------------------------------------------------------------ request plumbing

    @staticmethod
    def _redacted_auth(request: web.Request) -> str | None:
        header = request.headers.get("Authorization")
        if header is None:
            return None
        scheme, sep, _ = header.partition(" ")
        return f"{scheme} ***" if sep else "***"

    def _endpoint_of(self, request: web.Request) -> Endpoint | None:
        """The endpoint name of the request's route; None for control and unnamed routes."""
        return self._route_endpoints.get(request.match_info.route)

    def _route_gone(self, request: web.Request) -> bool:
        path = request.path
        return self.luma_ai_routes_gone and (path == API_PREFIX or path.startswith(API_PREFIX + "/"))

    def _new_entry(self, request: web.Request, endpoint: Endpoint) -> dict[str, Any]:
        query: dict[str, Any] = {}
        for key in request.query:
            values = request.query.getall(key)
            query[key] = values[0] if len(values) == 1 else list(values)
        return {
            "time": time.time(),
            "method": request.method,
            "path": request.path,
            "endpoint": endpoint,
            "query": query,
            "status": 0,
            "authorization": self._redacted_auth(request),
            # The client's port: tests tell a reused connection from a new one by it.
            "peer": request.transport.get_extra_info("peername")[1] if request.transport else None,
            "fault": None,
            "elapsed": 0.0,
            "held": 0.0,
            "released_by": None,
        }

    def _finish_entry(self, entry: dict[str, Any]) -> None:
        entry["elapsed"] = time.time() - entry["time"]
        with self._lock:
            self._log.append(entry)

    def _take_fault(self, endpoint: Endpoint, *, random_ok: bool) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.endpoint not in (endpoint, "any"):
                    continue
                if fault.kind in VIDEO_ONLY_FAULTS and endpoint != "video":
                    continue
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                return fault
            kinds = [k for k in self.fault_kinds if k not in VIDEO_ONLY_FAULTS]
            if random_ok and self.fault_rate > 0 and kinds and self._rng.random() < self.fault_rate:
                return Fault(self._rng.choice(kinds), endpoint, 1, delay=1.0)
        return None

    def _check_auth(self, request: web.Request) -> None:
        header = request.headers.get("Authorization")
        if header is None:
            raise ApiError(401, "Unauthorized: missing Authorization header")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "Unauthorized: expected 'Authorization: Bearer <key>'")
        if token in self.exhausted_keys:
            raise ApiError(403, "Forbidden: insufficient credits on this API key")
        if not hmac.compare_digest(token.encode(), self._api_key.encode()):
            raise ApiError(401, "Unauthorized: invalid API key")

    # ------------------------------------------------------------------ API endpoints

    def _validate_create(self, body: Any) -> list[dict[str, Any]]:
        errors: list[dict[str, Any]] = []

        def err(path: str, message: str) -> None:
            errors.append({"path": path, "message": message})

        if not isinstance(body, dict):
            err("", "Expected a JSON object")
            return errors
        for key in sorted(set(body) - _BODY_FIELDS):
            err(key, f"Unrecognized property '{key}'")
        check_prompt(body, err)

        def enum(name: str, values: tuple[str, ...], nullable: bool) -> None:
            if name not in body or (nullable and body[name] is None):
                return
            if body[name] not in values:
                err(name, f"Invalid enum value. Expected {' | '.join(values)}")

        enum("generation_type", ("video",), True)
        enum("aspect_ratio", _ASPECT_RATIOS, False)
        enum("model", _MODELS, False)
        enum("resolution", _RESOLUTIONS, True)
        enum("duration", _DURATIONS, True)
        if "loop" in body and not isinstance(body["loop"], bool):
            err("loop", "Expected boolean")
        cb = body.get("callback_url")
        if cb is not None and not isinstance(cb, str):
            err("callback_url", "Expected string or null")
        check_keyframes(body, err, self._validate_frame)
        return errors

    def _validate_frame(self, frame: Any, path: str, err: Callable[[str, str], None]) -> None:
        if frame is None:
            return
        if not isinstance(frame, dict):
            err(path, "Expected object or null")
            return
        kind = frame.get("type")
        if kind == "image":
            if set(frame) - {"type", "url"}:
                err(path, "Unrecognized property for an image keyframe")
            if not isinstance(frame.get("url"), str):
                err(f"{path}.url", "Expected string")
        elif kind == "generation":
            if set(frame) - {"type", "id"}:
                err(path, "Unrecognized property for a generation keyframe")
            gen_id = frame.get("id")
            if not isinstance(gen_id, str):
                err(f"{path}.id", "Expected string")
                return
            with self._lock:
                gen = self._find(gen_id)
                state = gen.state_at(time.time()) if gen else None
            if state != "completed":
                err(f"{path}.id", f"Generation {gen_id} does not exist or is not completed")
        else:
            err(f"{path}.type", "Invalid discriminator value. Expected 'image' | 'generation'")

    def _timeline_for(self, prompt: str) -> tuple[str, str | None, float, float]:
        outcome, reason = "completed", None
        queued, dreaming = self.queued_seconds, self.dreaming_seconds
        with self._lock:
            rule = next((r for r in self._rules if r.prompt_contains in prompt), None)
        if rule is not None:
            outcome = rule.outcome
            reason = rule.failure_reason if rule.outcome == "failed" else None
            if rule.queued_seconds is not None:
                queued = rule.queued_seconds
            if rule.dreaming_seconds is not None:
                dreaming = rule.dreaming_seconds
        if "[sim:fail]" in prompt:
            outcome, reason = "failed", "simulated failure"
        if "[sim:slow]" in prompt:
            queued, dreaming = queued * 10, dreaming * 10
        return outcome, reason, queued, dreaming

    def _find(self, gen_id: str) -> _Generation | None:
        """A generation by its id, or by the uuid part of a universal id (lock held)."""
        gen = self._generations.get(gen_id)
        if gen is None:
            gen = next((g for g in self._generations.values() if g.uuid == gen_id), None)
        return gen

    @staticmethod
    async def _read_body(request: web.Request) -> Any:
        raw = await request.read()
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            raise ApiError(400, "Body validation error!", [{"path": "", "message": "Invalid JSON"}]) from None
        request[ENTRY_KEY]["json"] = body
        return body

    def _add_generation(self, gen_id: str, body: dict[str, Any], model: str, family: _Family) -> _Generation:
        outcome, reason, queued, dreaming = self._timeline_for(body["prompt"])
        now = time.time()
        gen = _Generation(
            id=gen_id,
            created_at=now,
            request=body,
            model=model,
            outcome=outcome,
            failure_reason=reason,
            dreaming_at=now + queued,
            done_at=now + queued + dreaming,
            family=family,
        )
        with self._lock:
            self._generations[gen.id] = gen
            self._save_locked()
        return gen

    def _check_query(self, request: web.Request, known: Iterable[str]) -> None:
        """In strict mode, reject query parameters the endpoint does not know."""
        if not self.strict_query:
            return
        unknown = [name for name in dict.fromkeys(request.query) if name not in set(known)]
        if unknown:
            errors = [{"path": name, "message": f"property {name} should not exist"} for name in unknown]
            raise ApiError(400, "Query validation error!", errors)

    def _target_state(self, request: web.Request, name: str) -> str | None:
        """The long-poll target from query parameter ``name`` (None: no hold asked)."""
        if name not in request.query:
            return None
        state = request.query[name]
        if state == "failed":
            raise ApiError(400, "Cannot wait for the failed state")
        if state not in _PRIORITY:
            raise ApiError(
                400,
                f"Invalid {name} '{state}'. Expected queued | dreaming | completed",
            )
        return None if self.ignore_state_param else state

    def _lookup(self, ids: list[str], family: _Family) -> list[_Generation]:
        with self._lock:
            found = {i: self._generations.get(i) for i in ids}
            missing = [i for i, g in found.items() if g is None or g.family != family]
            if missing:
                raise ApiError(404, f"Generation not found: {', '.join(missing)}")
            return [self._generations[i] for i in ids]

    async def _hold_for(self, request: web.Request, target: str | None, gens: list[_Generation]) -> None:
        """Hold until every one of ``gens`` reached ``target`` (or any failed); log how it ended."""
        entry = request[ENTRY_KEY]
        if target is None:
            entry["held"], entry["released_by"] = 0.0, "immediate"
            return

        def check(now: float) -> tuple[bool, float]:
            with self._lock:
                all_at = max(g.reached_at(target) for g in gens)
                fail_at = min(g.reached_at("failed") for g in gens)
            at = min(all_at, fail_at)
            return now >= at, at

        entry["held"], entry["released_by"] = await self._hold(check)

    async def _create(self, request: web.Request) -> web.Response:
        body = await self._read_body(request)
        errors = self._validate_create(body)
        if errors:
            raise ApiError(400, "Body validation error!", errors)
        gen = self._add_generation(str(uuid.uuid4()), body, body.get("model", "ray-2"), "luma-ai")
        with self._lock:
            public = self._public(gen, time.time())
        return web.json_response(public, status=201)

    async def _get_one(self, request: web.Request) -> web.Response:
        hold_param = self.single_hold_param
        self._check_query(request, ("generation_id", hold_param))
        gen_id = request.query.get("generation_id")
        if not gen_id:
            raise ApiError(400, "generation_id is required")
        target = self._target_state(request, hold_param)
        gens = self._lookup([gen_id], "luma-ai")
        await self._hold_for(request, target, gens)
        with self._lock:
            return web.json_response(self._public(gens[0], time.time()))

    async def _get_many(self, request: web.Request) -> web.Response:
        hold_param = self.multi_hold_param
        self._check_query(request, ("generation_ids[]", "generation_ids", hold_param))
        ids: list[str] = []
        for key in ("generation_ids[]", "generation_ids"):
            for value in request.query.getall(key, []):
                ids.extend(part.strip() for part in value.split(",") if part.strip())
        ids = list(dict.fromkeys(ids))  # de-duplicate, keep order
        if not ids:
            raise ApiError(400, "generation_ids is required")
        target = self._target_state(request, hold_param)
        gens = self._lookup(ids, "luma-ai")
        await self._hold_for(request, target, gens)
        now = time.time()
        with self._lock:
            items = [self._public(g, now) for g in gens]
        if self.multi_shape == "generations":
            return web.json_response({"generations": items, "count": len(items), "has_more": False})
        if self.multi_shape == "data":
            return web.json_response({"data": items})
        return web.json_response(items)

    async def _video_create(self, request: web.Request) -> web.Response:
        body = await self._read_body(request)
        errors = validate_universal(body, self._validate_frame)
        if errors:
            raise ApiError(400, "Body validation error!", errors)
        model = body["model"]
        raw_id = str(uuid.uuid4())
        gen = self._add_generation(
            f"{raw_id}:{model}" if self.universal_id_suffix else raw_id, body, model, "universal"
        )
        with self._lock:
            state = gen.state_at(time.time())
        status = self._status_words().get(state, state)
        return web.json_response({self.universal_id_field: gen.id, "status": status}, status=200)

    async def _video_get(self, request: web.Request) -> web.Response:
        self._check_query(request, ("generation_id",))
        gen_id = request.query.get("generation_id")
        if not gen_id:
            errors = [{"path": "generation_id", "message": "generation_id should not be empty"}]
            raise ApiError(400, "Query validation error!", errors)
        with self._lock:
            gen = self._generations.get(gen_id)
            if gen is None or gen.family != "universal":
                raise ApiError(404, "Generation not found")
            answer = self._public_universal(gen, time.time())
        request[ENTRY_KEY]["released_by"] = "immediate"  # never held
        return web.json_response(answer)

    async def _unknown(self, request: web.Request) -> web.Response:
        return nest_not_found(request)

    # ------------------------------------------------------------------ video origin

    async def _video(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        with self._lock:
            gen = self._find(name.removesuffix(".mp4")) if name.endswith(".mp4") else None
            ok = gen is not None and gen.state_at(time.time()) == "completed"
        if not ok:
            return self._error_response(request, ApiError(404))
        return web.Response(body=sample_video(), content_type="video/mp4")

    async def _cdn_unknown(self, request: web.Request) -> web.Response:
        return self._error_response(request, ApiError(404))

    # ------------------------------------------------------------------ control (/_sim/)

    @staticmethod
    async def _json_object(request: web.Request) -> dict[str, Any]:
        try:
            data = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text="expected a JSON object") from None
        if not isinstance(data, dict):
            raise web.HTTPBadRequest(text="expected a JSON object")
        return data

    @staticmethod
    def _ok(**extra: Any) -> web.Response:
        return web.json_response({"ok": True, **extra})

    async def _ctl_health(self, request: web.Request) -> web.Response:
        return self._ok(base_url=self.base_url, cdn_url=self.cdn_url)

    async def _ctl_requests(self, request: web.Request) -> web.Response:
        return web.json_response(self.requests(request.query.get("endpoint")))

    async def _ctl_generations(self, request: web.Request) -> web.Response:
        return web.json_response(self.generations())

    async def _ctl_script(self, request: web.Request) -> web.Response:
        data = await self._json_object(request)
        try:
            self.script(**data)
        except (TypeError, ValueError) as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        return self._ok()

    async def _ctl_faults(self, request: web.Request) -> web.Response:
        data = await self._json_object(request)
        try:
            self.inject_fault(**data)
        except (TypeError, ValueError) as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        return self._ok()

    async def _ctl_clear_faults(self, request: web.Request) -> web.Response:
        self.clear_faults()
        return self._ok()

    async def _ctl_state(self, request: web.Request) -> web.Response:
        data = await self._json_object(request)
        gen_id = data.get("id") or data.get("generation_id")
        try:
            self.set_state(str(gen_id), str(data.get("state")), data.get("failure_reason"))
        except KeyError:
            raise web.HTTPNotFound(text=f"unknown generation {gen_id}") from None
        except ValueError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        return self._ok()

    async def _ctl_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return self._ok()

    _CONFIG_KEYS = (
        "hold_seconds",
        "queued_seconds",
        "dreaming_seconds",
        "multi_shape",
        "ignore_state_param",
        "fault_rate",
        "fault_kinds",
        "status_code_as_string",
        "single_hold_param",
        "multi_hold_param",
        "strict_query",
        "luma_ai_routes_gone",
        "universal_id_field",
        "universal_id_suffix",
        "universal_status_words",
    )

    async def _ctl_config(self, request: web.Request) -> web.Response:
        data = await self._json_object(request)
        unknown = set(data) - set(self._CONFIG_KEYS)
        if unknown:
            raise web.HTTPBadRequest(text=f"unknown settings: {sorted(unknown)}")
        try:
            _check_options(data)
        except ValueError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        with self._lock:
            for key, value in data.items():
                setattr(self, key, value)
        return self._ok(**{k: getattr(self, k) for k in self._CONFIG_KEYS})
