"""The call budget (extras max_calls_per_second, max_call_burst): its decisions, and its bound at the simulator."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from airflow_provider_luma.hooks.budget import (
    ARRIVAL,
    FIRST_PAUSE,
    CallBudget,
    CallSchedule,
    call_budget,
)
from airflow_provider_luma.hooks.luma import LumaHook
from airflow_provider_luma.hooks.settings import SETTINGS_CACHE
from airflow_provider_luma.testing import LumaSimulator
from airflow_provider_luma.triggers.luma import LumaGenerationTrigger
from tests.support.budget import busiest_second, create_universal
from tests.support.connection import SENTINEL_KEY, connection_json

pytestmark = pytest.mark.usefixtures("fresh_budgets")


# -- the decisions, on a clock of our own ---------------------------------------------------------


def drive(schedule: CallSchedule, asks: list[float], lateness: float = 0.0) -> list[float]:
    """Start times of calls asked for at ``asks``, each waiter waking ``lateness`` after the time it was told."""
    return [started for started, _ in drive_calls(schedule, asks, lateness=lateness)]


def drive_calls(
    schedule: CallSchedule,
    asks: list[float],
    answer_after: list[float] | None = None,
    lateness: float = 0.0,
    counts_for: float = ARRIVAL,
) -> list[tuple[float, float]]:
    """
    (start, answer) of calls asked for at ``asks``; the i-th is answered ``answer_after[i]`` after it
    starts (never, if not given). Calls run on one virtual clock, each answer told to the schedule in
    time; each names ``counts_for`` at its start.
    """
    tickets = [schedule.reserve(now) for now in sorted(asks)]
    answers: list[tuple[float, int]] = []  # (when, ticket), told as the clock passes them
    calls: list[tuple[float, float]] = []
    now = -float("inf")
    for index, (ticket, at) in enumerate(tickets):
        now = max(now, at + lateness)  # one clock, never running back
        while True:
            for when, answered in sorted(answers):
                if when <= now:
                    schedule.finished(answered, when)
                    answers.remove((when, answered))
            again = schedule.start(ticket, now, counts_for)
            if again is None:
                break
            now = again if not answers else min(again, max(now, min(answers)[0]))
        after = answer_after[index] if answer_after else float("inf")
        answers.append((now + after, ticket))
        calls.append((now, now + after))
    return calls


def most_possible_arrivals_in_a_second(calls: list[tuple[float, float]]) -> int:
    """The most calls that could reach the API in one second, each at any moment between its start and answer."""
    edges = sorted({edge for call in calls for edge in call if edge != float("inf")})
    return max(sum(1 for start, end in calls if start < at + 1.0 and end >= at) for at in edges)


def test_no_window_holds_more_than_rate_plus_burst():
    schedule = CallSchedule(rate=20, burst=20)
    started = drive(schedule, [0.0] * 500)
    assert busiest_second(started) == 40  # the burst is used, and no more
    assert started[-1] == pytest.approx(24.0, abs=1.2)  # 500 calls: the burst, then 20 a second
    assert started == sorted(started)  # first come, first served


def test_a_call_counts_until_its_answer_so_late_arrivals_do_not_bunch_at_the_api():
    # A burst goes out on new connections through a busy event loop: answered (so arrived, at the
    # latest) 0.4 s after being let through. The calls after it are answered at once. Counting each
    # call until its answer keeps every second at the API to the bound, wherever in its span it arrived.
    schedule = CallSchedule(rate=20, burst=20)
    latencies = [0.4] * 25 + [0.005] * 175
    calls = drive_calls(schedule, [0.0] * 200, answer_after=latencies)
    assert most_possible_arrivals_in_a_second(calls) <= 40
    assert busiest_second([start for start, _ in calls]) == 40  # the burst is still used
    assert calls[-1][0] == pytest.approx(9.0, abs=1.0)  # and the rate: 200 calls, 21 at once, then 20 a second


@pytest.mark.parametrize(("counts_for", "bound_kept"), [(30.0, True), (ARRIVAL, False)])
def test_a_call_the_api_answers_at_once_counts_until_its_answer_however_late(counts_for, bound_kept):
    # 200 waits on one event loop too busy to send on time: each poll answered 0.9 s after being let
    # through. Named with its attempt's time-out (30 s), each counts until its answer and every second
    # at the API keeps the bound; counted as a held long poll (ARRIVAL), arrivals could bunch past it.
    schedule = CallSchedule(rate=20, burst=20)
    calls = drive_calls(schedule, [0.0] * 200, answer_after=[0.9] * 200, counts_for=counts_for)
    assert (most_possible_arrivals_in_a_second(calls) <= 40) is bound_kept


def test_an_unanswered_call_counts_as_arrived_a_moment_after_it_started():
    # Long polls the API holds: never answered here, each taken to have reached the API within ARRIVAL.
    schedule = CallSchedule(rate=20, burst=20)
    calls = drive_calls(schedule, [0.0] * 200)
    arrivals = [(start, start + ARRIVAL) for start, _ in calls]
    assert most_possible_arrivals_in_a_second(arrivals) <= 40
    # Each takes a place for ARRIVAL + 1 s: 40 per 1.5 s, still above this budget's rate of 20.
    assert calls[-1][0] == pytest.approx(9.0, abs=1.5)


def test_waiters_woken_late_still_keep_the_bound():
    schedule = CallSchedule(rate=10, burst=5)
    # Wakers a third of a second late bunch together; the log of starts holds them to the bound.
    started = drive(schedule, [i * 0.01 for i in range(200)], lateness=0.33)
    assert busiest_second(started) <= 15


def test_the_bound_is_at_least_one_call():
    assert CallSchedule(rate=0.1, burst=0).limit == 1
    started = drive(CallSchedule(rate=0.5, burst=0), [0.0] * 3)
    assert started == [0.0, 2.0, 4.0]


def test_a_429_pauses_every_queued_call_in_order_and_resumes_without_a_burst():
    schedule = CallSchedule(rate=10, burst=10)
    tickets = [schedule.reserve(0.0) for _ in range(30)]
    schedule.start(tickets[0][0], 0.0)
    until = schedule.rate_limited(now=0.1, started=0.0, retry_after=3.0)
    assert until == pytest.approx(3.1)
    replanned = [schedule._pending[ticket] for ticket, _ in tickets[1:]]
    assert replanned[0] == pytest.approx(3.1)
    assert replanned == sorted(replanned)  # the queue keeps its order
    assert replanned[1] - replanned[0] == pytest.approx(0.1)  # at the rate: no burst right after a 429
    assert schedule.start(tickets[1][0], 1.0) == pytest.approx(3.1)  # told to wait for the pause's end


def test_without_retry_after_the_pause_doubles_per_episode_not_per_call_in_flight():
    schedule = CallSchedule(rate=10, burst=10)
    first = schedule.rate_limited(now=1.0, started=0.9, retry_after=None)
    assert first == pytest.approx(1.0 + FIRST_PAUSE)
    # Nine more calls that were on the way when the pause began: one episode, no doubling.
    for _ in range(9):
        schedule.rate_limited(now=1.05, started=0.95, retry_after=None)
    assert schedule.paused_until == pytest.approx(1.0 + FIRST_PAUSE, abs=0.06)
    # A call sent after the pause gets a 429 again: twice as long.
    assert schedule.rate_limited(now=2.5, started=2.2, retry_after=None) == pytest.approx(2.5 + 2 * FIRST_PAUSE)
    # A success after the pause ends the streak.
    schedule.succeeded(started=5.0)
    assert schedule.rate_limited(now=6.0, started=5.5, retry_after=None) == pytest.approx(6.0 + FIRST_PAUSE)


def test_async_waiters_are_served_first_come_first_served():
    budget = CallBudget(rate=50, burst=0)
    order: list[int] = []

    async def waiter(index: int) -> None:
        await budget.aacquire()
        order.append(index)

    async def main() -> None:
        tasks = []
        for index in range(60):
            tasks.append(asyncio.ensure_future(waiter(index)))
            await asyncio.sleep(0)  # each asks after the one before
        await asyncio.gather(*tasks)

    asyncio.run(main())
    assert order == list(range(60))


def test_a_cancelled_waiter_leaves_the_queue():
    budget = CallBudget(rate=5, burst=0)

    async def main() -> None:
        await budget.aacquire()
        waiting = asyncio.ensure_future(budget.aacquire())
        await asyncio.sleep(0.01)
        assert budget.schedule.waiting == 1
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        assert budget.schedule.waiting == 0

    asyncio.run(main())


def test_one_budget_per_url_and_key_whatever_the_connection():
    first = call_budget("http://127.0.0.1:1", SENTINEL_KEY, 5.0, 2)
    assert call_budget("http://127.0.0.1:1", SENTINEL_KEY, 9.0, None) is first
    assert call_budget("http://127.0.0.1:1", "another-key", 5.0, 2) is not first
    assert call_budget("http://127.0.0.1:1", SENTINEL_KEY, None, None) is None
    assert SENTINEL_KEY not in repr(first)
    from airflow_provider_luma.hooks import budget as module

    assert all(SENTINEL_KEY not in part for key in module._BUDGETS for part in key)


# -- against the simulator ----------------------------------------------------------------------------


def use_budget(sim: LumaSimulator, monkeypatch: pytest.MonkeyPatch, rate: float, burst: int, **extras) -> None:
    connection = connection_json(sim, poll_interval=2, max_calls_per_second=rate, max_call_burst=burst, **extras)
    monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", connection)


async def run_triggers(generations: list[dict], timeout: float = 120) -> list[dict]:
    async def one(generation: dict) -> dict:
        trigger = LumaGenerationTrigger([generation], deadline=time.time() + timeout)
        async for event in trigger.run():
            return event.payload
        raise AssertionError("no event")

    return await asyncio.gather(*(one(generation) for generation in generations))


def budgeted_waits(
    sim: LumaSimulator, monkeypatch: pytest.MonkeyPatch, count: int, rate: float, burst: int, dreaming: float
) -> tuple[list[dict], list[dict], list[dict]]:
    """``count`` universal waits as triggers in one loop under a budget: generations, events, the polls."""
    sim.script("budgeted", queued_seconds=0.2, dreaming_seconds=dreaming)
    generations = create_universal(sim, monkeypatch, count, "budgeted")
    use_budget(sim, monkeypatch, rate=rate, burst=burst)
    started = time.time()
    events = asyncio.run(run_triggers(generations))
    return generations, events, [entry for entry in sim.requests("video_get") if entry["time"] >= started]


def test_200_universal_waits_in_one_loop_stay_within_the_budget(simulator, monkeypatch):
    # The target is 1,000 waits at 20 calls/s and a burst of 20; 200 keep the test to ~15 s.
    generations, events, entries = budgeted_waits(simulator, monkeypatch, 200, rate=20, burst=20, dreaming=2.0)

    assert [event["status"] for event in events] == ["success"] * 200
    polls = [entry["time"] for entry in entries]
    assert len(polls) >= 200
    assert busiest_second(polls) <= 40, busiest_second(polls)
    # Every wait got its calls: one at least each, ids taken from the log.
    polled = {entry["query"]["generation_id"] for entry in simulator.requests("video_get")}
    assert polled == {generation["id"] for generation in generations}


def test_more_waits_than_the_budget_serves_within_a_timeout_all_end(simulator, monkeypatch):
    # 40 waits asking 20 calls/s of a budget of 4, with a 3 s timeout: a wait's poll queues for ~10 s.
    # Bounded by one attempt's timeout, every poll left the queue unserved (its planned place kept
    # empty), so no wait polled again; queued until the wait's deadline, each gets its turn.
    simulator.script("crowded", queued_seconds=0.2, dreaming_seconds=3.0)
    generations = create_universal(simulator, monkeypatch, 40, "crowded")
    use_budget(simulator, monkeypatch, rate=4, burst=0, timeout=3)
    started = time.time()

    events = asyncio.run(run_triggers(generations, timeout=90))

    assert [event["status"] for event in events] == ["success"] * 40
    polls = [entry["time"] for entry in simulator.requests("video_get") if entry["time"] >= started]
    assert busiest_second(polls) <= 4


def test_many_concurrent_waits_each_get_calls_in_turn(simulator, monkeypatch):
    generations, events, polls = budgeted_waits(simulator, monkeypatch, 30, rate=10, burst=0, dreaming=0.2)

    assert {event["status"] for event in events} == {"success"}
    # Each wait's first poll went out in the order the waits asked: none was passed over, none starved.
    first_polls = []
    for entry in polls:
        if entry["query"]["generation_id"] not in first_polls:
            first_polls.append(entry["query"]["generation_id"])
    assert first_polls == [generation["id"] for generation in generations]
    assert busiest_second([entry["time"] for entry in polls]) <= 10
    assert polls[-1]["time"] - polls[0]["time"] >= 2.5  # 30 calls at 10 a second (a bit less: see WINDOW)


def test_a_429_pauses_every_wait_on_the_key(simulator, monkeypatch):
    simulator.script("limited", queued_seconds=0.2, dreaming_seconds=6.0)
    generations = create_universal(simulator, monkeypatch, 10, "limited")
    use_budget(simulator, monkeypatch, rate=50, burst=10)
    # Every wait would poll again 2 s (poll_interval) after its first answer; the 429 asks for 5 s.
    simulator.inject_fault("429", endpoint="video_get", retry_after="5")

    events = asyncio.run(run_triggers(generations))

    assert {event["status"] for event in events} == {"success"}
    polls = simulator.requests("video_get")
    (limited,) = [entry for entry in polls if entry["status"] == 429]
    answered_at = limited["time"] + limited["elapsed"]
    # The calls already on the way when the 429 came back went on; none was sent for 5 s after it.
    sent_after = [entry["time"] for entry in polls if entry["time"] > answered_at + 0.05]
    assert sent_after, "the waits went on after the pause"
    assert min(sent_after) >= answered_at + 5.0 - 0.1


def test_threads_of_one_process_share_the_budget(simulator, monkeypatch):
    simulator.script("threaded", queued_seconds=0.1, dreaming_seconds=0.1)
    generations = create_universal(simulator, monkeypatch, 4, "threaded")
    use_budget(simulator, monkeypatch, rate=5, burst=0)
    time.sleep(0.5)  # all completed
    started = time.time()
    problems: list[BaseException] = []

    def worker(generation: dict) -> None:
        try:
            hook = LumaHook()  # a hook per thread, as each task has its own
            for _ in range(5):
                assert hook.get_generation(generation).state == "completed"
        except BaseException as error:
            problems.append(error)

    threads = [threading.Thread(target=worker, args=(generation,)) for generation in generations]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not problems, problems
    polls = [entry["time"] for entry in simulator.requests("video_get") if entry["time"] >= started]
    assert len(polls) == 20
    assert busiest_second(polls) <= 5
    assert max(polls) - min(polls) >= 3.0  # 20 calls at 5 a second from four threads


def test_the_budget_extras_are_checked(monkeypatch, simulator):
    from airflow_provider_luma.errors import LumaConfigurationError

    SETTINGS_CACHE.clear()
    use_budget(simulator, monkeypatch, rate=2.5, burst=3)
    settings = LumaHook().settings
    assert (settings.max_calls_per_second, settings.max_call_burst) == (2.5, 3)
    conn = json.loads(connection_json(simulator, max_calls_per_second=0))
    monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", json.dumps(conn))
    with pytest.raises(LumaConfigurationError, match="max_calls_per_second"):
        _ = LumaHook().settings
