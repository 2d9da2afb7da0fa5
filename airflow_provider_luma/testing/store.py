"""The simulator's generations: their timelines, the scripts that shape them, the state file, and long-poll holds.

Every family keeps its generations here, tagged with the family's name; nothing here knows HTTP. One lock
guards everything, because the test's thread and the simulator's event loop both read and change it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = ["PRIORITY", "STATES", "Generation", "Rule", "Store"]

#: States in priority order; a waiter for a state is answered by it or any later one.
STATES: tuple[str, ...] = ("queued", "dreaming", "completed", "failed")
PRIORITY = {state: rank for rank, state in enumerate(STATES)}
# Never sleep less than this, so a wake-up a hair early cannot spin.
_MIN_SLEEP = 0.001


@dataclass
class Rule:
    """A script rule: generations whose prompt contains ``prompt_contains`` end this way."""

    prompt_contains: str
    outcome: Literal["completed", "failed"]
    failure_reason: str
    queued_seconds: float | None
    dreaming_seconds: float | None


@dataclass
class Generation:
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
    family: str = "luma-ai"

    @property
    def uuid(self) -> str:
        """The uuid part of the id (universal ids carry ``:<model>`` after it)."""
        return self.id.partition(":")[0]

    def state_at(self, now: float) -> str:
        """The state at wall-clock time ``now``."""
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
            return 0.0 if PRIORITY[self.forced_state] >= PRIORITY[state] else float("inf")
        if state == "queued":
            return self.created_at
        if state == "dreaming":
            return self.dreaming_at
        if state == "completed":
            return self.done_at
        return self.done_at if self.outcome == "failed" else float("inf")

    def failure_reason_at(self, state: str) -> str | None:
        """The failure reason to show at ``state`` (None unless failed)."""
        if state != "failed":
            return None
        return self.forced_failure_reason if self.forced_state else self.failure_reason


class Store:
    """
    The generations of every family, the script rules, persistence and the wake-ups of held requests.

    :param state_file: If set, generations are saved there on every change and loaded by :meth:`load`.
    """

    def __init__(self, state_file: Path | None = None) -> None:
        #: Held while reading or changing anything here (re-entrant: render under it).
        self.lock = threading.RLock()
        self.state_file = state_file
        self._generations: dict[str, Generation] = {}
        self._rules: list[Rule] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        self._stopping = False

    # ------------------------------------------------------------------ generations

    def get(self, generation_id: str) -> Generation | None:
        """The generation of exactly this id."""
        with self.lock:
            return self._generations.get(generation_id)

    def find(self, generation_id: str) -> Generation | None:
        """A generation by its id, or by the uuid part of a universal id."""
        with self.lock:
            gen = self._generations.get(generation_id)
            if gen is None:
                gen = next((g for g in self._generations.values() if g.uuid == generation_id), None)
            return gen

    def of_family(self, ids: list[str], family: str) -> tuple[list[Generation], list[str]]:
        """The generations of ``family`` with these ids, and the ids it does not have."""
        with self.lock:
            found = {i: self._generations.get(i) for i in ids}
            missing = [i for i, g in found.items() if g is None or g.family != family]
            return [g for g in found.values() if g is not None and g.family == family], missing

    def all(self) -> list[Generation]:
        """Every generation, oldest first."""
        with self.lock:
            return list(self._generations.values())

    def create(
        self, gen_id: str, request: dict[str, Any], model: str, family: str, *, queued: float, dreaming: float
    ) -> Generation:
        """Add a generation whose timeline follows the script rules (``queued``/``dreaming``: the defaults)."""
        outcome, reason, queued, dreaming = self._timeline_for(request.get("prompt", ""), queued, dreaming)
        now = time.time()
        gen = Generation(
            id=gen_id,
            created_at=now,
            request=request,
            model=model,
            outcome=outcome,
            failure_reason=reason,
            dreaming_at=now + queued,
            done_at=now + queued + dreaming,
            family=family,
        )
        with self.lock:
            self._generations[gen.id] = gen
            self.save()
        return gen  # no wake-up: nobody can be holding on a generation that did not exist

    def set_state(self, generation_id: str, state: str, failure_reason: str | None) -> None:
        """Force a generation into ``state``, freezing its timeline (``KeyError`` if unknown)."""
        with self.lock:
            gen = self._generations[generation_id]
            gen.forced_state = state
            gen.forced_failure_reason = (failure_reason or "simulated failure") if state == "failed" else None
            self.save()
        self.wake()

    def clear(self) -> None:
        """Forget every generation and script rule."""
        with self.lock:
            self._generations.clear()
            self._rules.clear()
            self.save()
        self.wake()

    # ------------------------------------------------------------------ scripts

    def add_rule(self, rule: Rule) -> None:
        """Add a script rule (the first matching rule applies)."""
        with self.lock:
            self._rules.append(rule)

    def clear_rules(self) -> None:
        """Forget the script rules."""
        with self.lock:
            self._rules.clear()

    def _timeline_for(self, prompt: Any, queued: float, dreaming: float) -> tuple[str, str | None, float, float]:
        outcome, reason = "completed", None
        prompt = prompt if isinstance(prompt, str) else ""
        with self.lock:
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

    # ------------------------------------------------------------------ persistence

    def save(self) -> None:
        """Write the generations to the state file, if any (atomically: readers never see half a file)."""
        if self.state_file is None:
            return
        with self.lock:
            data = {"version": 1, "generations": [asdict(g) for g in self._generations.values()]}
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.state_file.parent, prefix=self.state_file.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh)
            os.replace(tmp, self.state_file)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def load(self) -> None:
        """Read the generations from the state file, if it exists."""
        if self.state_file is None or not self.state_file.exists():
            return
        data = json.loads(self.state_file.read_text(encoding="utf-8"))
        with self.lock:
            self._generations = {g["id"]: Generation(**g) for g in data.get("generations", [])}

    # ------------------------------------------------------------------ holds

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Serve holds in ``loop`` (the simulator's event loop)."""
        self._loop, self._changed, self._stopping = loop, asyncio.Event(), False

    def release_all(self) -> None:
        """Answer every held request now (the simulator stops); called in the loop."""
        self._stopping = True
        self._notify_now()

    def _notify_now(self) -> None:
        # Swap in a fresh event first so waiters re-arming after the wake-up wait anew.
        old, self._changed = self._changed, asyncio.Event()
        if old is not None:
            old.set()

    def wake(self) -> None:
        """Make held requests look again (from any thread)."""
        loop = self._loop
        if loop is None or loop.is_closed() or self._stopping:
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

    async def hold(self, check: Callable[[float], tuple[bool, float]], hold_seconds: float) -> tuple[float, str]:
        """Sleep until ``check`` says done, ``hold_seconds`` pass, a change, or shutdown.

        ``check(now)`` returns (done, wall-clock time it will be done by the timeline). Timelines are known,
        so one timer per request suffices: no polling loop. Returns (seconds held, released_by):
        ``"immediate"`` (done at once), ``"state"``, ``"timeout"`` or ``"shutdown"``.
        """
        start = time.time()
        hold_until = start + hold_seconds
        first = True
        while True:
            changed = self._changed
            now = time.time()
            with self.lock:
                done, done_at = check(now)
            if done:
                return (0.0, "immediate") if first else (now - start, "state")
            if self._stopping or changed is None:
                return now - start, "shutdown"
            if now >= hold_until:
                return now - start, "timeout"
            first = False
            delay = max(min(hold_until, done_at) - now, _MIN_SLEEP)
            try:
                async with asyncio.timeout(delay):
                    await changed.wait()
            except TimeoutError:
                pass
