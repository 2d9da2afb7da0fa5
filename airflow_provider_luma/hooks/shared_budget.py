"""
One call budget per API key across every process: the budget of :mod:`.budget`, kept in the
deployment's Redis (the connection extra ``budget_redis_conn_id``).

Each triggerer's waits and each worker's calls with one key then share one ``rate + burst`` with the
same semantics as the in-process budget: no one-second window holds more than
``max(1, floor(rate + burst))`` calls, each counted until its answer (or, still unanswered, until
the end its caller names: :data:`~.budget.ARRIVAL` for a held long poll); tickets are served first
come first served across processes; a 429 pauses every process. The decisions are
:class:`~.budget.CallSchedule`'s, written as one Lua
script (``shared_budget.lua``) that Redis runs atomically on its own clock, so processes on
different hosts need no synchronised clocks.

Not the ``limits`` library: its Redis moving window records call *starts* only (from the caller's
clock), answers "allowed or not" with no queue, and has neither an in-flight count nor a shared
pause, so it cannot keep a call counted until its answer, serve waiters in order, or pause everyone
after a 429.

When Redis cannot be reached (or its connection read), each process says so once and falls back to
its own in-process budget, trying Redis again every :data:`REDIS_RETRY` seconds: waits go on.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import Any

from airflow_provider_luma.hooks.budget import (
    ARRIVAL,
    FIRST_PAUSE,
    MAX_PAUSE,
    WINDOW,
    CallBudget,
    Slot,
    sleep_before_asking,
)
from airflow_provider_luma.hooks.redis_clients import (
    GatedScript,
    async_client,
    redis_errors,
    redis_options,
    sync_client,
)

log = logging.getLogger(__name__)

#: Seconds a process keeps its own budget after Redis failed it, before trying Redis again.
REDIS_RETRY = 30.0
#: A queued ticket whose reserved time passed this long ago, and whose waiter has not asked since, is
#: taken to belong to a killed process and leaves the queue (else it would hold everyone behind it).
STALE = 10.0
#: Seconds Redis keeps a key's budget after its last use.
TTL = 86400
#: The keys of one budget, each named ``luma:budget:{<key fingerprint>}:<name>`` (never the key itself).
KEY_NAMES = ("state", "queue", "reserved", "seen", "flight", "answered", "starts", "plans")
SCRIPT = resources.files(__package__).joinpath("shared_budget.lua").read_text()

Reply = tuple[int, float | None, float]  # ticket, seconds to wait (None: started), start on Redis's clock


class SharedSlot(Slot):
    """A call let through by the shared budget in Redis (``started`` is on Redis's clock)."""

    __slots__ = ()


class SharedCallBudget(CallBudget):
    """
    A call budget for one API key, shared in Redis by every process whose connection names it.

    Its ``schedule`` (inherited) is the in-process budget it falls back to while Redis is unreachable.

    :param rate: Calls per second in the long run, for every process together.
    :param burst: Calls beyond the rate that may go at once.
    :param redis_conn_id: The Airflow connection (type ``redis``) of the Redis holding the budget.
    :param fingerprint: :func:`~.budget.key_fingerprint` of the API key: the budget's name in Redis.
    :param clock: Monotonic seconds of the in-process fallback (tests may replace it).
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        redis_conn_id: str,
        fingerprint: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(rate, burst, clock=clock)
        self.redis_conn_id = redis_conn_id
        self.keys = [f"luma:budget:{{{fingerprint}}}:{name}" for name in KEY_NAMES]
        interval = 1.0 / rate  # as CallSchedule computes them, to the last bit
        limits = (self.schedule.limit, interval, burst * interval, WINDOW, STALE, TTL, FIRST_PAUSE, MAX_PAUSE)
        self._limits = [*(repr(value) for value in limits), ""]  # "": Redis's clock
        self._options: dict[str, Any] | None = None
        self._script: Any = None  # the sync client's Script
        self._script_outages = 0  # the outages before it was built
        self._ascripts: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()
        self._asetup: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[Any]] = (
            weakref.WeakKeyDictionary()
        )
        self._outstanding: set[int] = set()  # tickets of slots not released yet
        self._tasks: set[asyncio.Task[Any]] = set()
        self._state = threading.Lock()
        self._down_until = -math.inf  # while Redis failed us: the in-process budget until then
        self._warned = False
        self.outages = 0  # how often Redis failed us

    def __repr__(self) -> str:
        return (
            f"SharedCallBudget(rate={self.schedule.rate!r}, burst={self.schedule.burst!r}, "
            f"redis_conn_id={self.redis_conn_id!r})"
        )

    # -- taking a slot ------------------------------------------------------------------------------

    def acquire(self, deadline: float | None = None, counts_for: float = ARRIVAL) -> Slot:
        """
        Block this thread until a call may start; the call's :class:`~.budget.Slot`.

        :param deadline: UNIX time by which the call must start, else :class:`~.budget.BudgetTimeout`.
        :param counts_for: Seconds after its start until which the call counts if still unanswered
            (see :meth:`.CallBudget.acquire`).
        """
        script = self._sync_script()
        if script is not None:
            try:
                ticket, started = _wait(
                    lambda ticket: self._ask(script, ticket, counts_for), self._leaver(script), deadline
                )
            except redis_errors() as error:
                self._lost(error)
            else:
                self._outstanding.add(ticket)
                return SharedSlot(ticket, started)
        ticket, started = _wait(lambda ticket: self._ask_here(ticket, counts_for), self._leave, deadline)
        return Slot(ticket, started)

    async def aacquire(self, deadline: float | None = None, counts_for: float = ARRIVAL) -> Slot:
        """Async twin of :meth:`acquire`: only this task waits; the event loop runs on."""
        script = await self._async_script()
        if script is not None:
            try:
                ticket, started = await _await(
                    lambda ticket: self._aask(script, ticket, counts_for), self._aleaver(script), deadline
                )
            except redis_errors() as error:
                self._lost(error)
            else:
                self._outstanding.add(ticket)
                return SharedSlot(ticket, started)

        async def ask_here(ticket: int | None) -> Reply:
            return self._ask_here(ticket, counts_for)

        async def leave_here(ticket: int) -> None:
            self._leave(ticket)

        ticket, started = await _await(ask_here, leave_here, deadline)
        return Slot(ticket, started)

    def _ask(self, script: Any, ticket: int | None, counts_for: float) -> Reply:
        outages = self.outages
        reply = script(keys=self.keys, args=self._args(ticket, counts_for))
        self._back(outages)
        return _reply(reply)

    async def _aask(self, script: Any, ticket: int | None, counts_for: float) -> Reply:
        outages = self.outages
        reply = await script(keys=self.keys, args=self._args(ticket, counts_for))
        self._back(outages)
        return _reply(reply)

    def _args(self, ticket: int | None, counts_for: float) -> list[Any]:
        if ticket is None:
            return ["acquire", *self._limits, repr(counts_for)]
        return ["start", *self._limits, ticket, repr(counts_for)]

    def _ask_here(self, ticket: int | None, counts_for: float) -> Reply:
        """The in-process budget's step: join its queue, or ask again."""
        if ticket is None:
            ticket, again, now = self._join(counts_for)
        else:
            again, now = self._start(ticket, counts_for)
        return ticket, (None if again is None else max(0.0, again - now)), now

    def _leaver(self, script: Any) -> Callable[[int], None]:
        def leave(ticket: int) -> None:
            try:
                script(keys=self.keys, args=["cancel", *self._limits, ticket])
            except Exception as error:  # the ticket goes stale and leaves the queue by itself
                log.debug("Could not leave the shared call budget's queue: %s", type(error).__name__)

        return leave

    def _aleaver(self, script: Any) -> Callable[[int], Awaitable[None]]:
        async def leave(ticket: int) -> None:
            # Awaited even by a cancelled wait: a task spawned now would not run if the loop is closing.
            try:
                await script(keys=self.keys, args=["cancel", *self._limits, ticket])
            except Exception as error:  # the ticket goes stale and leaves the queue by itself
                log.debug("Could not leave the shared call budget's queue: %s", type(error).__name__)

        return leave

    # -- handing it back ----------------------------------------------------------------------------

    def release(self, slot: Slot, status: int | None, retry_after: float | None = None) -> None:
        """
        The call of ``slot`` ended: answered with HTTP ``status``, or ``None`` if it got no answer.

        A 429 pauses every call on the key in every process sharing the budget. On an event loop the
        news goes to Redis in a task of its own (the caller does not wait for Redis); a slot released
        again is ignored.
        """
        if not isinstance(slot, SharedSlot):
            super().release(slot, status, retry_after)
            return
        try:
            self._outstanding.remove(slot.ticket)
        except KeyError:
            return
        args = [
            "finish",
            *self._limits,
            slot.ticket,
            repr(slot.started),
            "" if status is None else status,
            "" if retry_after is None else repr(retry_after),
        ]
        running = _running_loop()
        if running is not None:  # never a blocking call on an event loop
            ascript = self._ascripts.get(running)
            if ascript is not None:
                self._spawn(self._afinish(ascript, args))
            return  # else Redis failed meanwhile: the call counts there until the end named at its start
        script = self._sync_script()
        if script is None:  # Redis failed meanwhile: the call counts there until the end named at its start
            return
        try:
            self._told(script(keys=self.keys, args=args))
        except redis_errors() as error:
            self._lost(error)

    async def _afinish(self, script: Any, args: Sequence[Any]) -> None:
        try:
            self._told(await script(keys=self.keys, args=args))
        except redis_errors() as error:
            self._lost(error)

    def _told(self, reply: Sequence[Any]) -> None:
        if int(reply[0]) == 1:
            log.warning(
                "The Luma API answered 429: every call on this key, in every process sharing its budget, waits %.1f s.",
                max(0.0, float(reply[1])),
            )

    def _spawn(self, work: Awaitable[Any]) -> None:
        """Run ``work`` in a task of its own on the running loop, kept until done."""

        async def run() -> None:
            try:
                await work
            except Exception as error:
                log.debug("The shared call budget could not tell Redis: %s", type(error).__name__)

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- Redis: set-up, failure and return ----------------------------------------------------------

    def _usable(self) -> bool:
        """Whether to ask Redis: yes unless it failed us lately; every :data:`REDIS_RETRY` s, one caller tries."""
        with self._state:
            if self._down_until == -math.inf:
                return True
            now = self.clock()
            if now < self._down_until:
                return False
            self._down_until = now + REDIS_RETRY  # the others keep to their own budget while this one tries
            return True

    def _sync_script(self) -> Any:
        if self._script is not None and self._down_until == -math.inf:
            return self._script
        if not self._usable():
            return None
        try:
            with self._state:
                if self._script is None or self._script_outages != self.outages:
                    # First use, or the client predates Redis's last failure: built anew from the
                    # connection as it is now (it may have been fixed).
                    old, self._script = self._script, None
                    self._script = sync_client(self._read_options()).register_script(SCRIPT)
                    self._script_outages = self.outages
                    if old is not None:
                        old.registered_client.close()
                return self._script
        except Exception as error:  # no redis-py, no such connection, a bad one: like an unreachable Redis
            self._lost(error)
            return None

    def _read_options(self) -> dict[str, Any]:
        if self._options is None:
            from airflow.providers.common.compat.sdk import BaseHook

            conn = BaseHook.get_connection(self.redis_conn_id)
            self._options = redis_options(conn, conn.extra_dejson)
        return self._options

    async def _async_script(self) -> Any:
        loop = asyncio.get_running_loop()
        script = self._ascripts.get(loop)
        if script is not None and self._down_until == -math.inf:
            return script
        if not self._usable():
            return None
        if script is not None and script.outages == self.outages:
            return script
        setup = self._asetup.get(loop)
        if setup is None:  # one set-up per loop, however many waits ask at once
            setup = self._asetup[loop] = loop.create_task(self._anew_script())
        try:
            return await asyncio.shield(setup)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            self._lost(error)
            return None
        finally:
            if setup.done():
                self._asetup.pop(loop, None)

    async def _anew_script(self) -> Any:
        if self._options is None:
            from airflow.providers.common.compat.connection import get_async_connection, get_async_extra_dejson

            conn = await get_async_connection(self.redis_conn_id)  # never blocks the event loop
            self._options = redis_options(conn, await get_async_extra_dejson(conn))
        loop = asyncio.get_running_loop()
        old = self._ascripts.get(loop)
        script = self._ascripts[loop] = GatedScript(async_client(self._options), SCRIPT, lambda: self.outages)
        if old is not None:  # it predates Redis's last failure: built anew from the connection as it is now
            old.close()
        return script

    def _lost(self, error: BaseException) -> None:
        """Redis failed us: the in-process budget for :data:`REDIS_RETRY` s; said once per outage."""
        with self._state:
            self._down_until = self.clock() + REDIS_RETRY
            self.outages += 1
            self._options = None  # clients are built anew from the connection as it is then
            first, self._warned = not self._warned, True
        if first:
            if isinstance(error, ImportError):
                error = ImportError("redis-py is not installed: pip install 'airflow-provider-luma[redis]'")
            log.warning(
                "The shared call budget's Redis (connection %r) cannot be used (%s: %s): each process keeps "
                "its own budget of %s calls/s for this key meanwhile, and tries Redis again every %.0f s.",
                self.redis_conn_id,
                type(error).__name__,
                str(error)[:200],
                self.schedule.rate,
                REDIS_RETRY,
            )

    def _back(self, outages: int) -> None:
        """A call that began after Redis last failed got its answer: Redis is back."""
        if self._down_until == -math.inf or outages != self.outages:  # a call from before the failure
            return
        with self._state:
            self._down_until, self._warned = -math.inf, False
        log.info("The shared call budget's Redis (connection %r) answers again.", self.redis_conn_id)


# -- the waiting, for either budget ----------------------------------------------------------------


def _wait(
    ask: Callable[[int | None], Reply], leave: Callable[[int], None], deadline: float | None
) -> tuple[int, float]:
    """Ask until a call may start, sleeping as told in between; leave the queue on any error."""
    ticket, delay, started = ask(None)
    try:
        while delay is not None:
            time.sleep(sleep_before_asking(delay, deadline))
            ticket, delay, started = ask(ticket)
    except BaseException:
        leave(ticket)
        raise
    return ticket, started


async def _await(
    ask: Callable[[int | None], Awaitable[Reply]], leave: Callable[[int], Awaitable[None]], deadline: float | None
) -> tuple[int, float]:
    """Async twin of :func:`_wait`."""
    ticket, delay, started = await ask(None)
    try:
        while delay is not None:
            await asyncio.sleep(sleep_before_asking(delay, deadline))
            ticket, delay, started = await ask(ticket)
    except BaseException:
        await leave(ticket)
        raise
    return ticket, started


def _reply(reply: Sequence[Any]) -> Reply:
    waits = int(reply[0]) == 1
    value = float(reply[2])
    return int(reply[1]), (value if waits else None), (math.nan if waits else value)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
