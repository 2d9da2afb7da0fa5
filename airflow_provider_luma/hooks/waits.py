"""
Drivers of a :class:`~airflow_provider_luma.waiting.Wait`: they make the polls its loops ask for and
sleep the pauses they ask for, in a thread (sync) or on an event loop (async). The decisions are
the loops' own (:mod:`airflow_provider_luma.waiting`); a driver only does what it is told.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from airflow_provider_luma.errors import LumaError
from airflow_provider_luma.models import Generation
from airflow_provider_luma.waiting import Check, Finished, Poll, Sleep, Step, Wait, WaitLoop

PollFunction = Callable[[Poll], list[Generation]]
AsyncPollFunction = Callable[[Poll], Awaitable[list[Generation]]]


def _after_poll(loop: WaitLoop, poll: PollFunction, step: Poll) -> Step:
    started = time.monotonic()
    try:
        answer: list[Generation] | LumaError = poll(step)
    except LumaError as error:
        answer = error
    return loop.after_poll(answer, time.monotonic() - started)


def run_wait(poll: PollFunction, wait: Wait) -> Finished:
    """Drive ``wait`` in this thread (one thread per endpoint family when it spans both) until it finishes."""
    if len(wait.loops) == 1:
        return wait.merge([_run_loop(poll, wait.loops[0], threading.Event())])
    stop = threading.Event()

    def drive(loop: WaitLoop) -> Finished:
        finished = _run_loop(poll, loop, stop)
        if finished.status != "success":
            stop.set()  # one family's failure ends the whole wait
        return finished

    with ThreadPoolExecutor(max_workers=len(wait.loops), thread_name_prefix="luma-wait") as pool:
        results = list(pool.map(drive, wait.loops))
    return wait.merge(results)


def _run_loop(poll: PollFunction, loop: WaitLoop, stop: threading.Event) -> Finished:
    step = loop.first_step()
    while not isinstance(step, Finished):
        if stop.is_set():
            return Finished("success", "stopped: another part of the wait ended it")
        if isinstance(step, Sleep):
            stop.wait(step.seconds)
            step = loop.after_sleep()
        else:
            step = _after_poll(loop, poll, step)
    return step


async def arun_wait(apoll: AsyncPollFunction, wait: Wait) -> Finished:
    """Drive ``wait`` on the running event loop until it finishes; the families side by side."""
    if len(wait.loops) == 1:  # the usual wait: no task, no queue of its own while it is held
        return wait.merge([await _arun_loop(apoll, wait.loops[0])])
    tasks = [asyncio.ensure_future(_arun_loop(apoll, loop)) for loop in wait.loops]
    results: list[Finished] = []
    try:
        for next_done in asyncio.as_completed(tasks):
            finished = await next_done
            results.append(finished)
            if finished.status != "success":
                break  # one family's failure ends the whole wait
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return wait.merge(results)


async def _arun_loop(apoll: AsyncPollFunction, loop: WaitLoop) -> Finished:
    # _after_poll's async twin is written inline: a held wait keeps one coroutine frame less alive.
    step = loop.first_step()
    while not isinstance(step, Finished):
        if isinstance(step, Sleep):
            await asyncio.sleep(step.seconds)
            step = loop.after_sleep()
            continue
        started = time.monotonic()
        try:
            answer: list[Generation] | LumaError = await apoll(step)
        except LumaError as error:
            answer = error
        step = loop.after_poll(answer, time.monotonic() - started)
    return step


def check_once(
    poll: PollFunction, wait: Wait, *, hold: bool, deadline: float | None = None, retries: int | None = None
) -> Finished | None:
    """
    One poll per family (:meth:`Wait.check`), judged by the wait's own rules: how the wait ended,
    or ``None`` while it goes on.
    """
    checks = wait.check(hold=hold, deadline=deadline, retries=retries)
    steps: list[Step] = []
    for index, (loop, step) in enumerate(checks):
        steps.append(_after_poll(loop, poll, step))
        finished = wait.after_check(steps, complete=index == len(checks) - 1)
        if finished is not None:
            return finished
    return None


def run_poke(poll: PollFunction, wait: Wait, *, deadline: float, keeps_state: bool) -> Finished | None:
    """Drive one poke of ``wait`` (see :class:`~airflow_provider_luma.waiting.Poke`), every call by ``deadline``."""
    poke = wait.poke(deadline=deadline, keeps_state=keeps_state)
    check: Check | None = poke.first()
    finished: Finished | None = None
    while check is not None:
        if check.pause:
            time.sleep(max(0.0, min(check.pause, deadline - time.time())))
        finished = check_once(poll, wait, hold=check.hold, deadline=deadline)
        check = poke.after(finished, time.time())
    return finished
