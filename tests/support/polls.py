"""Waiting for a simulator to be polled, and timelines moved on by the polls themselves."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

from airflow_provider_luma.testing import LumaSimulator
from tests.support.simulator_calls import prompt_of


def wait_for_polls(sim: LumaSimulator, generation_id: str, state: str | None = None, timeout: float = 60) -> None:
    """Block until ``sim`` answered a fetch of ``generation_id`` (asking for ``state``, if given); bounded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in sim.requests("get"):
            query = entry["query"]
            if query.get("generation_id") == generation_id and (state is None or query.get("state") == state):
                return
        time.sleep(0.05)
    raise AssertionError(f"no poll of {generation_id} asking for {state!r} within {timeout:.0f} s")


@contextlib.contextmanager
def timeline_driven_by_polls(
    sim: LumaSimulator, prompt: str, steps: list[tuple[str, str]], failure_reason: str | None = None
) -> Iterator[None]:
    """Move the generation whose prompt holds ``prompt`` on as the waits ask, not as the clock goes.

    ``steps``: ``(asked, new_state)`` pairs: once ``sim`` answered a poll asking for ``asked``, the
    generation is set to ``new_state``. A DAG run on a loaded machine may take any time between its
    tasks; a fixed timeline would let a later state be seen first. Script the prompt with a long
    ``queued_seconds`` so that only these steps move it.
    """
    stop = threading.Event()
    problems: list[BaseException] = []

    def drive() -> None:
        try:
            while not stop.is_set():
                ours = [g for g in sim.generations() if prompt in prompt_of(g)]
                if ours:
                    break
                time.sleep(0.05)
            else:
                return
            for asked, new_state in steps:
                while not stop.is_set():
                    try:
                        wait_for_polls(sim, ours[0]["id"], asked, timeout=0.2)
                        break
                    except AssertionError:
                        continue
                else:
                    return
                sim.set_state(ours[0]["id"], new_state, failure_reason if new_state == "failed" else None)
        except BaseException as error:  # shown by the test, not lost in the thread
            problems.append(error)

    thread = threading.Thread(target=drive, name="timeline-driver", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)
    assert not problems, problems
