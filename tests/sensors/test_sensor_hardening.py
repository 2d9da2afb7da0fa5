"""LumaGenerationSensor hardening (issue 11, items 12-13): a bounded first check; "left out" across pokes."""

from __future__ import annotations

import json
import time

import pytest
from airflow.providers.common.compat.sdk import TaskDeferred

from airflow_provider_luma.errors import LumaError
from airflow_provider_luma.hooks.luma import LumaHook
from airflow_provider_luma.sensors.luma import FIRST_CHECK_SECONDS, LumaGenerationSensor
from airflow_provider_luma.waiting import MISSING_ANSWERS_LIMIT
from tests.support.connection import SENTINEL_KEY
from tests.support.stub_server import StubRequest, StubServer

GEN_A = "4f1c0000-0000-4000-8000-00000000000a"
GEN_B = "4f1c0000-0000-4000-8000-00000000000b"
#: Loose on purpose (a loaded 2-core machine): the point is "seconds, not minutes".
WALL_BOUND = FIRST_CHECK_SECONDS + 10


def execute_in_thread(sensor: LumaGenerationSensor, bound: float) -> tuple[BaseException | None, float]:
    """
    Run ``sensor.execute``; what it raised and how long it took (fails past ``bound``). In this thread:
    Airflow 2.11's executor safeguard keeps thread-local state that another thread does not have; the
    test's own time-out catches a hang.
    """
    started = time.monotonic()
    try:
        sensor.execute({})
    except BaseException as error:  # TaskDeferred is the expected outcome
        seconds = time.monotonic() - started
        assert seconds < bound, f"the first check held the worker for {seconds:.1f} s, more than {bound} s"
        return error, seconds
    return None, time.monotonic() - started


# -- 12. the first check before deferring is short and not retried ---------------------------------


@pytest.mark.parametrize(
    ("fault", "options"),
    [
        ("429", {"retry_after": 60}),  # the hook would sleep 60 s between retries
        ("slow", {"delay": 40}),  # a hanging API: the connection's read time-out is 10 s, retried 3 times
        ("503", {}),  # answered at once: retried with back-off before the fix
    ],
)
@pytest.mark.timeout(120)
def test_the_first_check_is_bounded_and_not_retried(luma_conn, fault, options):
    generation = LumaHook().create_generation("slow first check")
    luma_conn.inject_fault(fault, endpoint="get", times=20, **options)
    sensor = LumaGenerationSensor(task_id="wait", generation_id=generation.id, timeout=600)
    error, seconds = execute_in_thread(sensor, WALL_BOUND)
    assert isinstance(error, TaskDeferred), error  # the trigger does the rest, with the whole deadline
    assert error.trigger.serialize()[1]["deadline"] >= time.time() + 500
    assert seconds < WALL_BOUND
    if fault != "slow":  # a held request is logged when it ends
        assert luma_conn.count("get") == 1


# -- 13. "left out 3 times" across pokes -------------------------------------------------------------


def leaves_out_b(first_answers_only: int | None = None):
    """A multi-fetch that leaves out GEN_B (all the time, or only in its first answers), as some proxies do."""
    calls: list[StubRequest] = []

    def answer(request: StubRequest) -> tuple[int, dict[str, str], bytes]:
        calls.append(request)
        items = [{"id": GEN_A, "state": "dreaming"}]
        if first_answers_only is not None and len(calls) > first_answers_only:
            items.append({"id": GEN_B, "state": "dreaming"})
        return 200, {"Content-Type": "application/json"}, json.dumps(items).encode()

    return answer


def use_stub(monkeypatch: pytest.MonkeyPatch, server: StubServer) -> None:
    extra = {"max_retries": 0, "min_poll_interval": 0.05, "long_poll_hold": 0.1, "multi_hold_param": "none"}
    conn = {"conn_type": "luma", "host": server.url, "password": SENTINEL_KEY, "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", json.dumps(conn))


def test_poke_mode_counts_answers_that_leave_an_id_out_across_pokes(monkeypatch):
    with StubServer(leaves_out_b()) as server:
        use_stub(monkeypatch, server)
        sensor = LumaGenerationSensor(task_id="wait", generation_ids=[GEN_A, GEN_B], deferrable=False, mode="poke")
        for _ in range(MISSING_ANSWERS_LIMIT - 1):
            assert sensor.poke({}).is_done is False
        with pytest.raises(LumaError, match=f"left out generation\\(s\\) {GEN_B} {MISSING_ANSWERS_LIMIT} times"):
            sensor.poke({})
    assert len(server.requests) == MISSING_ANSWERS_LIMIT  # one call per poke


def test_reschedule_mode_confirms_a_left_out_id_within_the_poke(monkeypatch):
    # A new sensor object per poke, and XCom cleared at each start: nothing of a poke reaches the next.
    with StubServer(leaves_out_b()) as server:
        use_stub(monkeypatch, server)
        sensor = LumaGenerationSensor(
            task_id="wait", generation_ids=[GEN_A, GEN_B], deferrable=False, mode="reschedule"
        )
        with pytest.raises(LumaError, match=f"left out generation\\(s\\) {GEN_B} {MISSING_ANSWERS_LIMIT} times"):
            sensor.poke({})
    assert len(server.requests) == MISSING_ANSWERS_LIMIT


def test_reschedule_mode_goes_on_when_the_id_comes_back(monkeypatch):
    with StubServer(leaves_out_b(first_answers_only=1)) as server:
        use_stub(monkeypatch, server)
        sensor = LumaGenerationSensor(
            task_id="wait", generation_ids=[GEN_A, GEN_B], deferrable=False, mode="reschedule"
        )
        assert sensor.poke({}).is_done is False
    assert len(server.requests) == 2  # the poke, and one confirmation that found GEN_B again


def test_poke_mode_starts_counting_afresh_on_a_new_try(monkeypatch):
    class TaskInstance:
        try_number = 1

    ti = TaskInstance()
    with StubServer(leaves_out_b()) as server:
        use_stub(monkeypatch, server)
        sensor = LumaGenerationSensor(task_id="wait", generation_ids=[GEN_A, GEN_B], deferrable=False, mode="poke")
        for _ in range(MISSING_ANSWERS_LIMIT - 1):
            assert sensor.poke({"ti": ti}).is_done is False
        ti.try_number = 2
        assert sensor.poke({"ti": ti}).is_done is False
