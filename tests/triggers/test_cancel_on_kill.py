"""
cancel_on_kill: a task marked failed cancels its unfinished generation with exactly one DELETE on Luma's
API; clear, mark-success, an unreadable state, a finished generation or cancel_on_kill=False never do.

Real HTTP to the simulator, the real trigger on an event loop (cancelled as the triggerer cancels it, then
its ``on_kill`` awaited as Airflow 3.3.2 does) and the real operators. One seam is replaced: the task
instance's state as Airflow's supervisor would answer it (``cancel.task_state``), which needs a running
Airflow; its parsing of the 3.3 answer's shape is tested on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from types import SimpleNamespace

import pytest
from airflow.providers.common.compat.sdk import TaskDeferred

from airflow_provider_luma import cancel
from airflow_provider_luma.errors import LumaConfigurationError
from airflow_provider_luma.hooks.luma import LumaHook
from airflow_provider_luma.operators.luma import LumaGenerateVideoOperator
from airflow_provider_luma.sensors.luma import LumaGenerationSensor
from airflow_provider_luma.testing import LumaSimulator
from airflow_provider_luma.triggers.luma import LumaGenerationTrigger
from tests.support.connection import connection_json
from tests.support.events import all_events
from tests.support.logs import logged_text
from tests.support.tasks import task_context

USER_ACTION = "__airflow_user_action__"  # Airflow 3.3.2's _USER_ACTION_CANCEL_MSG
TI = SimpleNamespace(dag_id="d", run_id="r", task_id="wait", map_index=-1)


@pytest.fixture
def luma(monkeypatch, simulator: LumaSimulator) -> LumaSimulator:
    """``luma_default`` on Luma's backend of the simulator, whose "slow" prompts stay queued for a minute."""
    monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", connection_json(simulator, backend="luma", poll_interval=2))
    simulator.script("slow", queued_seconds=60)
    return simulator


def user_left_the_task(monkeypatch, state: str | None, read: bool = True) -> None:
    monkeypatch.setattr(cancel, "task_state", lambda ti: (read, state))


async def kill_deferred(trigger: LumaGenerationTrigger) -> None:
    """What Airflow 3.3.2's triggerer does on a user action: cancel the run with its message, await on_kill."""
    trigger.task_instance = TI
    running = asyncio.ensure_future(all_events(trigger))
    await asyncio.sleep(0.3)  # the wait has made its first poll
    running.cancel(USER_ACTION)
    with pytest.raises(asyncio.CancelledError):
        await running
    await trigger.on_kill()


async def kill_deferred_cancelling_every_loop(trigger: LumaGenerationTrigger, loop_seconds: float = 0.2) -> None:
    """
    :func:`kill_deferred` as Airflow 3.3.2's triggerer really does it: ``on_kill`` is awaited (under
    ``wait_for``, ``triggerer_job_runner.py:1655-1658``) inside the cancelled task, which the runner cancels
    again on each pass of its loop until the task has ended (``:1249-1253``, ``:1408-1411``).
    """
    trigger.task_instance = TI

    async def run_trigger() -> None:
        try:
            await all_events(trigger)
        except asyncio.CancelledError as error:
            if error.args == (USER_ACTION,):
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(trigger.on_kill(), timeout=30)
            raise

    running = asyncio.ensure_future(run_trigger())
    await asyncio.sleep(0.3)  # the wait has made its first poll
    while not running.done():
        running.cancel(USER_ACTION)
        await asyncio.sleep(loop_seconds)


def deferred_wait(generation_id: str, cancel_on_kill: bool = True) -> LumaGenerationTrigger:
    return LumaGenerationTrigger(
        refs=[{"id": generation_id, "api": "dream-machine"}], deadline=time.time() + 30, cancel_on_kill=cancel_on_kill
    )


@pytest.mark.parametrize(
    ("state", "read", "deletes"),
    [("failed", True, 1), (None, True, 0), ("restarting", True, 0), ("success", True, 0), (None, False, 0)],
    ids=["marked-failed", "cleared", "cleared-while-running", "marked-success", "state-unreadable"],
)
def test_a_deferred_wait_is_cancelled_only_when_marked_failed(monkeypatch, luma, state, read, deletes):
    generation = LumaHook().create_generation("slow fox")
    user_left_the_task(monkeypatch, state, read)
    asyncio.run(kill_deferred(deferred_wait(generation.id)))
    assert luma.count("dm_delete") == deletes
    assert [r["path"].rsplit("/", 1)[-1] for r in luma.requests("dm_delete")] == [generation.id] * deletes


def test_a_cancel_slower_than_the_triggerers_loop_still_ends_and_is_told(monkeypatch, luma, caplog, capsys):
    # Airflow 3.3.2 cancels the trigger again about every second while its on_kill runs: a DELETE that
    # takes longer (here 1.5 s, against a 0.2 s loop) was cut off before its answer and its log line.
    generation = LumaHook().create_generation("slow fox")
    user_left_the_task(monkeypatch, "failed")
    luma.inject_fault("slow", endpoint="dm_delete", delay=1.5)
    told = f"Task marked failed: cancelled Luma generation(s) {generation.id}."

    async def scenario() -> None:
        await kill_deferred_cancelling_every_loop(deferred_wait(generation.id))
        for _ in range(100):  # the cancel may go on after Airflow has given up on the trigger: up to 10 s
            if asyncio.all_tasks() == {asyncio.current_task()}:
                break
            await asyncio.sleep(0.1)

    with caplog.at_level("INFO"):
        asyncio.run(scenario())
    assert told in logged_text(caplog, capsys)
    assert [r["path"].rsplit("/", 1)[-1] for r in luma.requests("dm_delete")] == [generation.id]


def test_a_cancel_that_outlasts_its_bound_is_told_and_never_raised(monkeypatch, luma, caplog, capsys):
    generation = LumaHook().create_generation("slow fox")
    user_left_the_task(monkeypatch, "failed")
    monkeypatch.setattr(cancel, "ON_KILL_SECONDS", 1.0)
    luma.inject_fault("slow", endpoint="dm_delete", delay=3)
    trigger = deferred_wait(generation.id)
    trigger.task_instance = TI
    with caplog.at_level("INFO"):
        asyncio.run(trigger.on_kill())
    text = logged_text(caplog, capsys)
    assert "The cancel of the task's Luma generations did not end within 1 s." in text
    assert "Task marked failed" not in text


def test_the_cancel_ends_before_airflows_on_kill_timeout(monkeypatch):
    # Airflow stops waiting for on_kill at [triggerer] on_kill_timeout: the cancel is bounded under it.
    assert cancel.on_kill_seconds() == cancel.ON_KILL_SECONDS == 25.0  # Airflow's default: 30 s
    monkeypatch.setenv("AIRFLOW__TRIGGERER__ON_KILL_TIMEOUT", "10")
    assert cancel.on_kill_seconds() == 9.0
    monkeypatch.setenv("AIRFLOW__TRIGGERER__ON_KILL_TIMEOUT", "0")
    assert cancel.on_kill_seconds() == 1.0


def test_cancel_on_kill_off_sends_nothing_and_asks_nothing(monkeypatch, luma):
    generation = LumaHook().create_generation("slow fox")
    monkeypatch.setattr(cancel, "task_state", lambda ti: pytest.fail("the state is not even asked"))
    trigger = deferred_wait(generation.id, cancel_on_kill=False)
    asyncio.run(kill_deferred(trigger))
    assert luma.count("dm_delete") == 0
    assert "cancel_on_kill" not in trigger.serialize()[1]
    assert deferred_wait(generation.id).serialize()[1]["cancel_on_kill"] is True


def test_a_completed_generation_is_never_deleted(monkeypatch, luma):
    generation = LumaHook().create_generation("quick fox")
    luma.set_state(generation.id, "completed")
    user_left_the_task(monkeypatch, "failed")
    trigger = deferred_wait(generation.id)
    trigger.task_instance = TI
    asyncio.run(trigger.on_kill())
    assert luma.count("dm_delete") == 0
    assert LumaHook().get_generation(generation.id).state == "completed"


def test_the_worker_cancels_its_wait_when_marked_failed(monkeypatch, luma):
    user_left_the_task(monkeypatch, "failed")
    operator = LumaGenerateVideoOperator(
        task_id="generate", prompt="slow fox", model="luma/ray-flash-2", deferrable=False, cancel_on_kill=True
    )

    def kill_once_waiting() -> None:  # Airflow's SIGTERM handler calls on_kill while execute waits
        deadline = time.time() + 10
        while not luma.count("dm_get") and time.time() < deadline:
            time.sleep(0.05)
        operator.on_kill()

    # execute in this thread (Airflow 2.11's executor safeguard refuses another), the kill beside it
    killer = threading.Thread(target=kill_once_waiting)
    killer.start()
    with pytest.raises(Exception, match=r"(?i)not found"):  # the wait ends once the generation is gone
        operator.execute(task_context())
    killer.join(30)
    assert luma.count("dm_delete") == 1


def test_the_sensor_hands_cancel_on_kill_to_its_trigger(luma):
    generation = LumaHook().create_generation("slow fox")
    sensor = LumaGenerationSensor(task_id="wait", generation_id=generation.to_dict(), cancel_on_kill=True)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(task_context())
    kwargs = deferred.value.trigger.serialize()[1]
    assert kwargs["cancel_on_kill"] is True
    assert kwargs["refs"] == [{"id": generation.id, "api": "dream-machine"}]


def test_cancel_on_kill_on_the_ai_ml_api_is_refused_before_paying(monkeypatch, simulator):
    monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", connection_json(simulator))
    operator = LumaGenerateVideoOperator(task_id="generate", prompt="a fox", cancel_on_kill=True)
    with pytest.raises(LumaConfigurationError, match="the AI/ML API, which has no cancel"):
        operator.execute(task_context())
    assert simulator.requests() == []


def test_the_task_state_is_read_from_airflow_3s_answer_shape():
    assert cancel._state({"r": {"wait": "failed"}}, TI) == "failed"
    mapped = SimpleNamespace(**{**vars(TI), "map_index": 2})
    assert cancel._state({"r": {"wait_2": "success", "wait": None}}, mapped) == "success"
    assert cancel._state({}, TI) is None
