"""
HTTP calls to the API, sync (requests) and async (aiohttp): sessions, the call budget, retries.
Reading answers and mapping errors is :mod:`.answers`'.

The one place that puts the API key on the wire. What to call is decided elsewhere, as *plans*:
generators that yield a :class:`Call`, are sent back its :class:`Answer` (or have the call's
:class:`LumaError` thrown in), and return their result. :func:`run_plan` and :func:`arun_plan`
drive the same plan over either transport, so every decision is written once.
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import time
import weakref
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import aiohttp
import requests
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
    LumaConnectionError,
    LumaError,
    LumaResponseError,
)
from airflow_provider_luma.hooks.answers import (
    answer_text,
    aread_capped,
    body_limit,
    connection_error,
    error_for_response,
    parse_json,
    read_capped,
    retry_after_seconds,
)
from airflow_provider_luma.hooks.budget import CallBudget, Slot, call_budget
from airflow_provider_luma.hooks.settings import LumaSettings

T = TypeVar("T")
MAX_RETRY_AFTER = 60.0
#: Back-off between retries of one call: 0.5 s doubling up to 10 s, plus up to 0.5 s of jitter.
RETRY_BACKOFF = wait_exponential(multiplier=0.5, max=10.0) + wait_random(0, 0.5)
#: Statuses proving the server did not act on a request, so that a create may be sent again.
_NOT_ACTED_ON = frozenset({408, 429, 503})


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
            slot = budget.acquire() if budget is not None else None
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
                    status, headers = response.status_code, response.headers
                    _release(budget, slot, status, headers)
                    limit = body_limit(status, headers, what=call.what)
                    body = read_capped(response, limit)
            except requests.exceptions.RequestException as error:
                raise connection_error(error, what=call.what, creates=call.creates) from None
            finally:
                _release(budget, slot)  # no answer (nothing if it had one)
            text = answer_text(status, body, limit, what=call.what)
            return _answer(call, settings, status, text, headers, started)

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
    return call_budget(
        settings.base_url,
        settings.api_key,
        settings.max_calls_per_second,
        settings.max_call_burst,
        settings.budget_redis_conn_id,
    )


def _release(
    budget: CallBudget | None, slot: Slot | None, status: int | None = None, headers: Mapping[str, str] | None = None
) -> None:
    """
    Tell the budget a call it let through has its answer (the API has counted it by then), or ended
    without one (``status`` ``None``); a 429 pauses every call on the key.
    """
    if budget is not None and slot is not None:
        retry_after = retry_after_seconds(headers) if status == 429 and headers is not None else None
        budget.release(slot, status, retry_after)


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
            slot = await budget.aacquire() if budget is not None else None
            started = time.monotonic()
            try:
                async with session.request(
                    call.method, url, json=call.body, headers=settings.headers, timeout=timeout
                ) as response:
                    status, headers = response.status, response.headers
                    _release(budget, slot, status, headers)
                    limit = body_limit(status, headers, what=call.what)
                    body = await aread_capped(response, limit)
            except (TimeoutError, aiohttp.ClientError) as error:
                raise connection_error(error, what=call.what, creates=call.creates) from None
            finally:
                _release(budget, slot)  # no answer (nothing if it had one)
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
