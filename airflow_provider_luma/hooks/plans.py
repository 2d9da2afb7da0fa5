"""
Plans of calls, and the drivers that run them.

What to call is decided as *plans*: generators that yield a :class:`Call`, are sent back its
:class:`Answer` (or have the call's :class:`~airflow_provider_luma.errors.LumaError` thrown in), and
return their result. :func:`run_plan` and :func:`arun_plan` drive one plan over either transport
(:mod:`.transport`), so every decision is written once; :func:`run_plans` and :func:`arun_plans`
drive several at once (threads in a worker, tasks on an event loop), as a poll of several chunks
needs. A plan does no I/O and never sleeps: tests step it with scripted answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from airflow_provider_luma.errors import LumaError

T = TypeVar("T")


@dataclass(frozen=True)
class Call:
    """
    One HTTP call to the API.

    :param method: ``GET``, ``POST`` or ``DELETE`` (Luma's cancel).
    :param path: Path below the connection's base URL.
    :param what: What the call does, for messages ("fetching generation X").
    :param params: Query parameters.
    :param body: JSON body.
    :param deadline: UNIX time by which the call, with its retries, gives up (each attempt also ends
        within the connection's ``timeout``).
    :param parse: Turns the JSON into the result, inside the retried attempt: an answer that cannot
        be read (a transient :class:`~airflow_provider_luma.errors.LumaResponseError`) is asked for
        again like any other glitch.
    :param max_retries: Retries of this call instead of the connection's ``max_retries`` (``0``: one
        attempt); ``None``: the connection's.
    :param held: Whether the API may hold the call (a long poll): the call budget then counts it, while
        unanswered, only :data:`~.budget.ARRIVAL` after its start, not until its answer.
    """

    method: str
    path: str
    what: str
    params: Any = None
    body: Mapping[str, Any] | None = None
    deadline: float | None = None
    parse: Callable[[Any], Any] | None = None
    max_retries: int | None = None
    held: bool = False

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


class SyncCaller(Protocol):
    """What :func:`run_plan` needs of a transport."""

    def request(self, call: Call) -> Answer:
        """Make the call; its answer, or raise its :class:`LumaError`."""
        ...


class AsyncCaller(Protocol):
    """What :func:`arun_plan` needs of a transport."""

    def arequest(self, call: Call) -> Awaitable[Answer]:
        """Async twin of :meth:`SyncCaller.request`."""
        ...


class _Done(Exception):
    """The plan returned ``value``."""

    def __init__(self, value: Any) -> None:
        self.value = value


def next_call(plan: Plan[Any], reply: Answer | LumaError | None) -> Call:
    """Hand ``reply`` to the plan; its next call, or :class:`_Done` with its result."""
    try:
        return plan.throw(reply) if isinstance(reply, LumaError) else plan.send(reply)  # type: ignore[arg-type]
    except StopIteration as done:
        raise _Done(done.value) from None


def run_plan(transport: SyncCaller, plan: Plan[T]) -> T:
    """Drive ``plan`` in this thread: each call it yields is made, its answer or error sent back."""
    reply: Answer | LumaError | None = None
    try:
        while call := next_call(plan, reply):
            try:
                reply = transport.request(call)
            except LumaError as error:
                reply = error
    except _Done as done:
        return done.value
    raise AssertionError("unreachable: a plan ends by returning")


async def arun_plan(transport: AsyncCaller, plan: Plan[T]) -> T:
    """Async twin of :func:`run_plan`."""
    reply: Answer | LumaError | None = None
    try:
        while call := next_call(plan, reply):
            try:
                reply = await transport.arequest(call)
            except LumaError as error:
                reply = error
    except _Done as done:
        return done.value
    raise AssertionError("unreachable: a plan ends by returning")


def run_plans(transport: SyncCaller, plans: Sequence[Plan[T]]) -> list[T]:
    """
    Drive ``plans`` at once, one thread each (one plan: in this thread); their results in order.
    The first error is raised once all have ended (a thread cannot be stopped; each call has a deadline).
    """
    if len(plans) == 1:
        return [run_plan(transport, plans[0])]
    with ThreadPoolExecutor(max_workers=len(plans), thread_name_prefix="luma-call") as pool:
        futures = [pool.submit(run_plan, transport, plan) for plan in plans]
        return [future.result() for future in futures]


async def arun_plans(transport: AsyncCaller, plans: Sequence[Plan[T]]) -> list[T]:
    """Async twin of :func:`run_plans`: one task each; when one fails (or the caller is cancelled), the others stop."""
    if len(plans) == 1:
        return [await arun_plan(transport, plans[0])]
    return await gather(arun_plan(transport, plan) for plan in plans)


def flattened(answers: Iterable[list[T]]) -> list[T]:
    """The items of several plans' answers (each a list), in order."""
    return [item for answer in answers for item in answer]


async def aflattened(answers: Awaitable[Iterable[list[T]]]) -> list[T]:
    """Async twin of :func:`flattened`: of answers still to come."""
    return flattened(await answers)


async def gather(calls: Iterable[Awaitable[T]]) -> list[T]:
    """Run ``calls`` concurrently; when one fails (or the caller is cancelled), stop the others with it."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
