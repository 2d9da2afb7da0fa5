"""A local simulator of the AI/ML API wrapper of Luma's video generation.

It serves the API the provider uses on one origin and the finished videos on a second
origin (like a CDN), with scriptable timelines, faults and a request log. Only ``aiohttp``
and the standard library are used, so it runs beside any Airflow version.

API origin (``Authorization: Bearer <key>`` required; 401 wrong/missing, 403 exhausted key):

* ``POST /v2/generate/video/luma-ai/generation``: validate the body, answer 201 + generation.
* ``GET  /v2/generate/video/luma-ai/generation?generation_id=ID&state=S``: long poll, held
  until the state is S or later (queued < dreaming < completed < failed) or ``hold_seconds``.
* ``GET  /v2/generate/video/luma-ai/generations?generation_ids[]=A&generation_ids=B,C&state=S``:
  held until all reached S, any failed, or the hold expires.

Video origin: ``GET /videos/<id>.mp4`` serves ``sample.mp4`` (no auth; whether an
``Authorization`` header came along is logged, redacted).

Control, on the API origin, no auth, not logged: ``GET /_sim/health``, ``GET /_sim/requests``
(``?endpoint=``), ``GET /_sim/generations``, ``POST /_sim/script`` (``script()`` args),
``POST /_sim/faults`` (``inject_fault()`` args), ``DELETE /_sim/faults``, ``POST /_sim/state``
(``{"id", "state", "failure_reason"}``), ``POST /_sim/config`` (e.g. ``{"hold_seconds": 1}``),
``POST /_sim/reset``.

Prompt directives, handy when the DAG runs in another process:

* ``[sim:fail]`` anywhere in the prompt: the generation fails with ``"simulated failure"``.
* ``[sim:slow]``: the queued and dreaming durations are ten times longer.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
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
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from aiohttp import web

__all__ = [
    "API_PREFIX",
    "DEFAULT_API_KEY",
    "ENDPOINTS",
    "FAULT_KINDS",
    "MULTI_SHAPES",
    "SAMPLE_VIDEO_PATH",
    "STATES",
    "LumaSimulator",
]

log = logging.getLogger(__name__)

DEFAULT_API_KEY = "luma-simulator-key"
API_PREFIX = "/v2/generate/video/luma-ai"
SINGLE_PATH = f"{API_PREFIX}/generation"
MULTI_PATH = f"{API_PREFIX}/generations"
SAMPLE_VIDEO_PATH = Path(__file__).with_name("sample.mp4")

#: States in priority order; a waiter for a state is answered by it or any later one.
STATES: tuple[str, ...] = ("queued", "dreaming", "completed", "failed")
_PRIORITY = {state: rank for rank, state in enumerate(STATES)}

ENDPOINTS: tuple[str, ...] = ("create", "get", "list", "video", "any")
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
)
MULTI_SHAPES: tuple[str, ...] = ("list", "generations", "data")

_ASPECT_RATIOS = ("1:1", "16:9", "9:16", "4:3", "3:4", "21:9", "9:21")
_MODELS = ("ray-1-6", "ray-2", "ray-flash-2")
_RESOLUTIONS = ("540p", "720p", "1080p", "4k")
_DURATIONS = ("5s", "9s")
_MAX_PROMPT = 2048
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
_STATUS_MESSAGES = {
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
# Never sleep less than this, so a wake-up a hair early cannot spin.
_MIN_SLEEP = 0.001

Endpoint = Literal["create", "get", "list", "video", "other"]


@functools.cache
def _sample_video() -> bytes:
    return SAMPLE_VIDEO_PATH.read_bytes()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _ApiError(Exception):
    """An error answer in the service's format."""

    def __init__(
        self,
        status: int,
        message: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message or _STATUS_MESSAGES.get(status, "Error"))
        self.status = status
        self.message = message or _STATUS_MESSAGES.get(status, "Error")
        self.errors = errors
        self.headers = headers or {}


@dataclass
class _Rule:
    prompt_contains: str
    outcome: Literal["completed", "failed"]
    failure_reason: str
    queued_seconds: float | None
    dreaming_seconds: float | None


@dataclass
class _Fault:
    kind: str
    endpoint: str
    remaining: int
    retry_after: float | str | None = None
    delay: float | None = None
    after: bool = False


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
    :param ignore_state_param: Answer long polls at once, as a server ignoring ``state``.
    :param state_file: If set, generations are saved there on every change and loaded on
        start, so a restarted simulator keeps them.
    :param fault_rate: Probability of a random transient fault on each API call.
    :param fault_kinds: Kinds drawn from when ``fault_rate`` triggers.
    :param seed: Seed of the random fault generator, for reproducible load tests.
    :param status_code_as_string: Send ``statusCode`` in error bodies as a string (seen live).
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
        backlog: int = 4096,
        shutdown_timeout: float = 2.0,
    ) -> None:
        if multi_shape not in MULTI_SHAPES:
            raise ValueError(f"multi_shape must be one of {MULTI_SHAPES}")
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
        self.backlog = backlog
        self.shutdown_timeout = shutdown_timeout

        # One lock for all shared state: the test thread and the loop thread both touch it.
        self._lock = threading.RLock()
        self._rng = random.Random(seed)
        self._generations: dict[str, _Generation] = {}
        self._rules: list[_Rule] = []
        self._faults: list[_Fault] = []
        self._log: list[dict[str, Any]] = []

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

    def connection_json(self) -> str:
        """JSON for ``AIRFLOW_CONN_LUMA_DEFAULT`` pointing at this simulator."""
        return json.dumps({"conn_type": "luma", "host": self.base_url, "password": self._api_key})

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
        :param endpoint: ``create``, ``get``, ``list``, ``video`` or ``any``.
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
        if times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._faults.append(_Fault(kind, endpoint, int(times), retry_after, delay, bool(after)))

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
        ``fault``, ``elapsed`` and, for creates, ``json`` (the parsed body).
        """
        with self._lock:
            return [copy.deepcopy(e) for e in self._log if endpoint is None or e["endpoint"] == endpoint]

    def count(self, endpoint: str | None = None) -> int:
        """How many requests (to ``endpoint``, if given) were answered."""
        with self._lock:
            return sum(1 for e in self._log if endpoint is None or e["endpoint"] == endpoint)

    def generation(self, generation_id: str) -> dict[str, Any]:
        """The generation object as the API would return it now."""
        with self._lock:
            return self._public(self._generations[generation_id], time.time())

    def generations(self) -> list[dict[str, Any]]:
        """All generation objects, oldest first."""
        now = time.time()
        with self._lock:
            return [self._public(g, now) for g in self._generations.values()]

    # ------------------------------------------------------------------ lifecycle

    async def astart(self) -> None:
        """Start serving inside the running event loop."""
        if self._runners:
            raise RuntimeError("simulator already running")
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        self._stopping = False
        self._load()
        api_app = web.Application(client_max_size=1024**2)
        api_app.router.add_post("/_sim/script", self._ctl_script)
        api_app.router.add_post("/_sim/faults", self._ctl_faults)
        api_app.router.add_delete("/_sim/faults", self._ctl_clear_faults)
        api_app.router.add_post("/_sim/state", self._ctl_state)
        api_app.router.add_post("/_sim/reset", self._ctl_reset)
        api_app.router.add_post("/_sim/config", self._ctl_config)
        api_app.router.add_get("/_sim/requests", self._ctl_requests)
        api_app.router.add_get("/_sim/generations", self._ctl_generations)
        api_app.router.add_get("/_sim/health", self._ctl_health)
        api_app.router.add_post(SINGLE_PATH, self._wrap("create", self._create))
        api_app.router.add_get(SINGLE_PATH, self._wrap("get", self._get_one))
        api_app.router.add_get(MULTI_PATH, self._wrap("list", self._get_many))
        api_app.router.add_route("*", "/{tail:.*}", self._wrap("other", self._unknown))
        cdn_app = web.Application()
        cdn_app.router.add_get("/videos/{name}", self._video)
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

    async def _hold(self, check: Callable[[float], tuple[bool, float]]) -> None:
        """Sleep until ``check`` says done, the hold expires, a change, or shutdown.

        ``check(now)`` returns (done, wall-clock time it will be done by the timeline).
        Timelines are known, so one timer per request suffices: no polling loop.
        """
        hold_until = time.time() + self.hold_seconds
        while True:
            changed = self._changed
            now = time.time()
            done, done_at = check(now)
            if done or self._stopping or now >= hold_until or changed is None:
                return
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

    def _public(self, gen: _Generation, now: float) -> dict[str, Any]:
        state = gen.state_at(now)
        reason = None
        if state == "failed":
            reason = gen.forced_failure_reason if gen.forced_state else gen.failure_reason
        video = f"{self.cdn_url}/videos/{gen.id}.mp4" if state == "completed" and self._cdn_port else None
        return {
            "id": gen.id,
            "generation_type": "video",
            "state": state,
            "failure_reason": reason,
            "created_at": _iso(gen.created_at),
            "assets": {"video": video, "image": None, "progress_video": None},
            "model": gen.model,
            "request": copy.deepcopy(gen.request),
        }

    def _error_body(self, request: web.Request, exc: _ApiError) -> dict[str, Any]:
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

    def _error_response(self, request: web.Request, exc: _ApiError) -> web.Response:
        return web.json_response(self._error_body(request, exc), status=exc.status, headers=exc.headers)

    # ------------------------------------------------------------------ request plumbing

    @staticmethod
    def _redacted_auth(request: web.Request) -> str | None:
        header = request.headers.get("Authorization")
        if header is None:
            return None
        scheme, sep, _ = header.partition(" ")
        return f"{scheme} ***" if sep else "***"

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
        }

    def _finish_entry(self, entry: dict[str, Any]) -> None:
        entry["elapsed"] = time.time() - entry["time"]
        with self._lock:
            self._log.append(entry)

    def _take_fault(self, endpoint: Endpoint, *, random_ok: bool) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.endpoint in (endpoint, "any"):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
            if random_ok and self.fault_rate > 0 and self.fault_kinds and self._rng.random() < self.fault_rate:
                return _Fault(self._rng.choice(self.fault_kinds), endpoint, 1, delay=1.0)
        return None

    def _check_auth(self, request: web.Request) -> None:
        header = request.headers.get("Authorization")
        if header is None:
            raise _ApiError(401, "Unauthorized: missing Authorization header")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _ApiError(401, "Unauthorized: expected 'Authorization: Bearer <key>'")
        if token in self.exhausted_keys:
            raise _ApiError(403, "Forbidden: insufficient credits on this API key")
        if not hmac.compare_digest(token.encode(), self._api_key.encode()):
            raise _ApiError(401, "Unauthorized: invalid API key")

    @staticmethod
    def _drop(request: web.Request) -> web.StreamResponse:
        # Abort (RST) rather than answer; aiohttp then finds the transport gone and
        # writes nothing. The returned object is never sent.
        transport = request.transport
        if transport is not None:
            transport.abort()
        return web.Response(status=500)

    def _fault_response(self, request: web.Request, fault: _Fault, entry: dict[str, Any]) -> web.StreamResponse:
        kind = fault.kind
        if kind == "drop":
            entry["status"] = 0
            return self._drop(request)
        if kind == "malformed":
            return web.Response(status=200, text='{"id": "oops", "state": ', content_type="application/json")
        if kind == "missing_fields":
            return web.json_response({}, status=200)
        headers: dict[str, str] = {}
        if kind == "429" and fault.retry_after is not None:
            headers["Retry-After"] = str(fault.retry_after)
        return self._error_response(request, _ApiError(int(kind), headers=headers))

    def _wrap(
        self,
        endpoint: Endpoint,
        impl: Callable[[web.Request, dict[str, Any]], Awaitable[web.StreamResponse]],
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            entry = self._new_entry(request, endpoint)
            response: web.StreamResponse | None = None
            try:
                fault = self._take_fault(endpoint, random_ok=True) if endpoint != "other" else None
                if fault is not None:
                    entry["fault"] = fault.kind
                    if fault.kind == "slow" and not fault.after:
                        await asyncio.sleep(5.0 if fault.delay is None else fault.delay)
                    elif fault.kind != "slow" and not fault.after:
                        response = self._fault_response(request, fault, entry)
                        return response
                try:
                    if endpoint != "other":  # unknown routes are 404 whatever the key
                        self._check_auth(request)
                    response = await impl(request, entry)
                except _ApiError as exc:
                    response = self._error_response(request, exc)
                if fault is not None and fault.after:
                    if fault.kind == "slow":
                        await asyncio.sleep(5.0 if fault.delay is None else fault.delay)
                    else:
                        response = self._fault_response(request, fault, entry)
                return response
            finally:
                if response is not None and entry["fault"] != "drop":
                    entry["status"] = response.status
                self._finish_entry(entry)

        return handler

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
        prompt = body.get("prompt")
        if "prompt" not in body:
            err("prompt", "Required")
        elif not isinstance(prompt, str):
            err("prompt", "Expected string")
        elif len(prompt) > _MAX_PROMPT:
            err("prompt", f"String must contain at most {_MAX_PROMPT} character(s)")

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
        keyframes = body.get("keyframes")
        if keyframes is not None:
            if not isinstance(keyframes, dict):
                err("keyframes", "Expected object or null")
            else:
                for key in sorted(set(keyframes) - {"frame0", "frame1"}):
                    err(f"keyframes.{key}", f"Unrecognized property '{key}'")
                for name in ("frame0", "frame1"):
                    self._validate_frame(keyframes.get(name), f"keyframes.{name}", err)
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
                gen = self._generations.get(gen_id)
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

    async def _create(self, request: web.Request, entry: dict[str, Any]) -> web.Response:
        raw = await request.read()
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            raise _ApiError(400, "Body validation error!", [{"path": "", "message": "Invalid JSON"}]) from None
        entry["json"] = body
        errors = self._validate_create(body)
        if errors:
            raise _ApiError(400, "Body validation error!", errors)
        outcome, reason, queued, dreaming = self._timeline_for(body["prompt"])
        now = time.time()
        gen = _Generation(
            id=str(uuid.uuid4()),
            created_at=now,
            request=body,
            model=body.get("model", "ray-2"),
            outcome=outcome,
            failure_reason=reason,
            dreaming_at=now + queued,
            done_at=now + queued + dreaming,
        )
        with self._lock:
            self._generations[gen.id] = gen
            self._save_locked()
            public = self._public(gen, now)
        return web.json_response(public, status=201)

    @staticmethod
    def _target_state(request: web.Request) -> str | None:
        if "state" not in request.query:
            return None
        state = request.query["state"]
        if state == "failed":
            raise _ApiError(400, "Cannot wait for the failed state")
        if state not in _PRIORITY:
            raise _ApiError(
                400,
                f"Invalid state '{state}'. Expected queued | dreaming | completed",
            )
        return state

    def _lookup(self, ids: list[str]) -> list[_Generation]:
        with self._lock:
            missing = [i for i in ids if i not in self._generations]
            if missing:
                raise _ApiError(404, f"Generation not found: {', '.join(missing)}")
            return [self._generations[i] for i in ids]

    async def _get_one(self, request: web.Request, entry: dict[str, Any]) -> web.Response:
        gen_id = request.query.get("generation_id")
        if not gen_id:
            raise _ApiError(400, "generation_id is required")
        target = self._target_state(request)
        (gen,) = self._lookup([gen_id])
        if target is not None and not self.ignore_state_param:

            def check(now: float) -> tuple[bool, float]:
                with self._lock:
                    at = gen.reached_at(target)
                return now >= at, at

            await self._hold(check)
        with self._lock:
            return web.json_response(self._public(gen, time.time()))

    async def _get_many(self, request: web.Request, entry: dict[str, Any]) -> web.Response:
        ids: list[str] = []
        for key in ("generation_ids[]", "generation_ids"):
            for value in request.query.getall(key, []):
                ids.extend(part.strip() for part in value.split(",") if part.strip())
        ids = list(dict.fromkeys(ids))  # de-duplicate, keep order
        if not ids:
            raise _ApiError(400, "generation_ids is required")
        target = self._target_state(request)
        gens = self._lookup(ids)
        if target is not None and not self.ignore_state_param:

            def check(now: float) -> tuple[bool, float]:
                # Done when every one reached the target, or as soon as any failed.
                with self._lock:
                    all_at = max(g.reached_at(target) for g in gens)
                    fail_at = min(g.reached_at("failed") for g in gens)
                at = min(all_at, fail_at)
                return now >= at, at

            await self._hold(check)
        now = time.time()
        with self._lock:
            items = [self._public(g, now) for g in gens]
        if self.multi_shape == "generations":
            return web.json_response({"generations": items, "count": len(items), "has_more": False})
        if self.multi_shape == "data":
            return web.json_response({"data": items})
        return web.json_response(items)

    async def _unknown(self, request: web.Request, entry: dict[str, Any]) -> web.Response:
        if request.path in (SINGLE_PATH, MULTI_PATH):
            raise _ApiError(405)
        raise _ApiError(404, f"Cannot {request.method} {request.path}")

    # ------------------------------------------------------------------ video origin

    async def _video(self, request: web.Request) -> web.StreamResponse:
        entry = self._new_entry(request, "video")
        response: web.StreamResponse | None = None
        try:
            fault = self._take_fault("video", random_ok=False)
            if fault is not None:
                entry["fault"] = fault.kind
                if fault.kind == "slow":
                    await asyncio.sleep(5.0 if fault.delay is None else fault.delay)
                elif fault.kind == "drop":
                    response = await self._video_drop(request)
                    return response
                elif fault.kind == "malformed":
                    response = web.Response(body=b"not an mp4", content_type="video/mp4")
                    return response
                elif fault.kind == "missing_fields":
                    response = web.Response(body=b"", content_type="video/mp4")
                    return response
                else:
                    response = self._fault_response(request, fault, entry)
                    return response
            name = request.match_info["name"]
            gen_id = name.removesuffix(".mp4")
            with self._lock:
                gen = self._generations.get(gen_id)
                ok = name.endswith(".mp4") and gen is not None and gen.state_at(time.time()) == "completed"
            if not ok:
                response = self._error_response(request, _ApiError(404))
                return response
            response = web.Response(body=_sample_video(), content_type="video/mp4")
            return response
        finally:
            if response is not None:
                entry["status"] = response.status
            self._finish_entry(entry)

    @staticmethod
    async def _video_drop(request: web.Request) -> web.StreamResponse:
        data = _sample_video()
        response = web.StreamResponse(status=200)
        response.content_type = "video/mp4"
        # Promise the whole body, send half, then cut the connection mid-download.
        response.content_length = len(data)
        await response.prepare(request)
        await response.write(data[: len(data) // 2])
        if request.transport is not None:
            request.transport.abort()
        return response

    async def _cdn_unknown(self, request: web.Request) -> web.Response:
        return self._error_response(request, _ApiError(404))

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
    )

    async def _ctl_config(self, request: web.Request) -> web.Response:
        data = await self._json_object(request)
        unknown = set(data) - set(self._CONFIG_KEYS)
        if unknown:
            raise web.HTTPBadRequest(text=f"unknown settings: {sorted(unknown)}")
        if "multi_shape" in data and data["multi_shape"] not in MULTI_SHAPES:
            raise web.HTTPBadRequest(text=f"multi_shape must be one of {MULTI_SHAPES}")
        with self._lock:
            for key, value in data.items():
                setattr(self, key, value)
        return self._ok(**{k: getattr(self, k) for k in self._CONFIG_KEYS})
