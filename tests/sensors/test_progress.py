"""
``report_progress``: the wait long-polls for the next state instead of the target, and logs each state
with the seconds since the generation's creation; off, nothing changes (one long poll for the target).

The decisions are :class:`WaitLoop`'s (pure, checked with a fake clock); the sensor, the trigger and
the generate operator only carry the flag (checked against the simulator, counting its fetches).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from airflow_provider_luma.hooks.luma import LumaHook
from airflow_provider_luma.models import ApiFamily, Generation, GenerationRef, GenerationState
from airflow_provider_luma.operators.luma import LumaGenerateVideoOperator
from airflow_provider_luma.sensors.luma import LumaGenerationSensor
from airflow_provider_luma.testing import LumaSimulator
from airflow_provider_luma.triggers.luma import LumaGenerationTrigger
from airflow_provider_luma.waiting import Finished, Poll, Sleep, Wait, WaitLoop, WaitPacing
from tests.support.connection import SENTINEL_KEY, connection_json
from tests.support.dag_runner import RECORD_TASK, recorded, run_dag_source
from tests.support.logs import logged_text
from tests.support.tasks import FakeTaskInstance

PROGRESS_LINE = re.compile(r"Luma generation (\S+): (queued|dreaming|completed|failed) after (\d+) s\.")
#: The simulated timeline of these tests: queued for QUEUED s, then dreaming for DREAMING s.
QUEUED, DREAMING = 2.0, 2.0
#: A ``dag.test()`` run's wait task starts a second or more after its submit task created the generation
#: (2 s on a loaded CI machine): its simulator stays queued longer, so that the wait still sees 'queued'.
DAG_RUN_QUEUED = 5.0


def progress(text: str, generation_id: str | None = None) -> list[tuple[str, int]]:
    """The ``(state, seconds)`` of each progress line in ``text`` (of one generation, if given)."""
    return [
        (state, int(seconds)) for gid, state, seconds in PROGRESS_LINE.findall(text) if generation_id in (None, gid)
    ]


def assert_timeline(lines: list[tuple[str, int]], states: list[str], queued: float = QUEUED) -> None:
    """
    ``lines`` name ``states`` in order, each at its time in the simulated timeline (give or take a second).

    'queued' is the state the wait finds, told when found: any time while it lasts (a wait that starts
    late finds it late). Each later state is reached while the wait holds for it: told when reached.
    """
    assert [state for state, _ in lines] == states, lines
    reached = {"dreaming": queued, "completed": queued + DREAMING}
    for state, seconds in lines:
        if state == "queued":
            assert 0 <= seconds <= queued, lines
        else:
            assert abs(seconds - reached[state]) <= 1, lines


def first_of_each_state(lines: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """``lines`` without a state told again (by a second wait of the same generation, or a second log handler)."""
    return [line for index, line in enumerate(lines) if line[0] not in {state for state, _ in lines[:index]}]


def held_for(sim: LumaSimulator, generation_id: str) -> list[str | None]:
    """The state each fetch of ``generation_id`` held for, in order (``None``: answered at once, no hold asked)."""
    return [e["query"].get("state") for e in sim.requests("get") if e["query"].get("generation_id") == generation_id]


def running_simulator(monkeypatch: pytest.MonkeyPatch, queued: float) -> Iterator[LumaSimulator]:
    """A simulator as ``luma_default``, holding long polls 30 s as the real service does (none expires here)."""
    simulator = LumaSimulator(api_key=SENTINEL_KEY, hold_seconds=30.0, queued_seconds=queued, dreaming_seconds=DREAMING)
    simulator.start()
    monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", connection_json(simulator))
    try:
        yield simulator
    finally:
        simulator.stop()


@pytest.fixture
def sim(monkeypatch: pytest.MonkeyPatch) -> Iterator[LumaSimulator]:
    """The simulator of these tests: queued for QUEUED s, then dreaming for DREAMING s."""
    yield from running_simulator(monkeypatch, QUEUED)


@pytest.fixture
def dag_run_sim(monkeypatch: pytest.MonkeyPatch) -> Iterator[LumaSimulator]:
    """The simulator of a ``dag.test()`` run: queued for DAG_RUN_QUEUED s, then dreaming for DREAMING s."""
    yield from running_simulator(monkeypatch, DAG_RUN_QUEUED)


# -- WaitLoop: the decisions, with a fake clock ---------------------------------------------------

CREATED = 1_750_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = CREATED + 0.4

    def __call__(self) -> float:
        return self.now


def gen(state: str, generation_id: str = "g1", created_at: str | None = "2025-06-15T15:06:40.000Z") -> Generation:
    return Generation(generation_id, state, created_at=created_at)


def loop(clock: Clock, target: GenerationState = GenerationState.COMPLETED, **kwargs: Any) -> WaitLoop:
    kwargs.setdefault("report_progress", True)
    api = kwargs.pop("api", ApiFamily.LUMA_AI)
    return WaitLoop(
        [GenerationRef("g1", api)], target, deadline=CREATED + 600, pacing=WaitPacing(), clock=clock, **kwargs
    )


def test_created_at_of_the_fake_clock_is_what_the_api_would_say() -> None:
    assert datetime.fromtimestamp(CREATED, tz=UTC).isoformat() == "2025-06-15T15:06:40+00:00"


def test_each_poll_holds_for_the_next_state_and_goes_on_at_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    wait = loop(clock)
    first = wait.first_step()
    assert isinstance(first, Poll)
    assert first.target is GenerationState.QUEUED

    clock.now = CREATED + 0.5
    step = wait.after_poll([gen("queued")], 0.1)
    # A state moved on: no pause (min_poll_interval is 5 s), hold for the next one.
    assert isinstance(step, Poll)
    assert step.target is GenerationState.DREAMING
    clock.now = CREATED + 3.2
    step = wait.after_poll([gen("dreaming")], 2.7)
    assert isinstance(step, Poll)
    assert step.target is GenerationState.COMPLETED
    clock.now = CREATED + 9.4
    step = wait.after_poll([gen("completed")], 6.2)
    assert isinstance(step, Finished)
    assert step.status == "success"

    text = "\n".join(r.getMessage() for r in caplog.records)
    assert progress(text) == [("queued", 0), ("dreaming", 3), ("completed", 9)]


def test_the_target_alone_decides_when_it_is_over() -> None:
    clock = Clock()
    wait = loop(clock, GenerationState.DREAMING)
    assert wait.poll_target is GenerationState.QUEUED
    step = wait.after_poll([gen("queued")], 0.1)
    assert isinstance(step, Poll)
    assert step.target is GenerationState.DREAMING
    step = wait.after_poll([gen("dreaming")], 2.0)
    assert isinstance(step, Finished)
    assert step.status == "success"


def test_an_answer_that_moves_nothing_keeps_the_pacing() -> None:
    # A server that ignored the hold: the same state again is paced as any early answer.
    clock = Clock()
    wait = loop(clock)
    wait.after_poll([gen("queued")], 0.1)
    step = wait.after_poll([gen("queued")], 0.1)
    assert isinstance(step, Sleep)
    assert step.seconds == pytest.approx(4.9)
    assert isinstance(wait.after_sleep(), Poll)
    assert wait.poll_target is GenerationState.DREAMING


def test_off_it_holds_for_the_target_and_logs_as_before(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    wait = loop(clock, report_progress=False)
    first = wait.first_step()
    assert isinstance(first, Poll)
    assert first.target is GenerationState.COMPLETED
    step = wait.after_poll([gen("queued")], 0.1)
    assert isinstance(step, Sleep)  # paced as always
    assert progress("\n".join(r.getMessage() for r in caplog.records)) == []


def test_on_the_universal_endpoint_only_the_log_lines_change() -> None:
    steps = {}
    for report in (False, True):
        clock = Clock()
        wait = loop(clock, api=ApiFamily.VIDEO, report_progress=report)
        first = wait.first_step()
        assert isinstance(first, Poll)
        assert first.hold is False
        steps[report] = [wait.after_poll([gen("queued")], 0.2), wait.after_poll([gen("dreaming")], 0.2)]
    assert steps[True] == steps[False] == [Sleep(9.8), Sleep(9.8)]


def test_several_generations_hold_for_the_least_advanced() -> None:
    clock = Clock()
    wait = WaitLoop(
        [GenerationRef("a"), GenerationRef("b")],
        GenerationState.COMPLETED,
        deadline=None,
        clock=clock,
        report_progress=True,
    )
    step = wait.after_poll([gen("dreaming", "a"), gen("queued", "b")], 0.1)
    assert isinstance(step, Poll)
    assert step.target is GenerationState.DREAMING
    step = wait.after_poll([gen("completed", "a"), gen("dreaming", "b")], 2.0)
    assert isinstance(step, Poll)
    assert step.generation_ids == ["b"]
    assert step.target is GenerationState.COMPLETED


@pytest.mark.parametrize(
    ("created_at", "seconds"),
    [
        ("2025-06-15T15:06:40.000Z", 5),  # the API's form
        ("2025-06-15T15:06:40", 5),  # no zone: UTC
        ("2025-06-15T17:06:40+02:00", 5),
        (str(int(CREATED)), 5),  # epoch seconds
        (str(int(CREATED * 1000)), 5),  # epoch milliseconds
        (None, 0),  # unknown: since the first sighting
        ("yesterday", 0),
    ],
)
def test_elapsed_time_counts_from_the_creation(caplog: pytest.LogCaptureFixture, created_at: str | None, seconds: int):
    clock = Clock()
    clock.now = CREATED + 5.2
    wait = loop(clock)
    wait.after_poll([gen("queued", created_at=created_at)], 0.1)
    clock.now += 2
    wait.after_poll([gen("dreaming", created_at=created_at)], 2)
    lines = progress("\n".join(r.getMessage() for r in caplog.records))
    assert lines == [("queued", seconds), ("dreaming", seconds + 2)]


def test_the_wait_sets_it_on_every_loop() -> None:
    loops = [WaitLoop([GenerationRef("a", api)], GenerationState.COMPLETED, deadline=None) for api in ApiFamily]
    wait = Wait(loops, ["a"])
    assert wait.report_progress is False
    wait.report_progress = True
    assert wait.report_progress is True
    assert all(one.report_progress for one in loops)


# -- the trigger alone ----------------------------------------------------------------------------


@pytest.mark.parametrize("report", [True, False])
async def test_trigger_reports_each_state_at_one_call_per_state(
    sim: LumaSimulator, report: bool, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    generation = await LumaHook().acreate_generation("a fox")
    trigger = LumaGenerationTrigger([generation.id], deadline=time.time() + 60, report_progress=report)
    assert ("report_progress" in trigger.serialize()[1]) is report  # off: serialized as before
    events = [event.payload async for event in trigger.run()]

    assert [event["status"] for event in events] == ["success"]
    text = logged_text(caplog, capsys)
    if report:
        # (Airflow 2 logs each line to the captured records and the console: told twice in this text.)
        assert_timeline(first_of_each_state(progress(text, generation.id)), ["queued", "dreaming", "completed"])
        # One fetch per state: 'queued' answers at once, each later one is held until reached.
        assert held_for(sim, generation.id) == ["queued", "dreaming", "completed"]
        assert [e["released_by"] for e in sim.requests("get")] == ["immediate", "state", "state"]
    else:
        assert progress(text) == []
        assert held_for(sim, generation.id) == ["completed"]  # held right through 'dreaming'


def test_trigger_round_trips_the_flag_as_plain_json() -> None:
    trigger = LumaGenerationTrigger(["g1"], deadline=123.0, report_progress=True)
    classpath, kwargs = trigger.serialize()
    assert kwargs["report_progress"] is True
    assert LumaGenerationTrigger(**kwargs).serialize() == (classpath, kwargs)


# -- the sensor: a dag.test() run, and poke mode --------------------------------------------------

SENSOR_DAG = (
    RECORD_TASK
    + """
import pendulum
from airflow.providers.common.compat.sdk import DAG
from airflow_provider_luma.hooks.luma import LumaHook
from airflow_provider_luma.sensors.luma import LumaGenerationSensor

class Submit(BaseOperator):
    def execute(self, context):
        return LumaHook().create_generation("a fox").to_dict()

with DAG("DAG_ID", schedule=None, start_date=pendulum.datetime(2026, 1, 1), render_template_as_native_obj=True):
    submit = Submit(task_id="submit")
    wait = LumaGenerationSensor(task_id="wait", generation_id=submit.output, timeout=60, REPORT)
    Record(task_id="record", value="{{ ti.xcom_pull('wait') }}").set_upstream(wait)
"""
)


@pytest.mark.parametrize("report", [True, False])
def test_sensor_in_a_dag_run_reports_each_state_at_one_call_per_state(
    dag_run_sim, airflow_db, tmp_path, monkeypatch, caplog, capsys, report: bool
) -> None:
    monkeypatch.setenv("LUMA_TEST_RESULT", str(tmp_path / "result.jsonl"))
    dag_id = f"luma_progress_{str(report).lower()}"
    source = SENSOR_DAG.replace("DAG_ID", dag_id).replace("REPORT", f"report_progress={report}")
    result = run_dag_source(source, dag_id)

    assert result.state == "success", result
    generation_id = recorded(tmp_path / "result.jsonl")["record"]["id"]
    text = logged_text(caplog, capsys)
    if report:
        # The sensor's check before deferring sees 'queued'; its trigger starts afresh: 'queued' again
        # (at once), then one held fetch per state. The extra calls: one per state before the target.
        lines = first_of_each_state(progress(text, generation_id))
        assert_timeline(lines, ["queued", "dreaming", "completed"], queued=DAG_RUN_QUEUED)
        assert held_for(dag_run_sim, generation_id) == [None, "queued", "dreaming", "completed"]
    else:
        assert progress(text) == []
        assert held_for(dag_run_sim, generation_id) == [None, "completed"]  # as without the flag: check, one long poll


def test_sensor_poke_mode_holds_each_poke_for_the_next_state(sim: LumaSimulator) -> None:
    generation = LumaHook().create_generation("a fox")
    sensor = LumaGenerationSensor(
        task_id="wait", generation_id=generation.id, deferrable=False, mode="poke", report_progress=True
    )
    # The first poke learns 'queued' (at once) and holds for 'dreaming'; the second holds for 'completed'.
    assert [sensor.poke({}).is_done for _ in range(2)] == [False, True]
    assert held_for(sim, generation.id) == ["queued", "dreaming", "completed"]


def test_sensor_reschedule_mode_holds_each_poke_for_the_next_state(sim: LumaSimulator) -> None:
    generation = LumaHook().create_generation("a fox")
    done = []
    for _ in range(2):  # rescheduled: a new sensor object each poke, which knows nothing of the last
        sensor = LumaGenerationSensor(
            task_id="wait", generation_id=generation.id, deferrable=False, mode="reschedule", report_progress=True
        )
        done.append(sensor.poke({}).is_done)
    assert done == [False, True]
    # Each poke: one call answered at once (where things stand), then one held for the next state.
    assert held_for(sim, generation.id) == ["queued", "dreaming", "queued", "completed"]


# -- the generate operator ------------------------------------------------------------------------


def test_generate_operator_reports_each_state_from_the_create_answer_on(
    sim: LumaSimulator, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    operator = LumaGenerateVideoOperator(task_id="generate", prompt="a fox", deferrable=False, report_progress=True)
    result = operator.execute({"ti": FakeTaskInstance()})

    assert result["state"] == "completed"
    lines = first_of_each_state(progress(logged_text(caplog, capsys), result["id"]))
    assert_timeline(lines, ["queued", "dreaming", "completed"])
    # 'queued' is the create answer's: no fetch for it.
    assert held_for(sim, result["id"]) == ["dreaming", "completed"]


def test_generate_operator_passes_the_flag_to_its_trigger(sim: LumaSimulator) -> None:
    from airflow.providers.common.compat.sdk import TaskDeferred

    for report in (True, False):
        operator = LumaGenerateVideoOperator(task_id="generate", prompt="a fox", report_progress=report)
        with pytest.raises(TaskDeferred) as deferred:
            operator.execute({"ti": FakeTaskInstance()})
        assert deferred.value.trigger.serialize()[1].get("report_progress", False) is report
