"""
HTTP calls to the API, sync (requests) and async (aiohttp): sessions, the call budget, retries, and
each attempt's total deadline. Reading answers and mapping errors is :mod:`.answers`'; what to call
is decided by plans (:mod:`.plans`), which this module's transports serve.

The one place that puts the API key on the wire, and so the one that takes it out of what comes
back (:func:`airflow_provider_luma.outcome.redact`). Every attempt ends by
:func:`attempt_deadline`: the call's own deadline (a wait's), and at most the connection's
``timeout`` after it started, however slowly the server sends; a budget's queue or 429 pause ends
there too (:class:`~airflow_provider_luma.hooks.budget.BudgetTimeout`).
"""

from __future__ import annotations

import http.cookiejar
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import replace
from functools import partial
from types import SimpleNamespace
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

from airflow_provider_luma import outcome
from airflow_provider_luma.errors import (
    MAYBE_CREATED_HINT,
    LumaAuthenticationError,
    LumaConfigurationError,
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
    never_sent_error,
    parse_json,
    read_capped,
    retry_after_seconds,
)
from airflow_provider_luma.hooks.budget import ARRIVAL, BudgetTimeout, CallBudget, Slot, call_budget
from airflow_provider_luma.hooks.deadlines import GuardedAdapter, Watchdog
from airflow_provider_luma.hooks.plans import Answer, Call
from airflow_provider_luma.hooks.sessions import _new_session, join_shared_session, leave_shared_session, proxy_for
from airflow_provider_luma.hooks.settings import LumaSettings

T = TypeVar("T")
MAX_RETRY_AFTER = 60.0
#: Back-off between retries of one call: 0.5 s doubling up to 10 s, plus up to 0.5 s of jitter.
RETRY_BACKOFF = wait_exponential(multiplier=0.5, max=10.0) + wait_random(0, 0.5)
#: Statuses proving the server did not act on a request, so that a create may be sent again.
_NOT_ACTED_ON = frozenset({408, 429, 503})
#: Connections a worker keeps per host: the calls of one poll go at once, a thread each.
POOL_SIZE = 32


def attempt_deadline(call: Call, settings: LumaSettings, now: float | None = None) -> float:
    """When one attempt of ``call`` must be over (UNIX time): its deadline, at most ``timeout`` from ``now``."""
    ends = (time.time() if now is None else now) + settings.timeout
    return ends if call.deadline is None else min(ends, call.deadline)


def _unsendable_key(settings: LumaSettings) -> LumaConfigurationError | None:
    """The error for a key no HTTP header can carry (a line break, a control character), before any call."""
    key = settings.api_key
    if key.isprintable() and key == key.strip():
        return None
    return LumaConfigurationError(
        f"The API key of connection {settings.conn_id!r} holds a line break or another character an HTTP header "
        "cannot carry, so no call was sent (nothing was created): fix the key in the connection's password."
    )


def _retry_policy(settings: LumaSettings, call: Call) -> dict[str, Any]:
    """The one retry policy of every API call: bounded, exponential, honours Retry-After, stops at the deadline."""
    deadline = call.deadline
    retries = _retries(settings, call)

    def stop(state: RetryCallState) -> bool:
        if stop_after_attempt(retries + 1)(state):
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


def _retries(settings: LumaSettings, call: Call) -> int:
    return settings.max_retries if call.max_retries is None else call.max_retries


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
        outcome.remember_secret(settings.api_key)
        self.session = requests.Session()
        self.session.headers.update(settings.headers)
        # The API needs no cookies: keep none between calls (nothing set by one answer rides the next).
        self.session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
        # Connections that report their sockets, so that each attempt's deadline can end it (see .deadlines).
        for prefix in ("http://", "https://"):
            self.session.mount(prefix, GuardedAdapter(pool_maxsize=POOL_SIZE))

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
        outcome.remember_secret(fresh.api_key)
        self.session.headers.update(self.settings.headers)
        self.budget = _budget(self.settings)
        return True

    def _request(self, call: Call) -> Answer:
        settings = self.settings
        unsendable = _unsendable_key(settings)
        if unsendable is not None:
            raise unsendable
        url = settings.base_url + call.path
        budget = self.budget

        def attempt() -> Answer:
            slot = _acquire(budget, call, settings)
            ends = attempt_deadline(call, settings)
            started = time.monotonic()
            with Watchdog(ends) as watchdog:
                try:
                    left = watchdog.remaining
                    with self.session.request(
                        call.method,
                        url,
                        params=call.params,
                        json=call.body,
                        timeout=(min(settings.connect_timeout, left), min(settings.timeout, left)),
                        stream=True,  # read with a cap below, never whole
                    ) as response:
                        status, headers = response.status_code, response.headers
                        _release(budget, slot, status, headers)
                        limit = body_limit(status, headers, what=call.what)
                        body = read_capped(response, limit, deadline=ends)
                except Exception as error:
                    # The watchdog closes the sockets at the deadline: whatever the read then raised, it timed out.
                    if (
                        not isinstance(error, (requests.exceptions.RequestException, TimeoutError))
                        and not watchdog.fired
                    ):
                        raise
                    raise _failed(error, call, settings, sent=watchdog.sent, timed_out=watchdog.fired) from None
                finally:
                    _release(budget, slot)  # no answer (nothing if it had one)
            text = answer_text(status, body, limit, what=call.what)
            return _answer(call, settings, status, text, headers, started)

        try:
            return attempt()
        except LumaError as error:
            if not _retryable(call)(error) or _retries(settings, call) == 0:
                raise
            again = _first_failure(error, attempt)
        for retry in Retrying(**_retry_policy(settings, call)):
            with retry:
                return again()
        raise AssertionError("unreachable: tenacity reraises the last error")


def _acquire(budget: CallBudget | None, call: Call, settings: LumaSettings) -> Slot | None:
    """Wait for the budget to let ``call`` start, at most until its deadline (a create: its ``timeout``)."""
    if budget is None:
        return None
    try:
        return budget.acquire(deadline=_queue_deadline(call, settings), counts_for=_counts_for(call, settings))
    except BudgetTimeout:
        raise _budget_timeout(call) from None


async def _aacquire(budget: CallBudget | None, call: Call, settings: LumaSettings) -> Slot | None:
    """Async twin of :func:`_acquire`."""
    if budget is None:
        return None
    try:
        return await budget.aacquire(deadline=_queue_deadline(call, settings), counts_for=_counts_for(call, settings))
    except BudgetTimeout:
        raise _budget_timeout(call) from None


def _queue_deadline(call: Call, settings: LumaSettings) -> float:
    """
    How long ``call`` may queue for the budget: until the wait's deadline, else ``timeout``. Not one
    attempt's ``timeout`` for a wait's call: with more waits than the budget serves in ``timeout``,
    every call would leave the queue unserved, each leaving its planned place empty, and no wait
    would ever poll again (seen: 120 waits on a budget of 5 calls/s and a 10 s ``timeout``).
    """
    return call.deadline if call.deadline is not None else time.time() + settings.timeout


def _counts_for(call: Call, settings: LumaSettings) -> float:
    """How long the budget counts ``call`` while unanswered: a held poll briefly, any other for its whole attempt."""
    return ARRIVAL if call.held else max(ARRIVAL, settings.timeout)


def _budget_timeout(call: Call) -> LumaConnectionError:
    return never_sent_error(
        f"The call budget (max_calls_per_second) let no call start in time while {call.what}", creates=call.creates
    )


def _failed(
    error: BaseException, call: Call, settings: LumaSettings, *, sent: bool | None, timed_out: bool = False
) -> LumaError:
    """The error of an exchange that failed (never sent, refused locally, timed out or dropped)."""
    return connection_error(
        error,
        what=call.what,
        creates=call.creates,
        sent=sent,
        timed_out=timed_out,
        conn_id=settings.conn_id,
        host=outcome.safe_url(settings.base_url),
    )


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
        outcome.remember_secret(settings.api_key)
        self._session: aiohttp.ClientSession | None = None
        # A wait asks the same thing poll after poll: its URL (query included) is built once.
        self._urls: dict[tuple[str, Any], URL] = {}

    def _new_timeout(self, left: float) -> aiohttp.ClientTimeout:
        # total: the whole exchange, the body's reading included (a drip never outlasts it).
        return aiohttp.ClientTimeout(
            total=left, connect=min(self.settings.connect_timeout, left), sock_read=min(self.settings.timeout, left)
        )

    @property
    def is_open(self) -> bool:
        """Whether this transport holds the loop's shared session."""
        return self._session is not None

    async def open(self) -> None:
        """Join the event loop's shared session (created on first use)."""
        if self._session is not None:
            raise RuntimeError("This LumaHook is already open: use one `async with hook:` at a time.")
        self._session = join_shared_session()

    async def close(self) -> None:
        """Leave the shared session; the last user closes it."""
        session, self._session = self._session, None
        if session is not None:
            await leave_shared_session(session)

    def arequest(self, call: Call) -> Coroutine[Any, Any, Answer]:
        """Async twin of :meth:`SyncTransport.request` (not ``async def``: see the comment)."""
        # The exchange's own coroutine, not one more around it: a held poll keeps one frame less alive.
        return self._arequest(call, may_rotate=True)

    async def _arotated(self) -> bool:
        fresh = await self.refresh() if self.refresh is not None else None
        if fresh is None or fresh.api_key == self.settings.api_key:
            return False
        self.settings = replace(self.settings, api_key=fresh.api_key)
        outcome.remember_secret(fresh.api_key)
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

    async def _arequest(self, call: Call, *, may_rotate: bool) -> Answer:
        """``call`` with its retries; a 401 once more with the connection's new key, if it has one."""
        settings = self.settings
        unsendable = _unsendable_key(settings)
        if unsendable is not None:
            raise unsendable
        url = self._url(call)
        own_session = self._session is None
        session = _new_session() if own_session else self._session
        assert session is not None
        try:
            try:
                return await self._attempt(call, session, url)
            except LumaError as error:
                if not _retryable(call)(error) or _retries(settings, call) == 0:
                    raise
                again = _first_failure(error, partial(self._attempt, call, session, url))
            async for retry in AsyncRetrying(**_retry_policy(settings, call)):
                with retry:
                    return await again()
            raise AssertionError("unreachable: tenacity reraises the last error")
        except LumaAuthenticationError:
            if not may_rotate or not await self._arotated():
                raise
        finally:
            if own_session:
                await session.close()
        return await self._arequest(call, may_rotate=False)

    async def _attempt(self, call: Call, session: aiohttp.ClientSession, url: URL) -> Answer:
        """One exchange of ``call`` (a method, not a closure per call: a held poll keeps it alive)."""
        settings, budget = self.settings, self.budget
        slot = await _aacquire(budget, call, settings)
        timeout = self._new_timeout(max(0.001, attempt_deadline(call, settings) - time.time()))
        trace = SimpleNamespace(sent=False)
        started = time.monotonic()
        try:
            async with session.request(
                call.method,
                url,
                json=call.body,
                headers=settings.headers,
                timeout=timeout,
                proxy=proxy_for(session, url),
                trace_request_ctx=trace,
            ) as response:
                status, headers = response.status, response.headers
                _release(budget, slot, status, headers)
                limit = body_limit(status, headers, what=call.what)
                body = await aread_capped(response, limit)
        except (TimeoutError, aiohttp.ClientError, ValueError) as error:
            # ValueError: aiohttp refusing a header or URL before sending anything.
            if isinstance(error, ValueError) and trace.sent:
                raise
            raise _failed(error, call, settings, sent=trace.sent, timed_out=isinstance(error, TimeoutError)) from None
        finally:
            _release(budget, slot)  # no answer (nothing if it had one)
        text = answer_text(status, body, limit, what=call.what)
        return _answer(call, settings, status, text, headers, started)


def _answer(
    call: Call, settings: LumaSettings, status: int, text: str, headers: Mapping[str, str], started: float
) -> Answer:
    if status >= 400:
        error = error_for_response(
            status, text, headers, what=call.what, conn_id=settings.conn_id, creates=call.creates
        )
        raise _redacted(error, settings)
    if call.method == "DELETE" and not text.strip():
        return Answer(None, time.monotonic() - started)  # Luma's DELETE answers 204, no body
    try:
        payload = parse_json(text, what=call.what)
        result = call.parse(payload) if call.parse else payload
    except Exception as error:
        raise _unreadable(error, call) from None
    return Answer(result, time.monotonic() - started)


def _redacted(error: LumaError, settings: LumaSettings) -> LumaError:
    """``error`` without the connection's key, should the server have quoted it back."""
    error.message = outcome.redact(error.message, (settings.api_key,))
    error.args = (error.message,)
    if error.server_message is not None:
        error.server_message = outcome.redact(error.server_message, (settings.api_key,))
    return error


def _unreadable(error: Exception, call: Call) -> LumaError:
    """The error for a successful answer that cannot be read; for a create, the generation may exist."""
    if not isinstance(error, LumaError):
        # A parser tripping over an answer it did not expect is the answer's fault, not a crash.
        error = LumaResponseError(
            f"The Luma API answered {call.what} with something this provider cannot read "
            f"({type(error).__name__}: {outcome.message(str(error), 200)})."
        )
    if call.creates and not error.maybe_created:
        # A 2xx create answer (an empty 201, a cut body, a proxy's page): the server may have acted.
        error.message = f"{error.message} {MAYBE_CREATED_HINT}"
        error.args = (error.message,)
        error.maybe_created = True
    return error
