"""
The call budget shared in Redis (extra budget_redis_conn_id): the Lua script decides as CallSchedule
does, and OS processes sharing one real redis-server keep one bound at the simulator together.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
import time
import uuid
from dataclasses import dataclass

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_provider_luma.hooks import shared_budget
from airflow_provider_luma.hooks.budget import (
    ARRIVAL,
    FIRST_PAUSE,
    MAX_PAUSE,
    WINDOW,
    BudgetTimeout,
    CallSchedule,
    Slot,
    call_budget,
    forget_budgets,
    key_fingerprint,
)
from airflow_provider_luma.hooks.settings import SETTINGS_CACHE
from airflow_provider_luma.hooks.shared_budget import KEY_NAMES, SCRIPT, TTL, SharedCallBudget, SharedSlot
from airflow_provider_luma.testing import LumaSimulator
from tests.support.budget import busiest_second, create_universal, running_clients, start_clients
from tests.support.connection import SENTINEL_KEY, connection_json
from tests.support.logs import find_leaks
from tests.support.redis_server import RedisServer, free_port

REDIS_CONN = "luma_budget"


pytestmark = pytest.mark.usefixtures("fresh_budgets")


@pytest.fixture
def redis_conn(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> RedisServer:
    """The ``redis`` connection :data:`REDIS_CONN` naming the test's redis-server; returns the server."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{REDIS_CONN.upper()}", redis_server.connection_json())
    return redis_server


def client_of(server: RedisServer) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=server.port, decode_responses=True)


# -- the script decides as CallSchedule does --------------------------------------------------------


class PlainTwin:
    """:class:`CallSchedule`, stepped as :class:`~airflow_provider_luma.hooks.budget.CallBudget` steps it."""

    def __init__(self, rate: float, burst: int) -> None:
        self.schedule = CallSchedule(rate, burst)

    def join(self, now: float, counts_for: float) -> tuple[int, float | None]:
        ticket, at = self.schedule.reserve(now)
        return ticket, (self.schedule.start(ticket, now, counts_for) if at <= now else at)

    def ask(self, ticket: int, now: float, counts_for: float) -> float | None:
        return self.schedule.start(ticket, now, counts_for)

    def finish(self, ticket: int, started: float, now: float, status: int | None, retry_after: float | None):
        assert self.schedule.finished(ticket, now)
        if status == 429:
            return self.schedule.rate_limited(now, started, retry_after)
        if status is not None:
            self.schedule.succeeded(started)
        return None

    def cancel(self, ticket: int, now: float) -> None:
        self.schedule.cancel(ticket)


class LuaTwin:
    """The shared budget's script in a real Redis, on the test's clock (its ``now`` argument)."""

    def __init__(self, client: redis.Redis, rate: float, burst: int) -> None:
        self.script = client.register_script(SCRIPT)
        self.keys = [f"luma:budget:{{{uuid.uuid4().hex}}}:{name}" for name in KEY_NAMES]
        limit = CallSchedule(rate, burst).limit
        # No stale tickets here: CallSchedule's waiters never vanish.
        interval = 1.0 / rate
        limits = (limit, interval, burst * interval, WINDOW, 1e9, TTL, FIRST_PAUSE, MAX_PAUSE)
        self.limits = [repr(value) for value in limits]

    def _call(self, op: str, now: float, *args) -> list:
        return self.script(keys=self.keys, args=[op, *self.limits, repr(now), *args])

    def join(self, now: float, counts_for: float) -> tuple[int, float | None]:
        code, ticket, value = self._call("acquire", now, repr(counts_for))
        return int(ticket), (now + float(value) if int(code) == 1 else None)

    def ask(self, ticket: int, now: float, counts_for: float) -> float | None:
        code, again_ticket, value = self._call("start", now, ticket, repr(counts_for))
        assert int(again_ticket) == ticket
        return now + float(value) if int(code) == 1 else None

    def finish(self, ticket: int, started: float, now: float, status: int | None, retry_after: float | None):
        reply = self._call("finish", now, ticket, repr(started), "" if status is None else status,
                           "" if retry_after is None else repr(retry_after))  # fmt: skip
        return now + float(reply[1]) if int(reply[0]) == 1 else None

    def cancel(self, ticket: int, now: float) -> None:
        self._call("cancel", now, ticket)


@dataclass(frozen=True)
class Waiter:
    """One call: asked for at ``ask_at``; answered ``latency`` after it starts (never: ``None``)."""

    ask_at: float
    latency: float | None
    status: int | None  # None: no answer (a dropped connection)
    retry_after: float | None
    lateness: float  # how late the waiter wakes after the time it was told
    give_up_at: float | None  # cancelled then if not started
    counts_for: float = ARRIVAL  # ARRIVAL: a long poll the API holds; longer: a call answered at once


def twin_run(rate: float, burst: int, waiters: list[Waiter], lua: LuaTwin) -> list[tuple]:
    """Drive both twins through the same calls on one virtual clock; every decision must agree."""
    plain = PlainTwin(rate, burst)
    tickets: dict[int, tuple[int, int]] = {}  # waiter -> (plain ticket, lua ticket)
    started: dict[int, float] = {}
    events = [(w.ask_at, i, "join", i) for i, w in enumerate(waiters)]
    heapq.heapify(events)
    seq = len(events)
    decisions = []
    while events:
        now, _, kind, i = heapq.heappop(events)
        w = waiters[i]
        if kind in ("join", "ask"):
            if kind == "join":
                ticket, again = plain.join(now, w.counts_for)
                lua_ticket, lua_again = lua.join(now, w.counts_for)
                tickets[i] = (ticket, lua_ticket)
            else:
                again = plain.ask(tickets[i][0], now, w.counts_for)
                lua_again = lua.ask(tickets[i][1], now, w.counts_for)
            assert (again is None) == (lua_again is None), (kind, i, now, again, lua_again)
            if again is not None:
                assert lua_again == pytest.approx(again, abs=1e-6), (kind, i, now)
                wake = again + w.lateness
                if w.give_up_at is not None and w.give_up_at < wake:
                    heapq.heappush(events, (max(now, w.give_up_at), seq, "cancel", i))
                else:
                    heapq.heappush(events, (wake, seq, "ask", i))
            else:
                started[i] = now
                decisions.append(("start", i, now))
                if w.latency is not None:
                    heapq.heappush(events, (now + w.latency, seq, "finish", i))
        elif kind == "finish":
            pause = plain.finish(tickets[i][0], started[i], now, w.status, w.retry_after)
            lua_pause = lua.finish(tickets[i][1], started[i], now, w.status, w.retry_after)
            assert (pause is None) == (lua_pause is None), (i, now, pause, lua_pause)
            if pause is not None:
                assert lua_pause == pytest.approx(pause, abs=1e-6), (i, now)
            decisions.append(("finish", i, pause))
        else:
            plain.cancel(tickets[i][0], now)
            lua.cancel(tickets[i][1], now)
            decisions.append(("cancel", i, now))
        seq += 1
    return decisions


waiters = st.builds(
    Waiter,
    ask_at=st.floats(0, 3),
    latency=st.one_of(st.none(), st.floats(0.001, 1.5)),
    status=st.sampled_from([200, 200, 200, 429, None]),
    retry_after=st.one_of(st.none(), st.floats(0, 4)),
    lateness=st.floats(0, 0.3),
    give_up_at=st.one_of(st.none(), st.floats(0, 6)),
    counts_for=st.sampled_from([ARRIVAL, 2.0, 30.0]),
)


@given(rate=st.sampled_from([0.5, 3.0, 10.0, 20.0]), burst=st.integers(0, 8), calls=st.lists(waiters, max_size=40))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_the_script_decides_every_step_as_the_in_process_schedule(redis_server, rate, burst, calls):
    # Bursts, answers late or never, 429s with and without Retry-After, waiters that wake late or give
    # up: each start time, each "ask again at" and each pause is the in-process schedule's own.
    twin_run(rate, burst, calls, LuaTwin(client_of(redis_server), rate, burst))


def test_the_twins_agree_on_bursts_late_wakers_pauses_and_cancels(redis_server):
    # What random draws reach rarely, made to happen: a burst; waiters woken late, due together and
    # counted in order ahead of each other; calls never answered; two 429 episodes without Retry-After
    # (the second pause twice the first) and one with it; waiters giving up in the queue.
    calls = [Waiter(0.0, 0.2, 200, None, 0.0, None) for _ in range(30)]
    calls += [Waiter(0.01 * i, None, None, None, 0.33, None) for i in range(60)]
    calls += [Waiter(0.5, 0.1, 429, None, 0.05, None), Waiter(0.6, 0.1, 429, 2.0, 0.0, None)]
    calls += [Waiter(0.65, 0.4, 429, None, 0.0, None) for _ in range(3)]  # one episode: no doubling
    calls += [Waiter(0.65, 0.6, 429, 0.0, 0.0, None)]  # a shorter Retry-After does not cut the pause
    calls += [Waiter(12.0, 0.1, 429, None, 0.0, None), Waiter(12.0, 0.3, 200, None, 0.0, None)]
    calls += [Waiter(0.7, None, None, None, 0.1, 1.5) for _ in range(5)]
    calls += [Waiter(0.8, 1.2, 200, None, 0.0, None, counts_for=30.0) for _ in range(8)]  # answered at once, late
    decisions = twin_run(10.0, 5, calls, LuaTwin(client_of(redis_server), 10.0, 5))
    assert {kind for kind, *_ in decisions} == {"start", "finish", "cancel"}
    pauses = [pause for kind, _, pause in decisions if kind == "finish" and pause is not None]
    assert len(pauses) == 7


# -- one process, real waits -----------------------------------------------------------------------


def shared_connection(sim: LumaSimulator, rate: float, burst: int, shared: bool = True, **extras) -> str:
    redis_extra = {"budget_redis_conn_id": REDIS_CONN} if shared else {}
    return connection_json(sim, poll_interval=2, max_calls_per_second=rate, max_call_burst=burst,
                           **redis_extra, **extras)  # fmt: skip


def test_the_extra_makes_the_keys_budget_shared_and_names_no_key(monkeypatch, simulator, redis_conn):
    from airflow_provider_luma.hooks.luma import LumaHook

    monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", shared_connection(simulator, 5, 2))
    settings_ = LumaHook().settings
    assert settings_.budget_redis_conn_id == REDIS_CONN
    budget = call_budget(simulator.base_url, SENTINEL_KEY, 5, 2, REDIS_CONN)
    assert isinstance(budget, SharedCallBudget)
    slot = budget.acquire()
    assert isinstance(slot, SharedSlot)
    budget.release(slot, 200)
    budget.release(slot, 200)  # a second release is ignored
    stored = client_of(redis_conn)
    names = stored.keys("*")
    assert names
    assert all(key_fingerprint(SENTINEL_KEY) in name for name in names)
    dump = json.dumps({name: stored.dump(name).hex() for name in names}) + json.dumps(names)
    assert SENTINEL_KEY not in dump
    assert SENTINEL_KEY.encode().hex() not in dump
    assert SENTINEL_KEY not in repr(budget)
    # Without the extra: today's in-process budget.
    forget_budgets()
    assert type(call_budget(simulator.base_url, SENTINEL_KEY, 5, 2)).__name__ == "CallBudget"


def test_the_redis_conn_id_extra_is_checked(monkeypatch, simulator, caplog):
    from airflow_provider_luma.errors import LumaConfigurationError
    from airflow_provider_luma.hooks.luma import LumaHook

    conn = json.loads(connection_json(simulator, budget_redis_conn_id=7))
    monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", json.dumps(conn))
    with pytest.raises(LumaConfigurationError, match="budget_redis_conn_id"):
        _ = LumaHook().settings
    SETTINGS_CACHE.clear()
    monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", connection_json(simulator, budget_redis_conn_id=REDIS_CONN))
    assert LumaHook().settings.budget_redis_conn_id == REDIS_CONN
    assert "'budget_redis_conn_id' of connection 'luma_default' is set without 'max_calls_per_second'" in caplog.text


def run_waits(generations: list[dict], timeout: float = 60) -> list[str]:
    from airflow_provider_luma.triggers.luma import LumaGenerationTrigger

    async def one(generation: dict) -> str:
        trigger = LumaGenerationTrigger([generation], deadline=time.time() + timeout)
        async for event in trigger.run():
            return event.payload["status"]
        raise AssertionError("no event")

    async def every() -> list[str]:
        return await asyncio.gather(*(one(generation) for generation in generations))

    return asyncio.run(every())


def budget_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == shared_budget.__name__ and r.levelno >= logging.WARNING]


@pytest.mark.parametrize("reason", ["nothing listens", "no such connection"])
def test_without_its_redis_a_process_says_so_once_and_keeps_its_own_budget(simulator, monkeypatch, caplog, reason):
    simulator.script("alone", queued_seconds=0.1, dreaming_seconds=0.1)
    generations = create_universal(simulator, monkeypatch, 12, "alone")
    if reason == "nothing listens":
        nothing = json.dumps({"conn_type": "redis", "host": "127.0.0.1", "port": free_port()})
        monkeypatch.setenv(f"AIRFLOW_CONN_{REDIS_CONN.upper()}", nothing)
    monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", shared_connection(simulator, 4, 0))
    began = time.time()

    events = run_waits(generations)

    assert events == ["success"] * 12
    (warning,) = budget_warnings(caplog)
    assert "cannot be used" in warning
    assert REDIS_CONN in warning
    polls = [entry["time"] for entry in simulator.requests("video_get") if entry["time"] >= began]
    assert busiest_second(polls) <= 4  # the in-process budget held
    assert max(polls) - min(polls) >= 2.0


def test_a_process_goes_back_to_the_shared_budget_when_redis_returns(redis_conn, monkeypatch, caplog):
    monkeypatch.setattr(shared_budget, "REDIS_RETRY", 0.3)
    budget = call_budget("http://127.0.0.1:1", SENTINEL_KEY, 50, 0, REDIS_CONN)
    assert budget is not None
    budget.release(budget.acquire(), 200)
    redis_conn.kill()
    slot = budget.acquire()
    assert type(slot) is Slot  # the in-process budget
    budget.release(slot, 200)
    assert len(budget_warnings(caplog)) == 1
    redis_conn.start()
    assert type(budget.acquire()) is Slot  # not yet: Redis is tried again after REDIS_RETRY
    time.sleep(0.4)
    assert isinstance(budget.acquire(), SharedSlot)
    assert "answers again" in caplog.text
    assert len(budget_warnings(caplog)) == 1


def test_a_redis_connection_fixed_meanwhile_is_read_again(redis_server, monkeypatch, caplog):
    # The connection names a port nothing listens on; it is corrected while the budget runs alone.
    monkeypatch.setattr(shared_budget, "REDIS_RETRY", 0.2)
    variable = f"AIRFLOW_CONN_{REDIS_CONN.upper()}"
    monkeypatch.setenv(variable, json.dumps({"conn_type": "redis", "host": "127.0.0.1", "port": free_port()}))
    budget = call_budget("http://127.0.0.1:1", SENTINEL_KEY, 50, 0, REDIS_CONN)
    assert budget is not None

    async def take() -> Slot:
        slot = await budget.aacquire()
        budget.release(slot, 200)
        return slot

    assert type(budget.acquire()) is Slot
    assert type(asyncio.run(take())) is Slot
    monkeypatch.setenv(variable, redis_server.connection_json())
    time.sleep(0.3)
    assert isinstance(budget.acquire(), SharedSlot)
    time.sleep(0.3)
    assert isinstance(asyncio.run(take()), SharedSlot)
    assert len(budget_warnings(caplog)) == 1


def test_a_queued_wait_ends_at_its_deadline_in_either_budget(redis_conn):
    budget = call_budget("http://127.0.0.1:1", SENTINEL_KEY, 1, 0, REDIS_CONN)
    assert isinstance(budget, SharedCallBudget)
    stored = client_of(redis_conn)
    queue = budget.keys[KEY_NAMES.index("queue")]

    async def main() -> None:
        first = await budget.aacquire()
        budget.release(first, 200)
        began = time.time()
        with pytest.raises(BudgetTimeout):
            await budget.aacquire(deadline=began + 0.3)  # the next start is ~1 s away
        assert time.time() - began < 0.9
        assert stored.zcard(queue) == 0  # it left the queue

    asyncio.run(main())
    with pytest.raises(BudgetTimeout):
        budget.acquire(deadline=time.time() + 0.2)
    assert stored.zcard(queue) == 0
    redis_conn.kill()  # the in-process fallback keeps deadlines too
    budget.acquire()
    with pytest.raises(BudgetTimeout):
        budget.acquire(deadline=time.time() + 0.2)


def test_a_thousand_waits_on_one_loop_share_redis_without_starving(redis_conn, caplog):
    # redis-py's blocking pool lets newcomers take freed connections first: without the budget's own
    # gate, some of these waited past the pool's time-out and the budget took Redis for unreachable.
    budget = call_budget("http://127.0.0.1:1", SENTINEL_KEY, 1e6, 0, REDIS_CONN)
    assert budget is not None
    kinds: list[str] = []

    async def one() -> None:
        for _ in range(5):
            slot = await budget.aacquire()
            kinds.append(type(slot).__name__)
            budget.release(slot, 200)

    async def main() -> None:
        await asyncio.gather(*(one() for _ in range(1000)))

    asyncio.run(main())
    assert kinds == ["SharedSlot"] * 5000
    assert not budget_warnings(caplog)


# -- several processes, one Redis ------------------------------------------------------------------


def client_env(sim: LumaSimulator, server: RedisServer, rate: float, burst: int) -> dict[str, str]:
    """A client's connections: ``luma_default`` with the Redis extra, ``luma_alone`` without it, the Redis one."""
    return {
        f"AIRFLOW_CONN_{REDIS_CONN.upper()}": server.connection_json(),
        "AIRFLOW_CONN_LUMA_DEFAULT": shared_connection(sim, rate, burst),
        "AIRFLOW_CONN_LUMA_ALONE": shared_connection(sim, rate, burst, shared=False),
    }


def test_processes_sharing_redis_keep_one_bound_at_the_api_and_without_it_do_not(simulator, monkeypatch, redis_conn):
    # Three processes, each a triggerer's loop of 16 waits and a worker thread of 4 fetches, one key,
    # max_calls_per_second=5 and max_call_burst=5: no window may hold more than 10 calls. The same
    # processes then run the same calls through a connection without the Redis extra.
    simulator.script("shared", queued_seconds=0.05, dreaming_seconds=0.05)
    generations = create_universal(simulator, monkeypatch, 60, "shared")
    time.sleep(0.2)  # all completed: every wait and fetch makes one call
    env = client_env(simulator, redis_conn, 5, 5)
    plans = [(env, generations[i * 20 : i * 20 + 16], generations[i * 20 + 16 : (i + 1) * 20]) for i in range(3)]
    figures = {}
    with running_clients(plans, conn_ids=("luma_default", "luma_alone")) as clients:
        for conn_id in ("luma_default", "luma_alone"):
            began = time.time()
            for client in clients:
                client.go(conn_id)
            for report in [client.report() for client in clients]:
                assert report["events"] == ["success"] * 16, report
                assert report["fetched"] == ["completed"] * 4, report
                assert not report["warnings"], report
                assert not report["errors"], report
            polls = [entry["time"] for entry in simulator.requests("video_get") if entry["time"] >= began]
            assert len(polls) == 60
            figures[conn_id] = busiest_second(polls)
    print(f"busiest second: {figures['luma_default']} calls with the shared budget, {figures['luma_alone']} without")
    assert figures["luma_default"] <= 10
    assert figures["luma_alone"] > 10  # each process keeps its own budget: the test can tell
    stored = client_of(redis_conn)
    assert all(key_fingerprint(SENTINEL_KEY) in name and SENTINEL_KEY not in name for name in stored.keys("*"))


def complete(sim: LumaSimulator, generations: list[dict]) -> None:
    """End the waits: their generations complete now (the clients take seconds to start, so no timeline fits)."""
    for generation in generations:
        sim.set_state(generation["id"], "completed")


def test_a_429_in_one_process_pauses_the_others(simulator, monkeypatch, redis_conn):
    simulator.script("paused", queued_seconds=0.05, dreaming_seconds=600)
    generations = create_universal(simulator, monkeypatch, 24, "paused")
    env = client_env(simulator, redis_conn, 40, 0)
    with running_clients([(env, generations[index * 8 : (index + 1) * 8], []) for index in range(3)]) as clients:
        for client in clients:
            client.go()
        time.sleep(2.5)  # every wait is polling (every 2 s)
        simulator.inject_fault("429", endpoint="video_get", retry_after="3")
        time.sleep(5.5)  # the pause, and the polls after it
        complete(simulator, generations)
        reports = [client.report() for client in clients]

    assert all(report["events"] == ["success"] * 8 for report in reports), reports
    polls = simulator.requests("video_get")
    (limited,) = [entry for entry in polls if entry["status"] == 429]
    answered_at = limited["time"] + limited["elapsed"]
    owner = next(i for i, c in enumerate(clients) if limited["query"]["generation_id"] in c.ids)
    # The pause begins when the 429 reaches Redis: its process has read the answer and told Redis
    # (a task on its loop, a round trip). Calls let through before that go on; on a loaded machine
    # that takes up to a few hundred milliseconds.
    told = answered_at + 0.5
    after = [entry for entry in polls if entry["time"] > told]
    # No process sent a call for the 3 s the API asked for; then each one went on.
    assert min(entry["time"] for entry in after) >= answered_at + 3.0 - 0.1
    for index, client in enumerate(clients):
        if index == owner:
            continue
        resumed = min(entry["time"] for entry in after if entry["query"]["generation_id"] in client.ids)
        assert resumed <= answered_at + 3.0 + 1.0, "its waits were held by the pause, not idle"


def test_redis_killed_mid_run_one_warning_per_process_and_the_waits_go_on(simulator, monkeypatch, redis_conn):
    simulator.script("killed", queued_seconds=0.05, dreaming_seconds=600)
    generations = create_universal(simulator, monkeypatch, 16, "killed")
    env = client_env(simulator, redis_conn, 5, 5)
    with running_clients([(env, generations[:8], []), (env, generations[8:], [])]) as clients:
        for client in clients:
            client.go()
        time.sleep(1.5)
        redis_conn.kill()
        killed_at = time.time()
        time.sleep(4.5)  # two more polls of each wait, on the in-process budget
        complete(simulator, generations)
        reports = [client.report() for client in clients]

    for client, report in zip(clients, reports, strict=True):
        assert report["events"] == ["success"] * 8, report
        (warning,) = report["warnings"]
        assert "cannot be used" in warning
        assert REDIS_CONN in warning
        polled_after = [
            entry["time"]
            for entry in simulator.requests("video_get")
            if entry["time"] > killed_at and entry["query"]["generation_id"] in client.ids
        ]
        assert polled_after, "the waits went on after Redis was gone"
        assert busiest_second(polled_after) <= 10  # each on its own budget


def test_a_wait_queued_behind_another_process_keeps_its_deadline_and_a_killed_process_holds_no_queue(
    simulator, monkeypatch, redis_conn
):
    monkeypatch.setattr(shared_budget, "STALE", 1.0)
    simulator.script("queued", queued_seconds=0.05, dreaming_seconds=0.05)
    generations = create_universal(simulator, monkeypatch, 12, "queued")
    env = client_env(simulator, redis_conn, 2, 0)
    (holder,) = start_clients([(env, generations, [])])  # 12 waits join the queue at once: 6 s of it
    budget = call_budget(simulator.base_url, SENTINEL_KEY, 2, 0, REDIS_CONN)
    assert isinstance(budget, SharedCallBudget)
    stored = client_of(redis_conn)
    queue, state = (budget.keys[KEY_NAMES.index(name)] for name in ("queue", "state"))
    try:
        holder.go()
        while stored.zcard(queue) < 8:
            time.sleep(0.02)
        began = time.time()
        with pytest.raises(BudgetTimeout):
            asyncio.run(budget.aacquire(deadline=began + 1.0))
        assert time.time() - began < 1.8
        mine = stored.hget(state, "ticket")
        assert mine not in stored.zrange(queue, 0, -1)  # it left the queue at its deadline
        holder.kill()  # its queued tickets stay in Redis, and their waiters never ask again
        assert stored.zcard(queue) > 0
        slot = budget.acquire(deadline=time.time() + 20)  # dropped as stale, not waited for forever
    finally:
        holder.kill()
    assert not find_leaks({"holder": holder.output})
    assert isinstance(slot, SharedSlot)
    assert stored.zcard(queue) == 0
