"""
The waiting logic, written once and driven by the sync hook, the trigger and the sensor alike.

:class:`WaitLoop` does no I/O and never sleeps: it says what to do next (:class:`Poll`,
:class:`Sleep`) and, given what happened, decides when the wait is over (:class:`Finished`).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from airflow_provider_luma.errors import LumaError, LumaInputError
from airflow_provider_luma.models import ApiFamily, Generation, GenerationRef, GenerationState, created_seconds
from airflow_provider_luma.settings_table import DEFAULTS, floor
from airflow_provider_luma.settings_table import MAX_SECONDS as MAX_SECONDS
from airflow_provider_luma.steps import Check, Finished, Poll, Sleep, Step, WaitStatus

__all__ = ["Check", "Finished", "Poll", "Sleep", "Step", "Wait", "WaitLoop", "WaitPacing", "WaitStatus"]

log = logging.getLogger(__name__)

#: Answers in a row that may leave out a generation asked for before the wait gives up on it.
MISSING_ANSWERS_LIMIT = 3
#: The fixed start of the line a wait with ``report_progress`` logs for each state it sees, e.g.
#: ``Luma generation 7c88...: dreaming after 3 s.`` (seconds since the generation's creation); the
#: demo picks these lines out of Airflow's log.
PROGRESS_LOG_PREFIX = "Luma generation "
#: The least seconds of each pacing setting (connection extras and trigger arguments alike): below
#: them a server that answers at once, or fails at once, would be asked again in a tight loop. The
#: connection's come from its settings table; ``initial_backoff`` is a trigger argument only.
PACING_FLOORS: dict[str, float] = {
    "min_poll_interval": floor("min_poll_interval"),
    "poll_interval": floor("poll_interval"),
    "initial_backoff": 0.05,
    "max_backoff": floor("max_backoff"),
}


def checked_number(
    value: Any,
    *,
    what: str,
    minimum: float,
    maximum: float | None = None,
    whole: bool = False,
    error: type[LumaError] = LumaInputError,
) -> float:
    """
    ``value`` as a finite number within bounds, or raise ``error`` saying what to fix.

    The one check of every number a user sets (connection extras, trigger arguments): ``nan`` and
    ``inf`` are refused too, which a plain ``value < minimum`` lets through.

    :param value: A number, or its text (``"90"``).
    :param what: Names the setting at the start of the message, e.g. ``"Extra 'timeout' of connection 'x'"``.
    :param minimum: The least value allowed.
    :param maximum: The greatest value allowed, if any.
    :param whole: Whether only whole numbers are allowed (``2.0`` is, ``2.5`` is not).
    :param error: The :class:`LumaError` class to raise.
    """
    expected = "a finite whole number" if whole else "a finite number"
    try:
        if isinstance(value, bool):  # float(True) is 1.0: almost surely a mistake
            raise ValueError
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise error(f"{what} is {value!r}: expected {expected}.")
    if whole and not number.is_integer():
        raise error(f"{what} is {value!r}: expected a whole number.")
    if number < minimum:
        raise error(f"{what} must be at least {minimum:g}, not {value!r}.")
    if maximum is not None and number > maximum:
        raise error(f"{what} must be at most {maximum:g}, not {value!r}.")
    return number


@dataclass(frozen=True)
class WaitPacing:
    """
    How a wait spaces its calls.

    :param min_poll_interval: Least seconds between the starts of two long polls. A server that
        holds the long poll never makes this matter; one that answers at once (it ignored the hold
        parameter) is asked again only after this long.
    :param poll_interval: Seconds between the starts of two polls of an endpoint that holds no
        request (the universal endpoint).
    :param initial_backoff: Seconds to wait after the first poll that failed transiently.
    :param max_backoff: Cap of the exponential back-off after repeated transient failures.
    """

    min_poll_interval: float = DEFAULTS["min_poll_interval"]
    poll_interval: float = DEFAULTS["poll_interval"]
    initial_backoff: float = 1.0
    max_backoff: float = DEFAULTS["max_backoff"]

    def after_answer(self, call_seconds: float, *, held: bool = True) -> float:
        """Seconds to pause after a poll that answered in ``call_seconds`` without ending the wait."""
        interval = self.min_poll_interval if held else self.poll_interval
        return max(0.0, interval - call_seconds)

    def after_transient_error(self, consecutive_failures: int) -> float:
        """Seconds to back off after ``consecutive_failures`` failed polls in a row (full jitter on top half)."""
        ceiling = min(self.max_backoff, self.initial_backoff * 2 ** max(0, consecutive_failures - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


class WaitLoop:
    """
    Decides each step of a wait for generations to reach a state, until an absolute deadline.

    Drive it with ``step = loop.first_step()`` and then ``step = loop.after_poll(...)`` /
    ``loop.after_sleep()`` until a :class:`Finished` comes back.

    :param refs: The generations to wait for, all of one endpoint family (``luma-ai`` long-polls,
        ``video`` polls every ``poll_interval``); a ref without a family is a ``luma-ai`` one.
    :param target: The state to wait for (a later non-failed state counts too).
    :param deadline: UNIX time after which the wait ends with ``timeout``; ``None`` waits forever.
    :param pacing: How calls are spaced.
    :param clock: Wall-clock source (seconds since the epoch); tests and benchmarks may replace it.
    :param report_progress: Report every state on the way: each long poll holds for the state after
        the latest seen (``queued`` -> ``dreaming`` -> ``completed``) instead of ``target``, at most
        one more call per state, and each state is logged with the seconds since the generation's
        creation. The target alone still decides when the wait is over. On the universal endpoint
        (no hold) only the log lines change.
    """

    def __init__(
        self,
        refs: Iterable[GenerationRef],
        target: GenerationState,
        *,
        deadline: float | None,
        pacing: WaitPacing | None = None,
        clock: Callable[[], float] = time.time,
        logger: Any = None,
        report_progress: bool = False,
    ):
        self.refs = {ref.id: ref for ref in refs}
        families = {ref.api or ApiFamily.LUMA_AI for ref in self.refs.values()}
        if len(families) != 1:
            raise LumaInputError(f"A wait loop is for generations of one endpoint family, not {sorted(families)}.")
        self.api: ApiFamily = families.pop()
        self.generation_ids = list(self.refs)
        self.target = target
        self.report_progress = report_progress
        self.deadline = float("inf") if deadline is None else deadline
        self.pacing = pacing or WaitPacing()
        self.clock = clock
        self.log = logger or log
        self.latest: dict[str, Generation] = {}
        self._changed_at: dict[str, float] = {}
        self._born_at: dict[str, float] = {}
        self._furthest: dict[str, int] = {}
        self._progressed = False
        self._started_at = clock()
        self._transient_failures = 0
        self._missing: dict[str, int] = {}

    @property
    def pending_ids(self) -> list[str]:
        """The ids that have not reached the target yet."""
        return [i for i in self.generation_ids if not (i in self.latest and self.latest[i].has_reached(self.target))]

    @property
    def left_out_ids(self) -> list[str]:
        """The ids the latest answer left out (counting towards :data:`MISSING_ANSWERS_LIMIT`)."""
        return [i for i in self.generation_ids if self._missing.get(i, 0) > 0]

    @property
    def poll_target(self) -> GenerationState:
        """
        The state the next long poll holds for: ``target``, or with ``report_progress`` the state
        after the latest seen of the least advanced pending generation (``queued`` for one not seen
        yet, which answers at once; ``target`` for one in a state of unknown place), never beyond ``target``.
        """
        if not self.report_progress:
            return self.target
        steps = []
        for generation_id in self.pending_ids:
            seen = self.latest.get(generation_id)
            if seen is None:
                steps.append(GenerationState.QUEUED)
            elif seen.known_state is not None:
                steps.append(seen.known_state.following)
        return min([self.target, *steps], key=lambda state: state.priority)

    def first_step(self) -> Step:
        """The first thing to do."""
        return self._next_poll()

    def after_poll(self, answer: list[Generation] | LumaError, call_seconds: float) -> Step:
        """
        Decide what follows a poll.

        :param answer: The generations the poll returned, or the error it ended with (after the
            hook's own retries).
        :param call_seconds: How long the poll took.
        """
        if isinstance(answer, LumaError):
            if not answer.transient:
                return Finished("error", answer.message, self._ordered(), error=answer)
            self._transient_failures += 1
            delay = self.pacing.after_transient_error(self._transient_failures)
            self.log.warning(
                "Polling Luma failed (%s); trying again in %.1f s. Failures in a row: %d.",
                answer.message,
                delay,
                self._transient_failures,
            )
            return self._sleep_or_timeout(delay)
        self._transient_failures = 0
        lost = self._note_missing(self.pending_ids, answer)
        if lost:
            return Finished(
                "error",
                f"The Luma API's answers left out generation(s) {', '.join(lost)} {MISSING_ANSWERS_LIMIT} times in "
                "a row: check that the ids are right.",
                self._ordered(),
            )
        pause = self.pacing.after_answer(call_seconds, held=self.api.holds)
        self._progressed = False
        finished = self.observe(answer)
        if finished is not None:
            return finished
        if self.report_progress and self.api.holds and self._progressed:
            # A generation got further than ever before: hold for its next state now. Bounded: each
            # generation can get further at most once per state.
            pause = 0.0
        return self._sleep_or_timeout(pause)

    def _note_missing(self, asked: list[str], answer: list[Generation]) -> list[str]:
        # A multi-fetch may drop unknown ids instead of answering 404: don't wait for them until the deadline.
        returned = {generation.id for generation in answer}
        for generation_id in asked:
            self._missing[generation_id] = 0 if generation_id in returned else self._missing.get(generation_id, 0) + 1
        return [i for i in asked if self._missing[i] >= MISSING_ANSWERS_LIMIT]

    def observe(self, generations: Iterable[Generation]) -> Finished | None:
        """Record what the API reported; return how the wait ended, or ``None`` if it goes on."""
        for generation in generations:
            if generation.id in self.generation_ids:
                self._record(generation)
        failed = [g for g in self._ordered() if g.is_failed]
        if failed:
            reasons = "; ".join(f"{g.id}: {g.failure_reason or 'no reason given'}" for g in failed)
            return Finished("failed", f"Luma generation failed ({reasons}).", self._ordered())
        if not self.pending_ids:
            return Finished(
                "success",
                f"{len(self.generation_ids)} Luma generation(s) reached '{self.target.value}'.",
                self._ordered(),
            )
        return None

    def after_sleep(self) -> Step:
        """What follows a pause: the next poll, or the end if the deadline passed."""
        return self._next_poll()

    def _next_poll(self) -> Step:
        if self.clock() >= self.deadline:
            return self._timed_out()
        return self.poll(hold=self.api.holds)

    def poll(self, *, hold: bool, deadline: float | None = None, retries: int | None = None) -> Poll:
        """
        The poll of what is pending now: held for :attr:`poll_target` when ``hold`` and the family
        holds; ``deadline`` (default: the wait's) and per-call ``retries`` as :class:`Poll` says.
        """
        ends = deadline if deadline is not None else (None if math.isinf(self.deadline) else self.deadline)
        refs = tuple(self.refs[i] for i in self.pending_ids)
        return Poll(refs, self.poll_target, ends, hold=hold and self.api.holds, retries=retries)

    def _sleep_or_timeout(self, delay: float) -> Step:
        remaining = self.deadline - self.clock()
        if remaining <= 0:
            return self._timed_out()
        return Sleep(min(delay, remaining)) if delay > 0 else self._next_poll()

    def _timed_out(self) -> Finished:
        states = ", ".join(f"{i}: {self._state_of(i)}" for i in self.pending_ids)
        return Finished(
            "timeout",
            f"Timed out waiting for Luma generation(s) to reach '{self.target.value}' ({states}).",
            self._ordered(),
        )

    def _state_of(self, generation_id: str) -> str:
        generation = self.latest.get(generation_id)
        return (generation.state or "unknown") if generation else "not seen yet"

    def _ordered(self) -> list[Generation]:
        return [self.latest[i] for i in self.generation_ids if i in self.latest]

    def _record(self, generation: Generation) -> None:
        previous = self.latest.get(generation.id)
        self.latest[generation.id] = generation
        known = generation.known_state
        if known is not None and known.priority > self._furthest.get(generation.id, -1):
            self._furthest[generation.id] = known.priority
            self._progressed = True
        if previous is not None and previous.state == generation.state:
            return
        now = self.clock()
        since = self._changed_at.get(generation.id, self._started_at)
        self._changed_at[generation.id] = now
        if self.report_progress:
            born = self._born_at.setdefault(generation.id, created_seconds(generation.created_at) or now)
            self.log.info(
                "%s%s: %s after %d s.", PROGRESS_LOG_PREFIX, generation.id, generation.state, max(0, round(now - born))
            )
        elif previous is None:
            # DEBUG: a wait's one INFO line is its end (the trigger's, the sensor's); a triggerer with
            # thousands of waits pays for every line its handlers format and write.
            self.log.debug("Luma generation %s is %s.", generation.id, generation.state)
        else:
            self.log.debug(
                "Luma generation %s: %s → %s after %.0f s.",
                generation.id,
                previous.state,
                generation.state,
                now - since,
            )
        if generation.usage and generation.has_reached(GenerationState.COMPLETED):
            usage = ", ".join(f"{key} {value}" for key, value in generation.usage.items())
            self.log.info("Luma generation %s is completed; usage: %s.", generation.id, usage)


class Wait:
    """
    A wait over generations of one or more endpoint families: one :class:`WaitLoop` per family,
    driven side by side, so that each keeps its own pace (a universal id is polled on its interval
    while a ``luma-ai`` long poll of the same wait is held).

    :param loops: One loop per family, none empty.
    :param generation_ids: All ids in the order the user gave them (the order of the results).
    """

    def __init__(self, loops: list[WaitLoop], generation_ids: list[str]):
        self.loops = loops
        self.generation_ids = generation_ids

    @classmethod
    def of(
        cls,
        refs: Iterable[GenerationRef],
        target: GenerationState,
        *,
        deadline: float | None,
        pacing: WaitPacing | None = None,
        logger: Any = None,
        report_progress: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> Wait:
        """
        A wait for ``refs`` (their families decided: see :meth:`GenerationRef.resolved`), one loop per
        family, in the order given.
        """
        refs = list(refs)
        loops = [
            WaitLoop(
                [ref for ref in refs if (ref.api or ApiFamily.LUMA_AI) is family],
                target,
                deadline=deadline,
                pacing=pacing,
                clock=clock,
                logger=logger,
                report_progress=report_progress,
            )
            for family in ApiFamily
            if any((ref.api or ApiFamily.LUMA_AI) is family for ref in refs)
        ]
        return cls(loops, [ref.id for ref in refs])

    def check(
        self, *, hold: bool, deadline: float | None = None, retries: int | None = None
    ) -> list[tuple[WaitLoop, Poll]]:
        """
        The polls of one check of every family, universal ones first (they answer at once; a held
        long poll may not); judge what they answer with each loop's ``after_poll`` and :meth:`after_check`.
        """
        ordered = sorted(self.loops, key=lambda loop: loop.api.holds)
        return [(loop, loop.poll(hold=hold, deadline=deadline, retries=retries)) for loop in ordered]

    def after_check(self, steps: list[Step], *, complete: bool) -> Finished | None:
        """
        How a check ended the wait, given the steps its loops decided so far: at the first failure,
        error or time-out; with success once ``complete`` and every family succeeded; else ``None``.
        """
        for step in steps:
            if isinstance(step, Finished) and step.status != "success":
                return self.merge([step])
        if complete and all(isinstance(step, Finished) for step in steps):
            return self.merge([step for step in steps if isinstance(step, Finished)])
        return None

    @property
    def target(self) -> GenerationState:
        """The state waited for."""
        return self.loops[0].target

    @property
    def report_progress(self) -> bool:
        """Whether the wait reports every state on the way (see :class:`WaitLoop`); off by default."""
        return any(loop.report_progress for loop in self.loops)

    @report_progress.setter
    def report_progress(self, value: bool) -> None:
        for loop in self.loops:
            loop.report_progress = bool(value)

    @property
    def left_out_ids(self) -> list[str]:
        """The ids the latest answers left out, in every family."""
        return [i for loop in self.loops for i in loop.left_out_ids]

    @property
    def seen_anything(self) -> bool:
        """Whether any answer of this wait reported a generation."""
        return any(loop.latest for loop in self.loops)

    def poke(self, *, deadline: float, keeps_state: bool) -> Poke:
        """The checks of one poke of this wait (a sensor's, from the worker): see :class:`Poke`."""
        return Poke(self, deadline=deadline, keeps_state=keeps_state, fresh=not self.seen_anything)

    def observe(self, generations: Iterable[Generation]) -> Finished | None:
        """Record what is already known (e.g. a create answer); how the wait ended, or ``None``."""
        known = list(generations)
        results = [loop.observe(known) for loop in self.loops]
        ended = [result for result in results if result is not None and result.status != "success"]
        if ended:
            return self.merge(ended)
        if all(result is not None for result in results):
            return self.merge([result for result in results if result is not None])
        return None

    def merge(self, results: list[Finished]) -> Finished:
        """
        One ending from the loops' endings: the first failure, error or time-out wins (the other
        loops were stopped for it); success only when every loop succeeded.
        """
        latest = {g.id: g for loop in self.loops for g in loop.latest.values()}
        ordered = [latest[i] for i in self.generation_ids if i in latest]
        for status in ("failed", "error", "timeout"):
            ending = next((r for r in results if r.status == status), None)
            if ending is not None:
                return Finished(ending.status, ending.message, ordered, error=ending.error)
        return Finished(
            "success", f"{len(self.generation_ids)} Luma generation(s) reached '{self.target.value}'.", ordered
        )


@dataclass
class Poke:
    """
    The rules of one poke of a wait, from a worker (a sensor in ``poke`` or ``reschedule`` mode):
    a first check held at most until ``deadline``, then, by :meth:`after`, maybe more:

    * with ``report_progress``, a wait that had seen nothing (``fresh``) learns where things stand
      from its first check, answered at once: one more check, held for the next state;
    * a wait that keeps no state from one poke to the next (``keeps_state`` false: reschedule mode,
      a new sensor each poke) asks again, ``min_poll_interval`` apart, for ids an answer left out,
      until :data:`MISSING_ANSWERS_LIMIT` answers in a row did (and so end the wait) or one did not.

    :param wait: The wait.
    :param deadline: UNIX time the poke ends by.
    :param keeps_state: Whether the next poke sees this wait again (poke mode).
    :param fresh: Whether the wait had seen nothing when the poke began.
    """

    wait: Wait
    deadline: float
    keeps_state: bool
    fresh: bool
    checks: int = 0
    asked_again: int = 0

    def first(self) -> Check:
        """The first check: held."""
        self.checks = 1
        return Check(hold=True)

    def after(self, finished: Finished | None, now: float) -> Check | None:
        """The next check after one that ended the wait (``finished``) or not; ``None``: the poke is over."""
        if finished is not None or now >= self.deadline:
            return None
        left_out = bool(self.wait.left_out_ids)
        if self.checks == 1 and self.fresh and self.wait.report_progress and not left_out:
            self.checks += 1
            return Check(hold=True)
        if not self.keeps_state and left_out and self.asked_again < MISSING_ANSWERS_LIMIT - 1:
            self.checks += 1
            self.asked_again += 1
            return Check(hold=False, pause=self.wait.loops[0].pacing.min_poll_interval)
        return None
