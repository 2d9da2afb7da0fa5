"""
Two triggerers share the waits; the one holding more is SIGKILLed mid-wait. Shared by the deployment test
(``tests/deployment/production/test_failover.py``) and the benchmark (``benchmarks/ha.py``).

One DAG run holds ``sensors`` deferred ``LumaGenerationSensor``s, on generations created beforehand, and
``generates`` ``LumaGenerateVideoOperator``s that create their own generation and wait for it in the
triggerer. Every generation dreams until the scenario completes it, so no timing decides the outcome:
once every task is deferred and polled, the triggerer holding more triggers is SIGKILLed; once each of
its triggers was taken over by the survivor (or a bound passed) and one poll interval more went by, every generation is
completed, and the run must end with every task successful.

Measured:

* each task's end state and try (a retry is tolerated only for Airflow's own resume-after-defer race,
  ``tests/deployment/AIRFLOW_RACE.md``); creates per prompt in the simulator's log;
* recovery of each orphaned trigger: from the kill to its row pointing at the survivor (``reassigned``;
  the harness samples the trigger table every 0.2 s) and to the survivor's first poll of that generation
  (``first poll``, the simulator's log); against ``[triggerer] triggerer_health_check_threshold`` + 2 ×
  ``job_heartbeat_sec`` (+ one poll interval for the first poll);
* duplicate held polls: a held poll of a generation starting while another poll of it is held. Two counts:
  ``overlaps in the log`` (the simulator's log as it is), and ``by live triggerers`` (the target): the killed
  triggerer's held polls end at the kill. A SIGKILL closes the socket, but the simulator holds the request
  on (aiohttp does not cancel a handler when its client goes away) and logs it as answered later; which
  triggerer sent each poll is known from its client port, sampled from each triggerer's process tree.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from tests.support.deployment import AirflowDeployment, DeploymentError
from tests.support.simulator_calls import control, create
from tests.support.warmup import heartbeat_stalls

#: Marks the scenario's generations in prompts (scripted to dream until completed by the scenario).
WAIT_TAG, GENERATE_TAG = "[fo-wait]", "[fo-gen]"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

DAG_SOURCE = """
from __future__ import annotations

import pendulum
from airflow.sdk import dag

from airflow_provider_luma.operators.luma import LumaGenerateVideoOperator
from airflow_provider_luma.sensors.luma import LumaGenerationSensor


@dag(dag_id="{dag_id}", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False,
     max_active_tasks=1000)
def failover():
    # retries: only for Airflow's own resume-after-defer race (checked): tests/deployment/AIRFLOW_RACE.md.
    for i in range({sensors}):
        LumaGenerationSensor(task_id=f"wait_{{i}}", generation_id="{{{{ dag_run.conf['ids'][%d] }}}}" % i,
                             luma_conn_id="{conn_id}", timeout=1800, poke_interval=1, retries=1, retry_delay=1)
    for i in range({generates}):
        LumaGenerateVideoOperator(task_id=f"generate_{{i}}", prompt=f"failover generate {{i}} {generate_tag}",
                                  luma_conn_id="{conn_id}", retries=1, retry_delay=1)


failover()
"""


class ClientPorts(threading.Thread):
    """Which triggerer each client port belongs to: samples the TCP connections to the API of each one's tree."""

    def __init__(self, dep: AirflowDeployment, names: Sequence[str], api_port: int, period: float = 0.2) -> None:
        super().__init__(name="client-ports", daemon=True)
        self.dep, self.names, self.api_port, self.period = dep, list(names), api_port, period
        self.stop_event = threading.Event()
        self.owner: dict[int, str] = {}

    def run(self) -> None:
        import psutil

        while not self.stop_event.wait(self.period):
            for name in self.names:
                component = self.dep.components.get(name)
                if component is None or component.process.poll() is not None:
                    continue
                with contextlib.suppress(psutil.Error):
                    root = psutil.Process(component.process.pid)
                    for member in [root, *root.children(recursive=True)]:
                        with contextlib.suppress(psutil.Error):
                            for conn in member.net_connections(kind="tcp"):
                                if conn.raddr and conn.raddr.port == self.api_port:
                                    self.owner.setdefault(conn.laddr.port, name)


@dataclass
class FailoverResult:
    """What one failover run measured (see the module's docstring)."""

    n: int
    run_state: str
    tasks: dict[str, str | None]
    tries_ok: bool
    held_at_kill: dict[str, int]
    victim: str
    survivor: str
    orphans: int
    reassigned_s: list[float]
    first_poll_s: list[float]
    orphans_not_recovered: int
    duplicate_creates: int
    creates: int
    overlaps_in_log: int
    duplicate_held_polls: int
    threshold: float
    heartbeat: float
    poll_interval: float
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ended_right(self) -> int:
        return sum(1 for s in self.tasks.values() if s == "success")

    @property
    def reassign_bound(self) -> float:
        return self.threshold + 2 * self.heartbeat

    @property
    def first_poll_bound(self) -> float:
        return self.reassign_bound + self.poll_interval

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(
            ended_right=self.ended_right, reassign_bound=self.reassign_bound, first_poll_bound=self.first_poll_bound
        )
        return out


def add_triggerer(dep: AirflowDeployment, name: str, queues: str | None = None) -> int:
    """Start one more triggerer (``--skip-serve-logs``) on a running deployment; return its job id."""
    dep.plan[name] = ("triggerer", "--skip-serve-logs", *(("--queues", queues) if queues else ()))
    return dep.start_triggerer(name)


def run_failover(
    dep: AirflowDeployment,
    sim: Any,
    *,
    triggerers: Sequence[str] = ("triggerer", "triggerer-2"),
    sensors: int = 12,
    generates: int = 6,
    conn_id: str = "luma_default",
    dag_id: str = "luma_failover",
    threshold: float = 10.0,
    heartbeat: float = 1.0,
    poll_interval: float = 0.0,
    defer_timeout: float = 300.0,
) -> FailoverResult:
    """Run the scenario on ``dep`` (two running triggerers named ``triggerers``) against ``sim`` (an object with
    ``base_url`` and ``api_key``: the in-process simulator or its CLI); the killed triggerer stays dead.

    ``threshold`` and ``heartbeat`` are the deployment's ``[triggerer] triggerer_health_check_threshold`` and
    ``job_heartbeat_sec``; ``poll_interval`` the connection's least seconds between two polls of a wait.
    """
    started = time.monotonic()
    stalls_before = heartbeat_stalls(dep)
    n = sensors + generates
    api_port = int(sim.base_url.rsplit(":", 1)[1])
    for tag in (WAIT_TAG, GENERATE_TAG):
        control(sim, "POST", "/_sim/script", {"prompt_contains": tag, "queued_seconds": 1, "dreaming_seconds": 36000})
    source = DAG_SOURCE.format(
        dag_id=dag_id, sensors=sensors, generates=generates, conn_id=conn_id, generate_tag=GENERATE_TAG
    )
    dep.add_dag(source, f"{dag_id}.py")
    ids = [create(sim, f"failover wait {i} {WAIT_TAG}")["id"] for i in range(sensors)]
    jobs = {name: dep.triggerer_jobs[name] for name in triggerers}
    ports = ClientPorts(dep, triggerers, api_port)
    ports.start()
    try:
        run_id = dep.trigger(dag_id, conf={"ids": ids})
        deferred = _Deferred(dep, sim, dag_id, run_id, n, jobs)
        _wait(deferred, defer_timeout, dep, lambda: f"every task deferred, held and polled ({deferred.why})")
        time.sleep(2)  # a poll or two more each: the port map learns every connection
        now = time.time()
        ours = dep.run_trigger_ids(dag_id, run_id)
        holders = {tid: _holder_at(h, now) for tid, h in dep.trigger_holders().items() if tid in ours}
        held = {name: sum(1 for h in holders.values() if h == job) for name, job in jobs.items()}
        victim = max(held, key=lambda name: held[name])
        survivor = next(name for name in jobs if name != victim)
        orphans = [tid for tid, h in holders.items() if h == jobs[victim]]
        rows = dep.trigger_rows_seen()
        orphan_generations = {tid: _UUID.findall(rows.get(tid, "")) for tid in orphans}
        beats = dep.query("SELECT latest_heartbeat FROM job WHERE id = ?", (jobs[victim],))
        killed_at = time.time()
        dep.kill_triggerer(victim)
        # A loaded machine may have delayed the victim's last heartbeat: the health check counts from that beat.
        last_beat = _timestamp(beats[0][0]) if beats and beats[0][0] is not None else killed_at

        def taken_over() -> bool:
            history = dep.trigger_holders()
            return all(any(t > killed_at and h == jobs[survivor] for t, h in history.get(k, [])) for k in orphans)

        with contextlib.suppress(DeploymentError):  # measured below: an orphan never taken over is counted
            _wait(taken_over, threshold + 60, dep, "the survivor taking every orphaned wait")
        # Time for the survivor's first polls to start (the simulator logs a held poll once it is answered, so
        # they are read after the completions below release them; their logged start times are the figures).
        time.sleep(poll_interval + 3)
        recovered_at = time.time()
        time.sleep(1)
        generations = [g for g in control(sim, "GET", "/_sim/generations") if _tagged(g)]
        for generation in generations:
            control(sim, "POST", "/_sim/state", {"id": generation["id"], "state": "completed"})
        state = dep.wait_for_run(dag_id, run_id, timeout=300)
        time.sleep(1)
    finally:
        ports.stop_event.set()
        ports.join()
    tasks = dep.task_states(dag_id, run_id)
    tries_ok = all(dep.retried_only_for_airflows_race(dag_id, run_id, task) for task in tasks)
    log = control(sim, "GET", "/_sim/requests")
    history = dep.trigger_holders()

    creates: dict[str, int] = {}
    for entry in log:
        if entry["endpoint"] == "create":
            prompt = (entry.get("json") or {}).get("prompt", "")
            if GENERATE_TAG in prompt:
                creates[prompt] = creates.get(prompt, 0) + 1
    # Moves of a trigger from one live triggerer to another before the kill (each means two may have run it).
    moves_before_kill = 0
    moved_histories = {}
    for tid, history_of_one in history.items():
        if tid not in ours:
            continue
        holders_before = [h for t, h in history_of_one if t < killed_at and h is not None]
        moves = sum(1 for a, b in itertools.pairwise(holders_before) if a != b)
        if moves:
            moves_before_kill += moves
            moved_histories[str(tid[0])] = [(round(t - killed_at, 2), h) for t, h in history_of_one]
    reassigned, first_poll = [], []
    not_recovered = 0
    for tid in orphans:
        moved = [t for t, h in history.get(tid, []) if t > killed_at and h == jobs[survivor]]
        after = [
            e["time"]
            for e in log
            if e["endpoint"] == "get"
            and e["time"] > killed_at
            and e["query"].get("generation_id") in orphan_generations[tid]
        ]
        if moved and after:
            reassigned.append(moved[0] - killed_at)
            first_poll.append(min(after) - killed_at)
        else:
            not_recovered += 1
    overlaps, live, samples = _duplicate_held_polls(log, ports.owner, victim, killed_at)
    return FailoverResult(
        n=n,
        run_state=state,
        tasks=tasks,
        tries_ok=tries_ok,
        held_at_kill=held,
        victim=victim,
        survivor=survivor,
        orphans=len(orphans),
        reassigned_s=reassigned,
        first_poll_s=first_poll,
        orphans_not_recovered=not_recovered,
        duplicate_creates=sum(c - 1 for c in creates.values()),
        creates=len(creates),
        overlaps_in_log=overlaps,
        duplicate_held_polls=live,
        threshold=threshold,
        heartbeat=heartbeat,
        poll_interval=poll_interval,
        seconds=time.monotonic() - started,
        extra={
            "run_id": run_id,
            "dag_id": dag_id,
            "generation_ids": ids,
            "recovery_wait_s": recovered_at - killed_at,
            "ports_known": len(ports.owner),
            "killed_at": killed_at,
            "victim_heartbeat_age_s": max(0.0, killed_at - last_beat),
            "moves_before_kill": moves_before_kill,
            # Heartbeats later than the threshold during the run (a cause of moves: tests/support/warmup.py).
            "stalls": {k: v[len(stalls_before.get(k, [])) :] for k, v in heartbeat_stalls(dep).items()},
            "moved_histories": moved_histories,  # (seconds from the kill, holder), of the triggers that moved
            "duplicate_samples": samples[:10],
        },
    )


def _tagged(generation: Mapping[str, Any]) -> bool:
    prompt = (generation.get("request") or {}).get("prompt", "")
    return WAIT_TAG in prompt or GENERATE_TAG in prompt


def _holder_at(history: Sequence[tuple[float, Any]], when: float) -> Any:
    holder = None
    for t, triggerer_id in history:
        if t <= when:
            holder = triggerer_id
    return holder


class _Deferred:
    """The condition "every task deferred, its trigger held by one of ``jobs`` and polled"; ``why`` says what is
    missing after a check that failed (for the time-out's message)."""

    def __init__(self, dep: AirflowDeployment, sim: Any, dag_id: str, run_id: str, n: int, jobs: Mapping[str, int]):
        self.dep, self.sim, self.dag_id, self.run_id, self.n, self.jobs = dep, sim, dag_id, run_id, n, jobs
        self.why = "not checked yet"

    def __call__(self) -> bool:
        states = self.dep.task_states(self.dag_id, self.run_id)
        others = {task: state for task, state in states.items() if state != "deferred"}
        if len(states) != self.n or others:
            self.why = f"{len(states)} of {self.n} tasks, not deferred: {others}"
            return False
        rows = self.dep.query(
            "SELECT t.id, t.triggerer_id, t.kwargs FROM trigger t JOIN task_instance ti ON ti.trigger_id = t.id "
            "WHERE ti.dag_id = ? AND ti.run_id = ?",
            (self.dag_id, self.run_id),
        )
        stray = {tid: job for tid, job, _ in rows if job not in self.jobs.values()}
        if len(rows) != self.n or stray:
            self.why = f"{len(rows)} trigger rows; held by none of {dict(self.jobs)}: {stray}"
            return False
        wanted = {g for _, _, kwargs in rows for g in _UUID.findall(str(kwargs))}
        held = {
            e["query"].get("generation_id")
            for e in control(self.sim, "GET", "/_sim/requests?endpoint=get")
            if "state" in e["query"] or "status" in e["query"]
        }
        self.why = f"generations not polled yet: {sorted(wanted - held)}"
        return wanted <= held


def _duplicate_held_polls(
    log: Sequence[Mapping[str, Any]], owner: Mapping[int, str], victim: str, killed_at: float
) -> tuple[int, int, list[dict[str, Any]]]:
    """Held polls starting while another poll of the generation was held: (as logged, by live triggerers, the
    live ones' pairs as examples)."""
    by_generation: dict[str, list[dict[str, Any]]] = {}
    for e in log:
        if e["endpoint"] not in ("get", "list") or e.get("released_by") in (None, "immediate"):
            continue
        key = e["query"].get("generation_id")
        if not isinstance(key, str):
            continue
        end = e["time"] + e["elapsed"]
        who = owner.get(e.get("peer"), "?")
        live_end = min(end, killed_at) if who == victim else end
        poll = {"start": e["time"], "end": end, "live_end": live_end, "by": who, "released_by": e["released_by"]}
        by_generation.setdefault(key, []).append(poll)
    logged = live = 0
    samples: list[dict[str, Any]] = []
    for key, polls in by_generation.items():
        polls.sort(key=lambda p: p["start"])
        held: dict[str, Any] | None = None
        live_held: dict[str, Any] | None = None
        for poll in polls:
            logged += held is not None and poll["start"] < held["end"] - 0.05
            if live_held is not None and poll["start"] < live_held["live_end"] - 0.05:
                live += 1
                samples.append({"generation": key, "held": live_held, "next": poll})
            if held is None or poll["end"] > held["end"]:
                held = poll
            if live_held is None or poll["live_end"] > live_held["live_end"]:
                live_held = poll
    return logged, live, samples


def _wait(condition: Any, timeout: float, dep: AirflowDeployment, what: Any) -> None:
    """Wait (bounded) for ``condition()``; ``what``: text, or a callable giving it once the time is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dep.check_alive()
        if condition():
            return
        time.sleep(0.5)
    text = what() if callable(what) else what
    raise DeploymentError(f"{text}: not within {timeout:.0f} s.\n{dep.logs_tail()}")


def _timestamp(value: Any) -> float:
    """UNIX time of a ``job.latest_heartbeat`` as the metadata database returns it (a datetime, or text on SQLite)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return float(value.timestamp())
