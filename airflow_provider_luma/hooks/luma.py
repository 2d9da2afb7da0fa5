"""LumaHook: the Luma connection and every call to the API, sync (requests) and async (aiohttp)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import tempfile
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import requests
import urllib3
from airflow.providers.common.compat.connection import get_async_connection, get_async_extra_dejson
from airflow.providers.common.compat.sdk import AirflowNotFoundException, BaseHook, ObjectStoragePath
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from airflow_provider_luma.errors import (
    LumaAuthenticationError,
    LumaConfigurationError,
    LumaConnectionError,
    LumaError,
    LumaForbiddenError,
    LumaInputError,
    LumaNotFoundError,
    LumaRateLimitError,
    LumaResponseError,
    LumaServerError,
    LumaValidationError,
)
from airflow_provider_luma.models import (
    Generation,
    GenerationState,
    build_create_request,
    normalize_generation_ids,
    parse_generation_list,
)
from airflow_provider_luma.version import __version__
from airflow_provider_luma.waiting import Finished, Poll, Sleep, WaitLoop, WaitPacing

if TYPE_CHECKING:
    from airflow.models import Connection

log = logging.getLogger(__name__)

DEFAULT_HOST = "https://api.aimlapi.com"
GENERATION_PATH = "/v2/generate/video/luma-ai/generation"
GENERATIONS_PATH = "/v2/generate/video/luma-ai/generations"
# A well-formed id no generation can have: fetching it costs nothing and tells whether the key works.
PROBE_GENERATION_ID = "00000000-0000-4000-8000-000000000000"
MAX_RETRY_AFTER = 60.0
#: How long the API holds a long poll at most; a read time-out must exceed it.
API_HOLD_SECONDS = 30.0
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}
T = TypeVar("T")
#: Back-off between retries of one call: 0.5 s doubling up to 10 s, plus up to 0.5 s of jitter.
_RETRY_BACKOFF = wait_exponential(multiplier=0.5, max=10.0) + wait_random(0, 0.5)


class _SharedSession:
    """One HTTP session shared by every ``async with hook:`` on one event loop, and how many use it."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.users = 0


# Keyed by the running loop: a triggerer's thousands of waits share one connection pool, and nothing
# outlives its loop (dag.test() runs each trigger under a loop of its own).
_SHARED_SESSIONS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _SharedSession] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class LumaSettings:
    """
    Everything a call needs from the Luma connection, read once per hook.

    :param conn_id: The connection id (for messages).
    :param base_url: Scheme, host and optional port/path prefix of the API.
    :param api_key: The API key (the connection's password).
    :param timeout: Read time-out of one call in seconds; above the server's 30 s hold.
    :param connect_timeout: Seconds to establish a connection.
    :param max_retries: Retries of one call after transient errors (429, 5xx, dropped connections).
    :param ids_per_request: Most ids sent in one multi-fetch call.
    :param min_poll_interval: Least seconds between two polls of a wait (see :class:`WaitPacing`).
    :param max_backoff: Cap in seconds of a wait's back-off after failed polls.
    :param comma_separated_ids: Send multi-fetch ids as ``generation_ids=A,B`` instead of the
        default ``generation_ids[]=A&generation_ids[]=B`` (both documented; for proxies that mangle ``[]``).
    """

    conn_id: str
    base_url: str
    api_key: str
    timeout: float = 60.0
    connect_timeout: float = 10.0
    max_retries: int = 5
    ids_per_request: int = 6
    min_poll_interval: float = 5.0
    max_backoff: float = 60.0
    comma_separated_ids: bool = False

    def __repr__(self) -> str:  # never show the key, even in a debugger or a traceback
        return f"LumaSettings(conn_id={self.conn_id!r}, base_url={self.base_url!r}, api_key='***')"

    @classmethod
    def from_connection(cls, conn: Connection, extras: Mapping[str, Any]) -> LumaSettings:
        """Read and check the connection; raise :class:`LumaConfigurationError` saying what to fix."""
        conn_id = conn.conn_id or "luma"
        api_key = (conn.password or "").strip()
        if not api_key:
            raise LumaConfigurationError(
                f"Connection {conn_id!r} has no API key: put your AI/ML API key in its password field."
            )
        base_url = _base_url(conn)
        allow_http = _extra(extras, conn_id, "allow_insecure_http", bool, False)
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise LumaConfigurationError(f"Connection {conn_id!r} has an invalid host {base_url!r}.")
        if parts.scheme == "http" and not allow_http and not _is_loopback(parts.hostname):
            raise LumaConfigurationError(
                f"Connection {conn_id!r} points at {base_url!r} over plain http, which would send the API key "
                "in clear text: use https, or set the extra allow_insecure_http to true if you really mean it."
            )
        settings = cls(
            conn_id=conn_id,
            base_url=base_url,
            api_key=api_key,
            timeout=_extra(extras, conn_id, "timeout", float, cls.timeout, minimum=1.0),
            connect_timeout=_extra(extras, conn_id, "connect_timeout", float, cls.connect_timeout, minimum=0.1),
            max_retries=_extra(extras, conn_id, "max_retries", int, cls.max_retries, minimum=0),
            ids_per_request=_extra(extras, conn_id, "ids_per_request", int, cls.ids_per_request, minimum=1),
            min_poll_interval=_extra(extras, conn_id, "min_poll_interval", float, cls.min_poll_interval, minimum=0.0),
            max_backoff=_extra(extras, conn_id, "max_backoff", float, cls.max_backoff, minimum=0.0),
            comma_separated_ids=_extra(extras, conn_id, "comma_separated_ids", bool, False),
        )
        if settings.timeout <= API_HOLD_SECONDS and not _is_loopback(parts.hostname):
            log.warning(
                "Extra 'timeout' of connection %r is %s s, not above the API's %s s hold: long polls will time out "
                "and be retried. Use about 60.",
                conn_id,
                settings.timeout,
                API_HOLD_SECONDS,
            )
        return settings

    @property
    def pacing(self) -> WaitPacing:
        """How this connection's waits space their calls."""
        return WaitPacing(min_poll_interval=self.min_poll_interval, max_backoff=self.max_backoff)

    @property
    def headers(self) -> dict[str, str]:
        """The headers of every API call (the only place the key is used)."""
        return {
            "Authorization": f"Bearer {self.api_key}",
            "Accept": "application/json",
            "User-Agent": f"airflow-provider-luma/{__version__}",
        }

    def read_timeout(self, deadline: float | None) -> float:
        """The read time-out of one call: the configured one, cut short by the wait's deadline."""
        if deadline is None:
            return self.timeout
        return max(0.5, min(self.timeout, deadline - time.time()))


def _base_url(conn: Connection) -> str:
    host = (conn.host or "").strip().rstrip("/") or DEFAULT_HOST
    if "://" not in host:
        if host.count(":") > 1 and not host.startswith("["):
            host = f"[{host}]"  # a bare IPv6 address
        scheme = (conn.schema or "").strip().lower()
        host = f"{scheme if scheme in ('http', 'https') else 'https'}://{host}"
    parts = urlsplit(host)
    try:
        has_port = parts.port is not None
    except ValueError:
        raise LumaConfigurationError(f"Connection {conn.conn_id!r} has an invalid host {host!r}.") from None
    if conn.port and not has_port and parts.hostname:
        hostname = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        host = f"{parts.scheme}://{hostname}:{conn.port}{parts.path}"
    return host


def _is_loopback(hostname: str) -> bool:
    if hostname.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def _extra(extras: Mapping[str, Any], conn_id: str, name: str, kind: type, default: Any, minimum: float | None = None):
    value = extras.get(name)
    if value is None or value == "":
        return default
    try:
        if kind is bool:
            if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
                return value.strip().lower() in ("true", "1", "yes")
            if isinstance(value, bool):
                return value
            raise ValueError
        converted = kind(value)
    except (TypeError, ValueError):
        raise LumaConfigurationError(
            f"Extra {name!r} of connection {conn_id!r} is {value!r}: expected {kind.__name__}."
        ) from None
    if minimum is not None and converted < minimum:
        raise LumaConfigurationError(f"Extra {name!r} of connection {conn_id!r} must be at least {minimum}.")
    return converted


def error_for_response(
    status: int, text: str, headers: Mapping[str, str], *, what: str, conn_id: str, creates: bool = False
) -> LumaError:
    """
    Map an error answer of the API to the matching :class:`LumaError`, with the server's own message.

    ``creates``: the call submitted a generation, so a server error may hide one that exists anyway.
    """
    message, request_id = _server_message(text)
    detail = f": {message}" if message else ""
    kwargs: dict[str, Any] = {"http_status": status, "request_id": request_id}
    if status == 401:
        return LumaAuthenticationError(
            f"The Luma API rejected the API key of connection {conn_id!r} while {what} (401{detail}): "
            "check the key in the connection's password.",
            **kwargs,
        )
    if status == 403:
        return LumaForbiddenError(
            f"The Luma API refused {what} (403{detail}): the service answers 403 when the account is out of "
            "credits; top up the account or use another key.",
            **kwargs,
        )
    if status == 404:
        return LumaNotFoundError(f"Not found while {what} (404{detail}).", **kwargs)
    if status in (400, 422):
        return LumaValidationError(f"The Luma API rejected {what} ({status}{detail}).", **kwargs)
    if status == 429:
        return LumaRateLimitError(
            f"The Luma API is rate limiting {what} (429{detail}); an Airflow pool for Luma tasks avoids this.",
            retry_after=_retry_after(headers),
            **kwargs,
        )
    if status >= 500:
        maybe_created = (
            " The generation may have been created anyway: check before submitting again."
            if creates and status != 503
            else ""
        )
        error = LumaServerError(f"The Luma API failed while {what} ({status}{detail}).{maybe_created}", **kwargs)
        error.maybe_created = bool(maybe_created)
        return error
    return LumaError(f"Unexpected answer {status} while {what}{detail}.", **kwargs)


def _server_message(text: str) -> tuple[str | None, str | None]:
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        return (text.strip()[:200] or None), None
    if not isinstance(body, Mapping):
        return None, None
    message = body.get("message") or body.get("detail") or body.get("error")
    if not isinstance(message, str) and message is not None:
        message = json.dumps(message)[:500]
    details = body.get("errors")
    if details:
        message = f"{message} {json.dumps(details)[:500]}" if message else json.dumps(details)[:500]
    request_id = body.get("requestId")
    return message, (str(request_id) if request_id else None)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: rare enough to fall back to our own back-off


def parse_json(text: str, *, what: str) -> Any:
    """Parse a successful answer; a body that is not JSON is a :class:`LumaResponseError`."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        raise LumaResponseError(f"The Luma API answered {what} with a body that is not JSON.") from None


def _chunks(items: Sequence[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _is_safe_to_resend_create(error: BaseException) -> bool:
    # Resending a create after the server may have acted on it could pay for two generations.
    # Only errors that prove it did not act are retried: 429, 503, and connections never made.
    if isinstance(error, LumaRateLimitError):
        return True
    if isinstance(error, LumaServerError):
        return error.http_status == 503
    return isinstance(error, LumaConnectionError) and not error.request_sent


def _is_transient(error: BaseException) -> bool:
    return isinstance(error, LumaError) and error.transient


class _RetryPolicy:
    """The one retry policy of every HTTP call (sync and async): bounded, exponential, honours Retry-After."""

    def __init__(self, settings: LumaSettings, *, deadline: float | None, creates: bool):
        self.settings = settings
        self.deadline = deadline
        self.predicate = _is_safe_to_resend_create if creates else _is_transient
        self._backoff = _RETRY_BACKOFF

    def _stop(self, state: RetryCallState) -> bool:
        if stop_after_attempt(self.settings.max_retries + 1)(state):
            return True
        return self.deadline is not None and time.time() >= self.deadline

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        delay = self._backoff(state)
        if isinstance(error, LumaRateLimitError) and error.retry_after is not None:
            delay = min(error.retry_after, MAX_RETRY_AFTER)
        if self.deadline is not None:
            delay = max(0.0, min(delay, self.deadline - time.time()))
        return delay

    def kwargs(self) -> dict[str, Any]:
        return {
            "stop": self._stop,
            "wait": self._wait,
            "retry": retry_if_exception(self.predicate),
            "reraise": True,
        }


class LumaHook(BaseHook):
    """
    Interact with Luma AI's Dream Machine video generation through the AI/ML API.

    Every method has an async twin (``a``-prefixed) for triggers and async tasks. Used as
    ``async with hook:``, the hook makes all its async calls on one HTTP session, shared with every
    other hook inside ``async with`` on the same event loop (a triggerer's waits share one
    connection pool) and closed when the last of them exits; without it, each async call opens and
    closes its own.

    :param luma_conn_id: The Airflow connection holding the API key (password) and, optionally,
        the host and tuning extras. Defaults to ``luma_default``.
    """

    conn_name_attr = "luma_conn_id"
    default_conn_name = "luma_default"
    conn_type = "luma"
    hook_name = "Luma AI"

    def __init__(self, luma_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.luma_conn_id = luma_conn_id
        self._async_settings: LumaSettings | None = None
        self._async_session: aiohttp.ClientSession | None = None

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """The connection form: only the host and the API key matter."""
        return {
            "hidden_fields": ["schema", "port", "login"],
            "relabeling": {"password": "API key"},
            "placeholders": {
                "host": DEFAULT_HOST,
                "password": "your AI/ML API key",
                "extra": json.dumps({"timeout": 60, "max_retries": 5, "ids_per_request": 6}),
            },
        }

    # -- connection ------------------------------------------------------------------------------

    @cached_property
    def settings(self) -> LumaSettings:
        """The connection's settings, read once (sync)."""
        conn = self._lookup(self.get_connection)
        return LumaSettings.from_connection(conn, conn.extra_dejson)

    async def asettings(self) -> LumaSettings:
        """The connection's settings, read once without blocking the event loop."""
        if self._async_settings is None:
            conn = await self._alookup()
            self._async_settings = LumaSettings.from_connection(conn, await get_async_extra_dejson(conn))
        return self._async_settings

    def _lookup(self, getter):
        try:
            return getter(self.luma_conn_id)
        except AirflowNotFoundException:
            raise LumaConfigurationError(self._missing_connection_message()) from None

    async def _alookup(self) -> Any:
        try:
            return await get_async_connection(self.luma_conn_id, hook=type(self))
        except AirflowNotFoundException:
            raise LumaConfigurationError(self._missing_connection_message()) from None

    def _missing_connection_message(self) -> str:
        return (
            f"The Airflow connection {self.luma_conn_id!r} does not exist: add a connection of type 'luma' "
            f"with your API key as password (e.g. AIRFLOW_CONN_{self.luma_conn_id.upper()}="
            '\'{"conn_type": "luma", "password": "<key>"}\').'
        )

    # -- sync HTTP -------------------------------------------------------------------------------

    @cached_property
    def _session(self) -> requests.Session:
        session = requests.Session()
        session.headers.update(self.settings.headers)
        return session

    def _request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        params: Any = None,
        body: Mapping[str, Any] | None = None,
        deadline: float | None = None,
        parse: Callable[[Any], T],
    ) -> T:
        settings = self.settings
        url = settings.base_url + path
        creates = method == "POST"

        def call() -> T:
            try:
                response = self._session.request(
                    method,
                    url,
                    params=params,
                    json=body,
                    timeout=(settings.connect_timeout, settings.read_timeout(deadline)),
                )
                text = response.text
            except requests.exceptions.RequestException as error:
                raise _connection_error(error, what=what, creates=creates) from None
            if response.status_code >= 400:
                raise error_for_response(
                    response.status_code, text, response.headers, what=what, conn_id=settings.conn_id, creates=creates
                )
            return parse(parse_json(text, what=what))

        for attempt in Retrying(**_RetryPolicy(settings, deadline=deadline, creates=creates).kwargs()):
            with attempt:
                return call()
        raise AssertionError("unreachable: tenacity reraises the last error")

    # -- async HTTP ------------------------------------------------------------------------------

    async def __aenter__(self) -> LumaHook:
        if self._async_session is not None:
            raise RuntimeError("This LumaHook is already open: use one `async with hook:` at a time.")
        await self.asettings()
        loop = asyncio.get_running_loop()
        shared = _SHARED_SESSIONS.get(loop)
        if shared is None or shared.session.closed:
            shared = _SHARED_SESSIONS[loop] = _SharedSession(self._new_async_session())
        shared.users += 1
        self._async_session = shared.session
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        session, self._async_session = self._async_session, None
        if session is None:
            return
        loop = asyncio.get_running_loop()
        shared = _SHARED_SESSIONS.get(loop)
        if shared is not None and shared.session is session:
            shared.users -= 1
            if shared.users > 0:
                return
            del _SHARED_SESSIONS[loop]  # before closing: a hook entering meanwhile gets a new session
        await session.close()

    def _new_async_session(self) -> aiohttp.ClientSession:
        # limit=0: concurrent long polls must never queue behind each other in the pool.
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def _arequest(
        self,
        method: str,
        path: str,
        *,
        what: str,
        params: Any = None,
        body: Mapping[str, Any] | None = None,
        deadline: float | None = None,
        parse: Callable[[Any], T],
    ) -> T:
        settings = await self.asettings()
        url = settings.base_url + path
        creates = method == "POST"
        own_session = self._async_session is None
        session = self._new_async_session() if own_session else self._async_session
        assert session is not None

        async def call() -> T:
            timeout = aiohttp.ClientTimeout(
                total=None, connect=settings.connect_timeout, sock_read=settings.read_timeout(deadline)
            )
            try:
                async with session.request(
                    method, url, params=params, json=body, headers=settings.headers, timeout=timeout
                ) as response:
                    text = await response.text(errors="replace")  # a proxy's error page may not be UTF-8
                    status, headers = response.status, response.headers
            except (TimeoutError, aiohttp.ClientError) as error:
                raise _connection_error(error, what=what, creates=creates) from None
            if status >= 400:
                raise error_for_response(status, text, headers, what=what, conn_id=settings.conn_id, creates=creates)
            return parse(parse_json(text, what=what))

        try:
            async for attempt in AsyncRetrying(**_RetryPolicy(settings, deadline=deadline, creates=creates).kwargs()):
                with attempt:
                    return await call()
        finally:
            if own_session:
                await session.close()
        raise AssertionError("unreachable: tenacity reraises the last error")

    # -- API: create -----------------------------------------------------------------------------

    def create_generation(
        self,
        prompt: str,
        *,
        aspect_ratio: str | None = None,
        model: str | None = None,
        resolution: str | None = None,
        duration: str | None = None,
        loop: bool | None = None,
        keyframes: Mapping[str, Any] | None = None,
        callback_url: str | None = None,
    ) -> Generation:
        """
        Submit a new generation (this costs money) and return it.

        :param prompt: What the video shows; at most 2048 characters.
        :param aspect_ratio: One of ``1:1``, ``16:9``, ``9:16``, ``4:3``, ``3:4``, ``21:9``, ``9:21``.
        :param model: ``ray-1-6``, ``ray-2`` (the API's default) or ``ray-flash-2``.
        :param resolution: ``540p``, ``720p``, ``1080p`` or ``4k``.
        :param duration: ``5s`` or ``9s``.
        :param loop: Whether the video should loop seamlessly.
        :param keyframes: ``{"frame0": ..., "frame1": ...}``, each ``{"type": "image", "url": ...}`` or
            ``{"type": "generation", "id": ...}`` (image-to-video, extend, interpolate).
        :param callback_url: A URL the service POSTs the generation to on state changes.
        """
        body = build_create_request(
            prompt,
            aspect_ratio=aspect_ratio,
            model=model,
            resolution=resolution,
            duration=duration,
            loop=loop,
            keyframes=keyframes,
            callback_url=callback_url,
        )
        return self.submit_generation(body)

    def submit_generation(self, body: Mapping[str, Any]) -> Generation:
        """Submit a request body already checked by :func:`build_create_request`."""
        generation = self._request(
            "POST", GENERATION_PATH, what="creating a generation", body=body, parse=_created_generation
        )
        self.log.info("Created Luma generation %s (%s).", generation.id, generation.state)
        return generation

    async def acreate_generation(self, prompt: str, **parameters: Any) -> Generation:
        """Async twin of :meth:`create_generation` (same parameters)."""
        body = build_create_request(prompt, **parameters)
        generation = await self._arequest(
            "POST", GENERATION_PATH, what="creating a generation", body=body, parse=_created_generation
        )
        self.log.info("Created Luma generation %s (%s).", generation.id, generation.state)
        return generation

    # -- API: fetch ------------------------------------------------------------------------------

    def get_generation(
        self, generation_id: str, state: str | None = None, *, deadline: float | None = None
    ) -> Generation:
        """
        Fetch one generation; with ``state``, the server holds the call (up to ~30 s) until that state
        or a later one is reached, then answers with the current state.

        :param generation_id: The generation's id.
        :param state: ``queued``, ``dreaming`` or ``completed``; ``None`` answers at once.
        :param deadline: UNIX time by which the call (with its retries) gives up.
        """
        request = _single_request(generation_id, state)
        return self._request("GET", GENERATION_PATH, deadline=deadline, parse=Generation.from_api, **request)

    async def aget_generation(
        self, generation_id: str, state: str | None = None, *, deadline: float | None = None
    ) -> Generation:
        """Async twin of :meth:`get_generation`."""
        request = _single_request(generation_id, state)
        return await self._arequest("GET", GENERATION_PATH, deadline=deadline, parse=Generation.from_api, **request)

    def get_generations(
        self, generation_ids: Iterable[str], state: str | None = None, *, deadline: float | None = None
    ) -> list[Generation]:
        """
        Fetch several generations through the multi-fetch endpoint, ``ids_per_request`` ids per call.

        With ``state`` and more ids than one call carries, only the first call is held (a long poll);
        the others answer at once, so this never takes longer than one server hold.

        :param generation_ids: The ids.
        :param state: As for :meth:`get_generation`.
        :param deadline: UNIX time by which each call (with its retries) gives up.
        """
        ids = normalize_generation_ids(generation_ids)
        result: list[Generation] = []
        for index, chunk in enumerate(_chunks(ids, self.settings.ids_per_request)):
            # Only the first chunk is held: one call never holds for longer than one server hold.
            request = _multi_request(chunk, state if index == 0 else None, self.settings)
            result.extend(
                self._request("GET", GENERATIONS_PATH, deadline=deadline, parse=parse_generation_list, **request)
            )
        return result

    async def aget_generations(
        self, generation_ids: Iterable[str], state: str | None = None, *, deadline: float | None = None
    ) -> list[Generation]:
        """Async twin of :meth:`get_generations`; the chunks are fetched concurrently."""
        ids = normalize_generation_ids(generation_ids)
        settings = await self.asettings()
        calls = [
            asyncio.ensure_future(
                self._arequest(
                    "GET",
                    GENERATIONS_PATH,
                    deadline=deadline,
                    parse=parse_generation_list,
                    **_multi_request(chunk, state, settings),
                )
            )
            for chunk in _chunks(ids, settings.ids_per_request)
        ]
        try:
            answers = await asyncio.gather(*calls)
        except BaseException:
            # One chunk failed (or the wait was cancelled): stop the others' long polls with it.
            for call in calls:
                call.cancel()
            await asyncio.gather(*calls, return_exceptions=True)
            raise
        return [generation for chunk in answers for generation in chunk]

    def poll(self, step: Poll) -> list[Generation]:
        """One poll of a wait: single-fetch for one id, multi-fetch for several."""
        state = step.target.value if step.hold else None
        if len(step.generation_ids) == 1:
            return [self.get_generation(step.generation_ids[0], state, deadline=step.deadline)]
        return self.get_generations(step.generation_ids, state, deadline=step.deadline)

    async def apoll(self, step: Poll) -> list[Generation]:
        """Async twin of :meth:`poll`."""
        state = step.target.value if step.hold else None
        if len(step.generation_ids) == 1:
            return [await self.aget_generation(step.generation_ids[0], state, deadline=step.deadline)]
        return await self.aget_generations(step.generation_ids, state, deadline=step.deadline)

    # -- API: wait -------------------------------------------------------------------------------

    def wait_for_generations(
        self, generation_ids: Iterable[str], state: str = "completed", *, timeout: float | None = None
    ) -> list[Generation]:
        """
        Wait in this process until every generation reaches ``state`` (or a later non-failed state).

        Long-polls the API; transient errors are retried until the deadline. Raises
        :class:`~airflow_provider_luma.errors.LumaGenerationFailedError` when one fails and
        :class:`~airflow_provider_luma.errors.LumaWaitTimeoutError` after ``timeout`` seconds.

        :param generation_ids: The ids (or generation dicts).
        :param state: ``queued``, ``dreaming`` or ``completed``.
        :param timeout: Seconds to wait at most; ``None`` waits as long as it takes.
        """
        return self.run_wait(self.new_wait(generation_ids, state, timeout=timeout)).result()

    def wait_for_generation(
        self, generation_id: str, state: str = "completed", *, timeout: float | None = None
    ) -> Generation:
        """Wait for one generation; see :meth:`wait_for_generations`."""
        return self.wait_for_generations([generation_id], state, timeout=timeout)[0]

    async def await_for_generations(
        self, generation_ids: Iterable[str], state: str = "completed", *, timeout: float | None = None
    ) -> list[Generation]:
        """Async twin of :meth:`wait_for_generations`."""
        loop = self.new_wait(generation_ids, state, timeout=timeout, settings=await self.asettings())
        return (await self.arun_wait(loop)).result()

    async def await_for_generation(
        self, generation_id: str, state: str = "completed", *, timeout: float | None = None
    ) -> Generation:
        """Async twin of :meth:`wait_for_generation`."""
        return (await self.await_for_generations([generation_id], state, timeout=timeout))[0]

    def new_wait(
        self,
        generation_ids: Iterable[str],
        state: str,
        *,
        timeout: float | None = None,
        deadline: float | None = None,
        settings: LumaSettings | None = None,
        pacing: WaitPacing | None = None,
        logger: Any = None,
    ) -> WaitLoop:
        """A :class:`WaitLoop` for these ids, paced as the connection says unless ``pacing`` is given."""
        if deadline is None and timeout is not None:
            deadline = time.time() + timeout
        return WaitLoop(
            normalize_generation_ids(generation_ids),
            GenerationState.waitable(state),
            deadline=deadline,
            pacing=pacing or (settings or self.settings).pacing,
            logger=logger or self.log,
        )

    def run_wait(self, loop: WaitLoop) -> Finished:
        """Drive a wait in this thread until it finishes."""
        step = loop.first_step()
        while not isinstance(step, Finished):
            if isinstance(step, Sleep):
                time.sleep(step.seconds)
                step = loop.after_sleep()
                continue
            started = time.monotonic()
            try:
                answer: list[Generation] | LumaError = self.poll(step)
            except LumaError as error:
                answer = error
            step = loop.after_poll(answer, time.monotonic() - started)
        return step

    async def arun_wait(self, loop: WaitLoop) -> Finished:
        """Drive a wait on the event loop until it finishes, on one HTTP session."""
        if self._async_session is None:
            async with self:
                return await self.arun_wait(loop)
        step = loop.first_step()
        while not isinstance(step, Finished):
            if isinstance(step, Sleep):
                await asyncio.sleep(step.seconds)
                step = loop.after_sleep()
                continue
            started = time.monotonic()
            try:
                answer: list[Generation] | LumaError = await self.apoll(step)
            except LumaError as error:
                answer = error
            step = loop.after_poll(answer, time.monotonic() - started)
        return step

    # -- connection test -------------------------------------------------------------------------

    def test_connection(self) -> tuple[bool, str]:
        """
        Check the key without paying: fetch an id that cannot exist; 404 means the key was accepted.

        Used by the Test button of the Airflow UI.
        """
        try:
            self.get_generation(PROBE_GENERATION_ID)
        except LumaNotFoundError:
            return True, "The Luma API accepted the key."
        except LumaAuthenticationError:
            return False, "The Luma API rejected the key (401): check the API key in the password field."
        except LumaForbiddenError:
            return False, "The key is valid but the account is out of credits (403): top up the account."
        except LumaError as error:
            return False, error.message
        return True, "The Luma API accepted the key."

    # -- video download --------------------------------------------------------------------------

    #: Bytes read from the CDN and written per step: the video is streamed, never held in memory.
    VIDEO_CHUNK_SIZE = 1024 * 1024
    #: Retries of one download after transient CDN errors (5xx, 429, dropped or short transfers).
    VIDEO_MAX_RETRIES = 3
    #: Connect and read time-outs (seconds) of one CDN request.
    VIDEO_TIMEOUT = (10.0, 60.0)

    def download_video(
        self,
        generation: Any,
        destination: Any,
        *,
        chunk_size: int = VIDEO_CHUNK_SIZE,
        into_folder: bool | None = None,
        max_retries: int = VIDEO_MAX_RETRIES,
    ) -> Any:
        """
        Download the video of a completed generation and return where it was written.

        The video is streamed from the CDN with a plain request (the API key is never sent there) into
        a temporary file next to the destination, checked against ``Content-Length``, and only then
        moved under its final name; a failed or interrupted download leaves nothing behind. Running it
        again overwrites the file atomically.

        :param generation: A generation dict (as the generate operator or the sensor return it), a
            :class:`~airflow_provider_luma.models.Generation`, or an id (then it is fetched first).
        :param destination: A local file path (``str`` or ``Path``), a folder (an existing one, or a
            path ending in ``/``: the video goes to ``<folder>/<generation id>.mp4``), or an
            ``ObjectStoragePath``. Missing parent folders are created.
        :param chunk_size: Bytes read and written per step.
        :param into_folder: ``True``: ``destination`` is a folder even if it does not exist yet;
            ``None`` (default): decide from the destination itself.
        :param max_retries: Retries after transient CDN errors.
        :return: The written file: a ``pathlib.Path``, or an ``ObjectStoragePath`` when one was given.
        """
        resolved = self._completed_generation(generation)
        target = self._video_target(destination, resolved.id, into_folder=into_folder)
        self._ensure_parent(target)
        temporary = target.with_name(f"{target.name}.part-{uuid.uuid4().hex}")
        host = urlsplit(resolved.video_url or "").hostname
        self.log.info("Downloading the video of Luma generation %s from %s to %s.", resolved.id, host, target)
        retrying = Retrying(
            stop=stop_after_attempt(max_retries + 1),
            wait=_RETRY_BACKOFF,
            retry=retry_if_exception(_is_transient),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    size = self._stream_video(resolved, temporary, chunk_size)
            self._move_into_place(temporary, target)
        except BaseException:
            self._remove_quietly(temporary)
            raise
        self.log.info("Wrote the video of Luma generation %s (%d bytes) to %s.", resolved.id, size, target)
        return target

    def check_video_destination(self, destination: Any, *, into_folder: bool | None = None) -> None:
        """
        Fail early, with a clear :class:`~airflow_provider_luma.errors.LumaInputError`, when videos
        cannot be written to ``destination``.

        Creates the folder (or the file's parent folders) if missing. Local destinations are probed
        by creating and deleting a file; object storage is only checked when written to.

        :param destination: As for :meth:`download_video`.
        :param into_folder: As for :meth:`download_video`.
        """
        target = self._video_target(destination, "write-check", into_folder=into_folder)
        self._ensure_parent(target)
        # On Airflow 2 an ObjectStoragePath is also a pathlib.Path: test for it first.
        if not isinstance(target, ObjectStoragePath):
            try:
                with tempfile.NamedTemporaryFile(dir=target.parent, prefix=".luma-write-check-"):
                    pass
            except OSError as error:
                raise LumaInputError(
                    f"The video destination {destination} is not writable: {error.strerror or error}."
                ) from None

    def _completed_generation(self, generation: Any) -> Generation:
        if isinstance(generation, str):
            (generation_id,) = normalize_generation_ids([generation], parameter="generation")
            resolved = self.get_generation(generation_id)
        elif isinstance(generation, Generation):
            resolved = generation
        elif isinstance(generation, Mapping):
            resolved = Generation.from_dict(generation)
        else:
            raise LumaError(
                f"Cannot download the video of {type(generation).__name__} {generation!r}: "
                "give a generation dict, a Generation or a generation id."
            )
        if resolved.is_failed:
            raise LumaError(
                f"Luma generation {resolved.id} failed ({resolved.failure_reason or 'no reason given'}): "
                "it has no video to download."
            )
        if not resolved.has_reached(GenerationState.COMPLETED):
            raise LumaError(
                f"Luma generation {resolved.id} is {resolved.state or 'in an unknown state'}, not completed: wait "
                "for it (LumaGenerationSensor, or the generate operator with wait_for_completion=True) first."
            )
        if not resolved.video_url:
            raise LumaError(f"Luma generation {resolved.id} is completed but the API reported no video URL.")
        return resolved

    @staticmethod
    def _video_target(destination: Any, generation_id: str, *, into_folder: bool | None) -> Any:
        if isinstance(destination, ObjectStoragePath):
            folder = into_folder if into_folder is not None else destination.is_dir()
            return destination / f"{generation_id}.mp4" if folder else destination
        if not isinstance(destination, (str, os.PathLike)) or not str(destination).strip():
            raise LumaInputError(
                f"destination must be a local path or an ObjectStoragePath, not {type(destination).__name__} "
                f"{destination!r}."
            )
        text = os.fspath(destination)
        path = Path(text).expanduser()
        folder = into_folder if into_folder is not None else (text.endswith(("/", os.sep)) or path.is_dir())
        return path / f"{generation_id}.mp4" if folder else path

    @staticmethod
    def _ensure_parent(target: Any) -> None:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise LumaInputError(
                f"Cannot create the folder {target.parent} for the video: {getattr(error, 'strerror', None) or error}."
            ) from None

    def _stream_video(self, generation: Generation, temporary: Any, chunk_size: int) -> int:
        # A plain request, not self._session: the CDN must never see the API key.
        what = f"downloading the video of generation {generation.id}"
        headers = {"User-Agent": f"airflow-provider-luma/{__version__}", "Accept-Encoding": "identity"}
        assert generation.video_url is not None
        try:
            file = temporary.open("wb")  # opened first: an unwritable destination fails before any download
        except OSError as error:
            raise LumaInputError(
                f"The video destination {temporary.parent} is not writable: {error.strerror or error}."
            ) from None
        try:
            with (
                file,
                requests.get(generation.video_url, stream=True, headers=headers, timeout=self.VIDEO_TIMEOUT) as answer,
            ):
                if answer.status_code >= 400:
                    failure = error_for_response(
                        answer.status_code, answer.text, answer.headers, what=what, conn_id=self.luma_conn_id
                    )
                    if not failure.transient:
                        # A 403/404 from the CDN means an expired or wrong link, not a bad API key.
                        failure = LumaError(
                            f"The video host answered {answer.status_code} while {what}: the link may have expired; "
                            "fetch the generation again for a fresh one.",
                            http_status=answer.status_code,
                        )
                    raise failure
                expected = answer.headers.get("Content-Length")
                written = 0
                head = b""
                for chunk in answer.iter_content(chunk_size=chunk_size):
                    if len(head) < 8:
                        head += chunk[: 8 - len(head)]
                        if len(head) == 8 and head[4:8] != b"ftyp":
                            # An HTML error page served with 200 must not end up named .mp4.
                            raise LumaResponseError(f"The video host sent something that is not an MP4 while {what}.")
                    file.write(chunk)
                    written += len(chunk)
                _sync_to_disk(file)
        except requests.exceptions.RequestException as error:
            raise LumaConnectionError(
                f"The video host dropped the connection while {what} ({type(error).__name__})."
            ) from None
        if written == 0:
            raise LumaConnectionError(f"The video host sent an empty body while {what}.")
        if expected is not None and expected.isdigit() and written != int(expected):
            raise LumaConnectionError(f"The video host sent {written} of {expected} bytes while {what}.")
        return written

    @staticmethod
    def _move_into_place(temporary: Any, target: Any) -> None:
        if not isinstance(temporary, ObjectStoragePath):
            os.replace(temporary, target)  # atomic on one file system: readers see the old or the new file
            folder = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(folder)  # the rename itself survives a crash
            finally:
                os.close(folder)
        else:
            temporary.rename(target)  # object stores: copy and delete; the final name is only ever whole

    @staticmethod
    def _remove_quietly(temporary: Any) -> None:
        with contextlib.suppress(Exception):
            if temporary.exists():
                temporary.unlink()


def _sync_to_disk(file: Any) -> None:
    # A local file reaches the disk before it is renamed, so a crash never leaves an empty "finished"
    # video; object-store files have no descriptor and are only whole once closed.
    file.flush()
    try:
        descriptor = file.fileno()
    except (AttributeError, OSError, ValueError):
        return
    os.fsync(descriptor)


def _created_generation(payload: Any) -> Generation:
    try:
        return Generation.from_api(payload)
    except LumaResponseError as error:
        # The API answered 2xx: the generation exists and is paid for, we just cannot tell its id.
        error.message += " The generation was created anyway: check your account before submitting again."
        error.args = (error.message,)
        error.maybe_created = True
        raise


def _single_request(generation_id: str, state: str | None) -> dict[str, Any]:
    (checked_id,) = normalize_generation_ids([generation_id], parameter="generation_id")
    params = {"generation_id": checked_id}
    if state is not None:
        params["state"] = GenerationState.waitable(state).value
    return {"params": params, "what": f"fetching generation {checked_id}"}


def _multi_request(ids: list[str], state: str | None, settings: LumaSettings) -> dict[str, Any]:
    params: list[tuple[str, str]] = (
        [("generation_ids", ",".join(ids))]
        if settings.comma_separated_ids
        else [("generation_ids[]", generation_id) for generation_id in ids]
    )
    if state is not None:
        params.append(("state", GenerationState.waitable(state).value))
    return {"params": params, "what": f"fetching generations {', '.join(ids)}"}


def _connection_error(error: BaseException, *, what: str, creates: bool) -> LumaConnectionError:
    sent = not _never_connected(error)
    if isinstance(error, (asyncio.TimeoutError, requests.exceptions.Timeout)) and sent:
        problem = "did not answer in time"
    elif sent:
        problem = "dropped the connection"
    else:
        problem = "could not be reached"
    message = f"The Luma API {problem} while {what} ({type(error).__name__})."
    if creates and sent:
        message += " The generation may have been created anyway: check before submitting again."
    error = LumaConnectionError(message, request_sent=sent)
    error.maybe_created = creates and sent
    return error


def _never_connected(error: BaseException) -> bool:
    if isinstance(error, (aiohttp.ClientConnectorError, requests.exceptions.ConnectTimeout)):
        return True
    if isinstance(error, aiohttp.ConnectionTimeoutError):
        return True
    if isinstance(error, requests.exceptions.ConnectionError):
        reason = getattr(error.args[0], "reason", None) if error.args else None
        # NameResolutionError is a NewConnectionError: nothing was sent either.
        return isinstance(reason, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError))
    return False
