"""
A call budget per process and API key: at most ``rate + burst`` calls to the API in any second,
shared by every wait on an event loop and every thread, queued first come first served, and paused
for everyone on that key when the API answers 429.

Hand-written, because no library did all of it: ``aiolimiter`` is async only, bound to one event
loop, and has no shared pause; ``pyrate-limiter`` serves threads and asyncio but lets waiters
retry in a loop (no FIFO order) and knows nothing of a 429. The budget is two small parts:

* :class:`CallSchedule`, the decisions: pure, no lock, no clock, no sleeping; every method takes
  ``now``. A generic cell rate algorithm (``rate`` per second, ``burst`` extra at once) hands out
  start times in order of asking; a window check keeps every one-second window *at the API* to
  ``max(1, floor(rate + burst))`` calls. A call reaches the API at some moment between being let
  through and its answer, so it counts in every window that moment could fall in: until its answer,
  or, if it is still unanswered then, until the end its caller names at the start (:data:`ARRIVAL`
  for a long poll the API holds; the attempt's time-out for any other call, which cannot reach the
  API later). Counting to the answer, not to the start, is what keeps the bound when calls that left
  evenly arrive bunched: a burst on new connections, or an event loop too busy to send on time.
* :class:`CallBudget`, the waiting: a thread lock around the schedule, and ``time.sleep`` or
  ``asyncio.sleep`` until the start time it handed out, on any thread or event loop.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

log = logging.getLogger(__name__)

#: The window the bound holds in, in seconds: the API's.
WINDOW = 1.0
#: Longest a long poll is taken to need to reach the API. A call the API may hold, still unanswered
#: this long after it was let through, is counted as having arrived by then; one answered sooner
#: counts until its answer. Held calls therefore take a place for ``ARRIVAL + WINDOW`` seconds: at
#: most ``limit / 1.5`` of them start per second, whatever the rate. Calls the API answers at once
#: count until their answer (a loaded event loop may send them late, and then bunched).
ARRIVAL = 0.5
#: First pause after a 429 that names no ``Retry-After``; it doubles with each 429 after a resume.
FIRST_PAUSE = 1.0
#: Longest pause after a 429 (the same cap as a call's own ``Retry-After``).
MAX_PAUSE = 60.0


class BudgetTimeout(TimeoutError):
    """A call could not start within the call budget before its deadline."""


class CallSchedule:
    """
    When each call may start: the decisions of a :class:`CallBudget`, with no clock and no waiting.

    Call :meth:`reserve` to join the queue; :meth:`start` when the reserved time has come (it says
    when to ask again if not yet); :meth:`cancel` if the caller gives up; :meth:`finished` when the
    call has its answer or failed. :meth:`rate_limited` and :meth:`succeeded` report how calls fared.

    :param rate: Calls per second in the long run.
    :param burst: Calls beyond the rate that may go at once after a quiet time.
    :param window: The sliding window of the bound, in seconds.
    """

    def __init__(self, rate: float, burst: int, window: float = WINDOW) -> None:
        if not rate > 0 or burst < 0:
            raise ValueError(f"A call budget needs rate > 0 and burst >= 0, not {rate!r} and {burst!r}.")
        self.rate = rate
        self.burst = burst
        self.window = window
        #: Most calls counted in any window.
        self.limit = max(1, math.floor(rate + burst))
        self._interval = 1.0 / rate
        self._tolerance = burst * self._interval
        self._theoretical = -math.inf  # the cell rate algorithm's "theoretical arrival time"
        self._next_ticket = 0
        self._pending: dict[int, float] = {}  # ticket -> reserved start, in ticket order
        self._in_flight: dict[int, float] = {}  # ticket -> the latest time it counts until, unanswered
        self._flying: list[float] = []  # those times (sorted), pruned as they leave the window
        self._answered: list[float] = []  # when recent calls ended (sorted): each counts until then
        self._started: deque[float] = deque(maxlen=self.limit)  # the latest starts (to re-plan after a 429)
        self._planned: deque[float] = deque(maxlen=self.limit)  # the latest start times handed out
        self.paused_until = -math.inf
        self._paused_at = -math.inf
        self._streak = 0

    def reserve(self, now: float) -> tuple[int, float]:
        """Join the queue: a ticket and the time at which its call may start."""
        ticket = self._next_ticket
        self._next_ticket += 1
        self._pending[ticket] = self._plan(now)
        return ticket, self._pending[ticket]

    def _plan(self, now: float) -> float:
        at = max(now, self.paused_until, self._theoretical - self._tolerance)
        if len(self._planned) == self.limit:  # the plan itself keeps the bound: waiters on time start in order
            at = max(at, self._planned[0] + self.window)
        self._theoretical = max(self._theoretical, at) + self._interval
        self._planned.append(at)
        return at

    def start(self, ticket: int, now: float, counts_for: float = ARRIVAL) -> float | None:
        """
        Start the call of ``ticket`` now if it may (``None``), else the time at which to ask again.

        A ticket may start at its reserved time if the window has room for it and for the tickets
        still queued ahead of it (they are due too: reserved times follow ticket order). Otherwise it
        is told when that room frees, at the latest: calls on their way may be answered sooner.

        :param counts_for: Seconds after its start until which the call counts if still unanswered:
            :data:`ARRIVAL` for a long poll the API holds, the attempt's time-out for any other.
        """
        at = self._pending[ticket]
        if at <= now:
            ahead = 0
            for queued in self._pending:
                if queued == ticket:
                    break
                ahead += 1
            at = self._room_at(now, ahead)
        if at > now:
            return at
        del self._pending[ticket]
        until = now + counts_for
        self._in_flight[ticket] = until
        bisect.insort(self._flying, until)
        self._started.append(now)
        return None

    def finished(self, ticket: int, now: float) -> bool:
        """
        The call of ``ticket`` got its answer (or failed) at ``now``: it reached the API by then, if at
        all. ``False`` if it had already finished.
        """
        until = self._in_flight.pop(ticket, None)
        if until is None:
            return False
        at = bisect.bisect_left(self._flying, until)
        if at < len(self._flying) and self._flying[at] == until:  # else it has left the window already
            del self._flying[at]
        bisect.insort(self._answered, min(now, until))
        return True

    def _room_at(self, now: float, ahead: int) -> float:
        """When the window has room for ``ahead`` calls and one more: ``now``, or when enough counted calls leave it."""
        horizon = now - self.window
        del self._answered[: bisect.bisect_right(self._answered, horizon)]
        del self._flying[: bisect.bisect_right(self._flying, horizon)]
        leaving = len(self._answered) + len(self._flying) + ahead - self.limit  # must leave first, less one
        if leaving < 0:
            return now
        counted = sorted(self._answered + self._flying)  # two sorted runs: a merge
        # With more queued ahead than the window holds, they have to start first: ask again after the window.
        return counted[min(leaving, len(counted) - 1)] + self.window if counted else now + self.window

    def cancel(self, ticket: int) -> None:
        """The caller of ``ticket`` gave up before starting (its place is left empty)."""
        self._pending.pop(ticket, None)

    def rate_limited(self, now: float, started: float, retry_after: float | None) -> float:
        """
        A call that started at ``started`` got a 429: pause every call not started yet until the
        ``Retry-After`` the API named (capped at :data:`MAX_PAUSE`), or, without one, for
        :data:`FIRST_PAUSE` doubling with each 429 after a resume. Calls that were already on the way
        when the pause began are part of the same episode: they may lengthen it, not double it.
        Returns the pause's end.
        """
        fresh = started >= self._paused_at
        if fresh:
            self._streak += 1
        if retry_after is not None:
            seconds = min(max(retry_after, 0.0), MAX_PAUSE)
        else:
            seconds = min(FIRST_PAUSE * 2 ** (self._streak - 1), MAX_PAUSE)
        until = now + seconds
        if until > self.paused_until:
            self.paused_until = until
            if fresh:
                self._paused_at = now
            # Re-plan the queue from the pause's end, in ticket order, without a burst: calm resumption.
            self._theoretical = until + self._tolerance
            self._planned = deque(self._started, maxlen=self.limit)
            for ticket in self._pending:
                self._pending[ticket] = self._plan(until)
        return self.paused_until

    def succeeded(self, started: float) -> None:
        """A call that started at ``started`` was not rate limited: a 429 after it starts a new streak."""
        if self._streak and started >= self._paused_at:
            self._streak = 0

    @property
    def waiting(self) -> int:
        """Calls queued and not started yet."""
        return len(self._pending)


class Slot(NamedTuple):
    """A call let through by a :class:`CallBudget`: hand it back to :meth:`CallBudget.release` when it ends."""

    ticket: int
    #: When the call started (the budget's clock).
    started: float


class CallBudget:
    """
    A :class:`CallSchedule` shared by threads and event loops: each caller waits for its own start time.

    :param rate: Calls per second in the long run.
    :param burst: Calls beyond the rate that may go at once.
    :param clock: Monotonic seconds (tests may replace it).
    """

    def __init__(self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.schedule = CallSchedule(rate, burst)
        self.clock = clock
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"CallBudget(rate={self.schedule.rate!r}, burst={self.schedule.burst!r})"

    def acquire(self, deadline: float | None = None, counts_for: float = ARRIVAL) -> Slot:
        """
        Block this thread until a call may start; the call's :class:`Slot`.

        :param deadline: UNIX time (the clock of a call's deadline) by which the call must start;
            past it, :class:`BudgetTimeout` is raised and the call leaves the queue.
        :param counts_for: Seconds after its start until which the call counts if still unanswered:
            :data:`ARRIVAL` for a long poll the API holds, the attempt's time-out for any other.
        """
        ticket, again, now = self._join(counts_for)
        try:
            while again is not None:
                time.sleep(self._pause(again, deadline))
                again, now = self._start(ticket, counts_for)
        except BaseException:
            self._leave(ticket)
            raise
        return Slot(ticket, now)

    async def aacquire(self, deadline: float | None = None, counts_for: float = ARRIVAL) -> Slot:
        """Async twin of :meth:`acquire`: only this task waits; the event loop runs on."""
        ticket, again, now = self._join(counts_for)
        try:
            while again is not None:
                await asyncio.sleep(self._pause(again, deadline))
                again, now = self._start(ticket, counts_for)
        except BaseException:  # cancelled, or past its deadline: leave the queue
            self._leave(ticket)
            raise
        return Slot(ticket, now)

    def _pause(self, again: float, deadline: float | None) -> float:
        """Seconds to sleep towards ``again`` (the budget's clock), never past ``deadline`` (then: BudgetTimeout)."""
        return sleep_before_asking(max(0.0, again - self.clock()), deadline)

    def _join(self, counts_for: float) -> tuple[int, float | None, float]:
        """Queue up: the ticket, ``None`` if started at once (else when to try), and the time."""
        with self._lock:
            now = self.clock()
            ticket, at = self.schedule.reserve(now)
            return ticket, (self.schedule.start(ticket, now, counts_for) if at <= now else at), now

    def _start(self, ticket: int, counts_for: float) -> tuple[float | None, float]:
        with self._lock:
            now = self.clock()
            return self.schedule.start(ticket, now, counts_for), now

    def _leave(self, ticket: int) -> None:
        with self._lock:
            self.schedule.cancel(ticket)

    def release(self, slot: Slot, status: int | None, retry_after: float | None = None) -> None:
        """
        The call of ``slot`` ended: answered with HTTP ``status``, or ``None`` if it got no answer.

        A 429 pauses every call on the budget (see :meth:`CallSchedule.rate_limited`), for
        ``retry_after`` seconds if the API named them. A slot released again is ignored.
        """
        with self._lock:
            now = self.clock()
            if not self.schedule.finished(slot.ticket, now):
                return
            if status == 429:
                until = self.schedule.rate_limited(now, slot.started, retry_after)
            elif status is not None:
                self.schedule.succeeded(slot.started)
        if status == 429:
            log.warning("The Luma API answered 429: every call on this key waits %.1f s.", max(0.0, until - now))


def sleep_before_asking(delay: float, deadline: float | None) -> float:
    """How long a waiter sleeps before asking again: ``delay``, cut at ``deadline`` (UNIX time); past it,
    :class:`BudgetTimeout`."""
    if deadline is None:
        return delay
    left = deadline - time.time()
    if left <= 0:
        raise BudgetTimeout("The call could not start within the call budget before its deadline.")
    return min(delay, left)


_BUDGETS: dict[tuple[str, str], CallBudget] = {}
_BUDGETS_LOCK = threading.Lock()
_WARNED: set[tuple[str, str]] = set()


def key_fingerprint(api_key: str) -> str:
    """A digest that tells keys apart without holding them (registries are keyed by it, never by a key)."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:32]


def call_budget(
    base_url: str, api_key: str, rate: float | None, burst: int | None, redis_conn_id: str | None = None
) -> CallBudget | None:
    """
    The process's budget for calls to ``base_url`` with ``api_key``; ``None`` without a rate.

    Every connection naming the same URL and key shares it; the first one to ask sets its rate,
    burst and Redis (another naming different ones is told so in the log). With ``redis_conn_id``,
    the budget is shared with every process using that Redis (:mod:`.shared_budget`).
    """
    if rate is None:
        return None
    burst = burst or 0
    key = (base_url, key_fingerprint(api_key))
    with _BUDGETS_LOCK:
        budget = _BUDGETS.get(key)
        if budget is None:
            if redis_conn_id:
                from airflow_provider_luma.hooks.shared_budget import SharedCallBudget

                budget = SharedCallBudget(rate, burst, redis_conn_id=redis_conn_id, fingerprint=key[1])
            else:
                budget = CallBudget(rate, burst)
            _BUDGETS[key] = budget
        elif (rate, burst, redis_conn_id or None) != (
            budget.schedule.rate,
            budget.schedule.burst,
            getattr(budget, "redis_conn_id", None),
        ) and key not in _WARNED:
            _WARNED.add(key)
            log.warning(
                "Luma connections to %s with one key set different call budgets: the first one, %s, applies to all.",
                base_url,
                budget,
            )
        return budget


def forget_budgets() -> None:
    """Drop every budget of this process (for tests)."""
    with _BUDGETS_LOCK:
        _BUDGETS.clear()
        _WARNED.clear()
