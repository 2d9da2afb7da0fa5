"""
HTTP calls to the API, sync (requests) and async (aiohttp): retries, error mapping, sessions.

The one place that puts the API key on the wire. What to call is decided elsewhere, as *plans*:
generators that yield a :class:`Call`, are sent back its :class:`Answer` (or have the call's
:class:`LumaError` thrown in), and return their result. :func:`run_plan` and :func:`arun_plan`
drive the same plan over either transport, so every decision is written once.
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import json
import math
import re
import ssl
import time
import weakref
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import aiohttp
import requests
import urllib3
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)
from yarl import URL

from airflow_provider_luma.errors import (
    MAYBE_CREATED_HINT,
    LumaAuthenticationError,
    LumaConflictError,
    LumaConnectionError,
    LumaError,
    LumaForbiddenError,
    LumaNotFoundError,
    LumaRateLimitError,
    LumaRequestTimeoutError,
    LumaResponseError,
    LumaRouteNotFoundError,
    LumaServerError,
    LumaValidationError,
)
from airflow_provider_luma.hooks.budget import CallBudget, call_budget
from airflow_provider_luma.hooks.settings import LumaSettings

T = TypeVar("T")
MAX_RETRY_AFTER = 60.0
#: Largest successful answer read, in bytes (a generation is a few KB): a huge one fails the call
#: instead of filling a triggerer's memory.
MAX_ANSWER_BYTES = 4 * 1024 * 1024
#: Bytes of an error answer kept for its message; the rest is never read.
MAX_ERROR_BODY_BYTES = 64 * 1024
#: Back-off between retries of one call: 0.5 s doubling up to 10 s, plus up to 0.5 s of jitter.
RETRY_BACKOFF = wait_exponential(multiplier=0.5, max=10.0) + wait_random(0, 0.5)
#: Least wait a ``Retry-After`` buys (the back-off's first step): ``0`` or a past date must not mean "at once".
RETRY_AFTER_FLOOR = 0.5
#: Statuses proving the server did not act on a request, so that a create may be sent again.
_NOT_ACTED_ON = frozenset({408, 429, 503})
#: The generic 404 of the service's framework (NestJS) for a route it does not have.
_NO_ROUTE = re.compile(r"^Cannot (GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS) /")


@dataclass(frozen=True)
class Call:
    """
    One HTTP call to the API.

    :param method: ``GET`` or ``POST``.
    :param path: Path below the connection's base URL.
    :param what: What the call does, for messages ("fetching generation X").
    :param params: Query parameters.
    :param body: JSON body.
    :param deadline: UNIX time by which the call, with its retries, gives up.
    :param parse: Turns the JSON into the result, inside the retried attempt: an answer that cannot
        be read (a transient :class:`LumaResponseError`) is asked for again like any other glitch.
    """

    method: str
    path: str
    what: str
    params: Any = None
    body: Mapping[str, Any] | None = None
    deadline: float | None = None
    parse: Callable[[Any], Any] | None = None

    @property
    def creates(self) -> bool:
        """Whether the call submits paid work (so it must never be sent twice)."""
        return self.method == "POST"


@dataclass(frozen=True)
class Answer:
    """
    A successful answer.

    :param payload: The JSON body, turned into the result by the call's ``parse``.
    :param seconds: How long the call took (its last attempt), to tell a held long poll from an early answer.
    """

    payload: Any
    seconds: float


Plan = Generator[Call, Answer, T]


class _Done(Exception):
    """The plan returned ``value``."""

    def __init__(self, value: Any) -> None:
        self.value = value


def _next_call(plan: Plan[Any], reply: Answer | LumaError | None) -> Call:
    """Hand ``reply`` to the plan; its next call, or :class:`_Done` with its result."""
    try:
        return plan.throw(reply) if isinstance(reply, LumaError) else plan.send(reply)  # type: ignore[arg-type]
    except StopIteration as done:
        raise _Done(done.value) from None


def run_plan(transport: SyncTransport, plan: Plan[T]) -> T:
    """Drive ``plan`` in this thread: each call it yields is made, its answer or error sent back."""
    reply: Answer | LumaError | None = None
    try:
        while call := _next_call(plan, reply):
            try:
                reply = transport.request(call)
            except LumaError as error:
                reply = error
    except _Done as done:
        return done.value
    raise AssertionError("unreachable: a plan ends by returning")


async def arun_plan(transport: AsyncTransport, plan: Plan[T]) -> T:
    """Async twin of :func:`run_plan`."""
    reply: Answer | LumaError | None = None
    try:
        while call := _next_call(plan, reply):
            try:
                reply = await transport.arequest(call)
            except LumaError as error:
                reply = error
    except _Done as done:
        return done.value
    raise AssertionError("unreachable: a plan ends by returning")


def _retry_policy(settings: LumaSettings, call: Call) -> dict[str, Any]:
    """The one retry policy of every API call: bounded, exponential, honours Retry-After, stops at the deadline."""
    deadline = call.deadline

    def stop(state: RetryCallState) -> bool:
        if stop_after_attempt(settings.max_retries + 1)(state):
            return True
        return deadline is not None and time.time() >= deadline

    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        delay = RETRY_BACKOFF(state)
        if isinstance(error, LumaError) and error.retry_after is not None:
            delay = min(error.retry_after, MAX_RETRY_AFTER)
        if deadline is not None:
            delay = max(0.0, min(delay, deadline - time.time()))
        return delay

    return {
        "stop": stop,
        "wait": wait,
        "retry": retry_if_exception(_retryable(call)),
        "reraise": True,
    }


def _retryable(call: Call) -> Callable[[BaseException], bool]:
    return _is_safe_to_resend_create if call.creates else is_transient


def _first_failure(first: LumaError, attempt: Callable[[], T]) -> Callable[[], T]:
    """
    ``attempt``, but its first run raises ``first`` again without a call: the happy path runs
    without retry machinery, which is built only after a first failure and must count it.
    """
    replay = [first]

    def again() -> T:
        if replay:
            raise replay.pop()
        return attempt()

    return again


def is_transient(error: BaseException) -> bool:
    """Whether a later attempt may succeed where this one failed."""
    return isinstance(error, LumaError) and error.transient


def _is_safe_to_resend_create(error: BaseException) -> bool:
    # Resending a create after the server may have acted on it could pay for two generations.
    # Only errors that prove it did not act are retried: 408, 429, 503, and connections never made.
    if isinstance(error, LumaConnectionError):
        return not error.request_sent
    return isinstance(error, LumaError) and not error.maybe_created and error.http_status in _NOT_ACTED_ON


class SyncTransport:
    """
    Calls from a worker, on one ``requests`` session carrying the key.

    :param settings: The connection's settings.
    :param refresh: Reads the connection again, past any cache; called once after a 401, in case
        the key was rotated since the settings were read.
    """

    def __init__(self, settings: LumaSettings, refresh: Callable[[], LumaSettings] | None = None) -> None:
        self.settings = settings
        self.refresh = refresh
        self.budget = _budget(settings)
        self.session = requests.Session()
        self.session.headers.update(settings.headers)
        # The API needs no cookies: keep none between calls (nothing set by one answer rides the next).
        self.session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))

    def request(self, call: Call) -> Answer:
        """Make ``call`` with retries; return its answer or raise the matching :class:`LumaError`."""
        try:
            return self._request(call)
        except LumaAuthenticationError:
            if not self._rotated():
                raise
        return self._request(call)  # a 401 proves nothing was done: safe to send again, creates too

    def _rotated(self) -> bool:
        fresh = self.refresh() if self.refresh is not None else None
        if fresh is None or fresh.api_key == self.settings.api_key:
            return False
        self.settings = replace(self.settings, api_key=fresh.api_key)
        self.session.headers.update(self.settings.headers)
        self.budget = _budget(self.settings)
        return True

    def _request(self, call: Call) -> Answer:
        settings = self.settings
        url = settings.base_url + call.path
        budget = self.budget

        def attempt() -> Answer:
            began = budget.acquire() if budget is not None else 0.0
            started = time.monotonic()
            try:
                with self.session.request(
                    call.method,
                    url,
                    params=call.params,
                    json=call.body,
                    timeout=(settings.connect_timeout, settings.read_timeout(call.deadline)),
                    stream=True,  # read with a cap below, never whole
                ) as response:
                    limit = body_limit(response.status_code, response.headers, what=call.what)
                    body = read_capped(response, limit)
            except requests.exceptions.RequestException as error:
                raise connection_error(error, what=call.what, creates=call.creates) from None
            if budget is not None:
                _report(budget, began, response.status_code, response.headers)
            text = answer_text(response.status_code, body, limit, what=call.what)
            return _answer(call, settings, response.status_code, text, response.headers, started)

        try:
            return attempt()
        except LumaError as error:
            if not _retryable(call)(error) or settings.max_retries == 0:
                raise
            again = _first_failure(error, attempt)
        for retry in Retrying(**_retry_policy(settings, call)):
            with retry:
                return again()
        raise AssertionError("unreachable: tenacity reraises the last error")


def _budget(settings: LumaSettings) -> CallBudget | None:
    return call_budget(settings.base_url, settings.api_key, settings.max_calls_per_second, settings.max_call_burst)


def _report(budget: CallBudget, began: float, status: int, headers: Mapping[str, str]) -> None:
    """Tell the budget how a call it let through fared: a 429 pauses every call on the key."""
    if status == 429:
        budget.rate_limited(began, _retry_after(headers))
    else:
        budget.succeeded(began)


class _SharedSession:
    """One HTTP session shared by every open async transport on one event loop, and how many use it."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.users = 0


# Keyed by the running loop: a triggerer's thousands of waits share one connection pool, and nothing
# outlives its loop (dag.test() runs each trigger under a loop of its own).
_SHARED_SESSIONS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _SharedSession] = weakref.WeakKeyDictionary()


def _new_session() -> aiohttp.ClientSession:
    # limit=0: concurrent long polls must never queue behind each other in the pool.
    # DummyCookieJar: the session is shared by every connection and key on the loop; it keeps no cookies.
    # trust_env: HTTP(S)_PROXY / NO_PROXY apply as they do to the worker's requests session.
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), cookie_jar=aiohttp.DummyCookieJar(), trust_env=True
    )


class AsyncTransport:
    """
    Calls from the triggerer (or any event loop). Inside ``async with``, every call goes over the
    loop's shared session; outside, each call opens and closes a session of its own.

    :param settings: The connection's settings.
    :param refresh: Async twin of :class:`SyncTransport`'s ``refresh``.
    """

    def __init__(self, settings: LumaSettings, refresh: Callable[[], Awaitable[LumaSettings]] | None = None) -> None:
        self.settings = settings
        self.refresh = refresh
        self.budget = _budget(settings)
        self._session: aiohttp.ClientSession | None = None
        # A wait asks the same thing poll after poll: its URL (query included) is built once.
        self._urls: dict[tuple[str, Any], URL] = {}
        self._timeout = self._new_timeout(settings.timeout)

    def _new_timeout(self, read: float) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=None, connect=self.settings.connect_timeout, sock_read=read)

    @property
    def is_open(self) -> bool:
        """Whether this transport holds the loop's shared session."""
        return self._session is not None

    async def open(self) -> None:
        """Join the event loop's shared session (created on first use)."""
        if self._session is not None:
            raise RuntimeError("This LumaHook is already open: use one `async with hook:` at a time.")
        loop = asyncio.get_running_loop()
        shared = _SHARED_SESSIONS.get(loop)
        if shared is None or shared.session.closed:
            shared = _SHARED_SESSIONS[loop] = _SharedSession(_new_session())
        shared.users += 1
        self._session = shared.session

    async def close(self) -> None:
        """Leave the shared session; the last user closes it."""
        session, self._session = self._session, None
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

    async def arequest(self, call: Call) -> Answer:
        """Async twin of :meth:`SyncTransport.request`."""
        try:
            return await self._arequest(call)
        except LumaAuthenticationError:
            if not await self._arotated():
                raise
        return await self._arequest(call)

    async def _arotated(self) -> bool:
        fresh = await self.refresh() if self.refresh is not None else None
        if fresh is None or fresh.api_key == self.settings.api_key:
            return False
        self.settings = replace(self.settings, api_key=fresh.api_key)
        self.budget = _budget(self.settings)
        return True

    def _url(self, call: Call) -> URL:
        params = call.params
        key = (call.path, tuple(params.items()) if isinstance(params, Mapping) else tuple(params or ()))
        url = self._urls.get(key)
        if url is None:
            if len(self._urls) >= 64:
                self._urls.clear()
            # What aiohttp does with a text URL and params, once instead of on every call.
            url = URL(self.settings.base_url + call.path)
            url = self._urls[key] = url.extend_query(params) if params else url
        return url

    async def _arequest(self, call: Call) -> Answer:
        settings = self.settings
        url = self._url(call)
        own_session = self._session is None
        session = _new_session() if own_session else self._session
        assert session is not None
        budget = self.budget

        async def attempt() -> Answer:
            read = settings.read_timeout(call.deadline)
            timeout = self._timeout if read == settings.timeout else self._new_timeout(read)
            began = await budget.aacquire() if budget is not None else 0.0
            started = time.monotonic()
            try:
                async with session.request(
                    call.method, url, json=call.body, headers=settings.headers, timeout=timeout
                ) as response:
                    status, headers = response.status, response.headers
                    limit = body_limit(status, headers, what=call.what)
                    body = await aread_capped(response, limit)
            except (TimeoutError, aiohttp.ClientError) as error:
                raise connection_error(error, what=call.what, creates=call.creates) from None
            if budget is not None:
                _report(budget, began, status, headers)
            text = answer_text(status, body, limit, what=call.what)
            return _answer(call, settings, status, text, headers, started)

        try:
            try:
                return await attempt()
            except LumaError as error:
                if not _retryable(call)(error) or settings.max_retries == 0:
                    raise
                again = _first_failure(error, attempt)
            async for retry in AsyncRetrying(**_retry_policy(settings, call)):
                with retry:
                    return await again()
        finally:
            if own_session:
                await session.close()
        raise AssertionError("unreachable: tenacity reraises the last error")


def body_limit(status: int, headers: Mapping[str, str], *, what: str) -> int:
    """
    How many bytes of an answer to read: :data:`MAX_ERROR_BODY_BYTES` of an error (cut quietly),
    :data:`MAX_ANSWER_BYTES` of a success, which fails at once when its ``Content-Length`` says more.
    """
    if status >= 400:
        return MAX_ERROR_BODY_BYTES
    length = headers.get("Content-Length", "")
    if length.isdigit() and int(length) > MAX_ANSWER_BYTES:
        raise _too_large(what, f"{int(length)} bytes by its Content-Length")
    return MAX_ANSWER_BYTES


def read_capped(response: requests.Response, limit: int) -> bytes:
    """At most ``limit`` + 1 bytes of a streamed ``requests`` answer (one more tells that it held more)."""
    body = bytearray()
    for chunk in response.iter_content(chunk_size=64 * 1024):
        body += chunk
        if len(body) > limit:
            break
    return bytes(body[: limit + 1])


async def aread_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """Async twin of :func:`read_capped` (bytes after aiohttp's decompression are what count)."""
    body = bytearray()
    while len(body) <= limit:
        chunk = await response.content.read(limit + 1 - len(body))
        if not chunk:
            break
        body += chunk
    return bytes(body)


def answer_text(status: int, body: bytes, limit: int, *, what: str) -> str:
    """The text of an answer read by :func:`read_capped`: UTF-8 (a proxy's page may not be), within the limit."""
    if len(body) > limit and status < 400:
        raise _too_large(what, f"more than {limit} bytes")
    return decode_body(body[:limit])


def _too_large(what: str, size: str) -> LumaResponseError:
    return LumaResponseError(
        f"The Luma API answered {what} with {size}, above the {MAX_ANSWER_BYTES // (1024 * 1024)} MiB "
        "an answer may have: refused unread."
    )


def _answer(
    call: Call, settings: LumaSettings, status: int, text: str, headers: Mapping[str, str], started: float
) -> Answer:
    if status >= 400:
        raise error_for_response(status, text, headers, what=call.what, conn_id=settings.conn_id, creates=call.creates)
    try:
        payload = parse_json(text, what=call.what)
        result = call.parse(payload) if call.parse else payload
    except Exception as error:
        raise _unreadable(error, call) from None
    return Answer(result, time.monotonic() - started)


def _unreadable(error: Exception, call: Call) -> LumaError:
    """The error for a successful answer that cannot be read; for a create, the generation may exist."""
    if not isinstance(error, LumaError):
        # A parser tripping over an answer it did not expect is the answer's fault, not a crash.
        error = LumaResponseError(
            f"The Luma API answered {call.what} with something this provider cannot read "
            f"({type(error).__name__}: {str(error)[:200]})."
        )
    if call.creates and not error.maybe_created:
        # A 2xx create answer (an empty 201, a cut body, a proxy's page): the server may have acted.
        error.message = f"{error.message} {MAYBE_CREATED_HINT}"
        error.args = (error.message,)
        error.maybe_created = True
    return error


def decode_body(raw: bytes) -> str:
    """
    An answer's text: UTF-8 (a BOM dropped), undecodable bytes replaced. The ``charset`` a server or
    proxy claims is ignored on purpose: the API speaks JSON (UTF-8), and a claimed ``base64`` or
    ``idna`` makes the libraries' own decoding raise instead.
    """
    return raw.decode("utf-8-sig", errors="replace")


def error_for_response(
    status: int, text: str, headers: Mapping[str, str], *, what: str, conn_id: str, creates: bool = False
) -> LumaError:
    """
    Map an error answer of the API to the matching :class:`LumaError`, with the server's own message.

    ``creates``: the call submitted a generation, so a server error may hide one that exists anyway.
    """
    error = _error_for_response(status, text, what=what, conn_id=conn_id, creates=creates)
    error.server_message = _server_message(text)[0]
    # Honoured on any retried status (429, 503, 408...), as the official SDK does.
    error.retry_after = _retry_after(headers)
    return error


def _error_for_response(status: int, text: str, *, what: str, conn_id: str, creates: bool) -> LumaError:
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
            f"The Luma API refused {what} (403{detail}): the account is out of credits or over the plan's limit; "
            "top up the account, wait for the plan's limit to reset, or use another key.",
            **kwargs,
        )
    if status == 404:
        if message and _NO_ROUTE.match(message):
            return LumaRouteNotFoundError(f"The server has no such route while {what} (404{detail}).", **kwargs)
        return LumaNotFoundError(f"Not found while {what} (404{detail}).", **kwargs)
    if status in (400, 422):
        return LumaValidationError(f"The Luma API rejected {what} ({status}{detail}).", **kwargs)
    if status == 408:
        return LumaRequestTimeoutError(
            f"The Luma API timed out waiting for the request while {what} (408{detail}).", **kwargs
        )
    if status == 409:
        hint = f" {MAYBE_CREATED_HINT}" if creates else ""
        conflict = LumaConflictError(f"The Luma API reported a conflict while {what} (409{detail}).{hint}", **kwargs)
        # The conflict may be with the very generation this create made: never resent, maybe paid.
        conflict.maybe_created = creates
        return conflict
    if status == 429:
        return LumaRateLimitError(
            f"The Luma API is rate limiting {what} (429{detail}); an Airflow pool for Luma tasks avoids this.",
            **kwargs,
        )
    if status >= 500:
        maybe_created = f" {MAYBE_CREATED_HINT}" if creates and status != 503 else ""
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
    """
    Seconds to wait that ``Retry-After`` asks for, given as seconds or as an HTTP date; never less than
    :data:`RETRY_AFTER_FLOOR` (``0`` or a date already past must not make the retries hammer the API).
    ``None`` when absent or unreadable: our own back-off applies.
    """
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # an HTTP date is GMT; a zone-less one is read as such
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(RETRY_AFTER_FLOOR, seconds)


def parse_json(text: str, *, what: str) -> Any:
    """Parse a successful answer; a body that is not JSON is a :class:`LumaResponseError`."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        raise LumaResponseError(f"The Luma API answered {what} with a body that is not JSON.") from None


def connection_error(error: BaseException, *, what: str, creates: bool) -> LumaConnectionError:
    """The :class:`LumaConnectionError` for a failed exchange; says whether the request may have been acted on."""
    sent = not _never_connected(error)
    if isinstance(error, (asyncio.TimeoutError, requests.exceptions.Timeout)) and sent:
        problem = "did not answer in time"
    elif sent:
        problem = "dropped the connection"
    else:
        problem = "could not be reached"
    message = f"The Luma API {problem} while {what} ({type(error).__name__})."
    if creates and sent:
        message += f" {MAYBE_CREATED_HINT}"
    result = LumaConnectionError(message, request_sent=sent)
    result.maybe_created = creates and sent
    return result


def _never_connected(error: BaseException) -> bool:
    if isinstance(error, (aiohttp.ClientConnectorError, requests.exceptions.ConnectTimeout)):
        return True
    if isinstance(error, aiohttp.ConnectionTimeoutError):
        return True
    if isinstance(error, requests.exceptions.SSLError):
        # A certificate refused in the handshake: nothing was sent (aiohttp says the same with
        # ClientConnectorCertificateError). Other TLS errors may come mid-answer: not assumed unsent.
        return any(isinstance(cause, ssl.SSLCertVerificationError) for cause in _causes(error))
    if isinstance(error, requests.exceptions.ConnectionError):
        reason = getattr(error.args[0], "reason", None) if error.args else None
        # NameResolutionError is a NewConnectionError: nothing was sent either.
        return isinstance(reason, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError))
    return False


def _causes(error: BaseException, depth: int = 6) -> list[BaseException]:
    """``error`` and what it wraps (urllib3 nests the ssl error in a MaxRetryError's reason, in args)."""
    found = [error]
    if depth:
        for inner in (error.__cause__, error.__context__, getattr(error, "reason", None), *error.args):
            if isinstance(inner, BaseException) and inner is not error:
                found.extend(_causes(inner, depth - 1))
    return found
