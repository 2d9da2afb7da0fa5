"""A real Airflow 3 deployment on loopback, for tests: scheduler, triggerer(s), DAG processor, API server.

Two shapes share this class. :func:`deployment` is the quick one: SQLite and the LocalExecutor in a
temporary ``AIRFLOW_HOME``. :func:`tests.support.production.production_deployment` is the production
shape: PostgreSQL, Redis, the CeleryExecutor with a Celery worker, and several triggerers.

Each component is its own process (own process group, output in ``$AIRFLOW_HOME/<name>.log``), so a
test can SIGKILL and restart one of them (a triggerer). Nothing listens beyond 127.0.0.1: the log
servers Airflow would start on every interface (``serve_logs`` binds host "") are skipped
(``--skip-serve-logs``), and :meth:`AirflowDeployment.listening_addresses` lets a test check. Runs are
triggered with the ``airflow`` CLI (its local API client writes straight to the metadata DB: no API
auth needed) and observed by reading the metadata DB (:mod:`tests.support.metadb`) and the logs
(:mod:`tests.support.observation`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tests.support.metadb import SCANNED_TABLES, PostgresDatabase, SqliteDatabase, db_dump_text, query_db
from tests.support.observation import (
    SAMPLE_INTERVAL,
    DeploymentObservation,
    TriggerKey,
    retry_explained_by_airflows_race,
)
from tests.support.services import free_port

__all__ = [
    "SAMPLE_INTERVAL",
    "SCANNED_TABLES",
    "AirflowDeployment",
    "DeploymentError",
    "db_dump_text",
    "deployment",
    "free_port",
    "query_db",
    "retry_explained_by_airflows_race",
]

#: ``db migrate`` plus every component up within this many seconds.
STARTUP_TIMEOUT = 90.0
#: Terminal dag run states.
FINISHED_RUN_STATES = frozenset({"success", "failed"})
#: The SQLite harness's components and their commands. Log servers skipped: they would bind every interface.
COMPONENTS = {
    "scheduler": ("scheduler", "--skip-serve-logs"),
    "triggerer": ("triggerer", "--skip-serve-logs"),
    "dag-processor": ("dag-processor",),
    "api-server": ("api-server",),
}
#: The job each kind of component heartbeats (a triggerer's name starts with "triggerer").
JOB_TYPES = {"scheduler": "SchedulerJob", "dag-processor": "DagProcessorJob"}


class DeploymentError(AssertionError):
    """The deployment did not do something in time; the message carries the component logs' tails."""


@dataclass
class _Component:
    name: str
    process: subprocess.Popen[bytes]
    log_file: IO[bytes]


@dataclass
class AirflowDeployment(DeploymentObservation):
    """A running (or about to run) Airflow deployment in ``home``; see :func:`deployment`."""

    home: Path
    env: dict[str, str]
    port: int
    #: The metadata DB (default: SQLite at ``home/airflow.db``).
    database: SqliteDatabase | PostgresDatabase | None = None
    #: ``{name: airflow command}`` started by :meth:`start`, in order (default: :data:`COMPONENTS`).
    plan: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(COMPONENTS))
    components: dict[str, _Component] = field(default_factory=dict)
    #: ``{triggerer component: its running TriggererJob id}`` (the job table has no pid, and every
    #: triggerer has this host's name: each one is started alone and takes the new job row).
    triggerer_jobs: dict[str, int] = field(default_factory=dict)
    #: Processes the deployment runs on (PostgreSQL, Redis), ``{name: Popen}``: in :meth:`listening_addresses`.
    services: dict[str, Any] = field(default_factory=dict)
    #: The simulator behind ``luma_default``, when the fixture set one.
    simulator: Any = None
    #: Seconds from ``db migrate`` to every component up.
    startup_seconds: float = 0.0
    _killed: set[str] = field(default_factory=set)
    _seen: dict[tuple[str, str, str, int], list[str]] = field(default_factory=dict)
    _seen_triggers: dict[tuple[str, str, str, int], set[TriggerKey]] = field(default_factory=dict)
    _seen_trigger_rows: dict[TriggerKey, str] = field(default_factory=dict)
    _trigger_holders: dict[TriggerKey, list[tuple[float, Any]]] = field(default_factory=dict)
    _seen_lock: threading.Lock = field(default_factory=threading.Lock)
    _stop_sampler: threading.Event = field(default_factory=threading.Event)
    _sampler: threading.Thread | None = None

    def __post_init__(self) -> None:
        if self.database is None:
            self.database = SqliteDatabase(self.home / "airflow.db")

    # ------------------------------------------------------------------ paths

    @property
    def db_path(self) -> Path:
        return self.home / "airflow.db"

    @property
    def dags_folder(self) -> Path:
        return self.home / "dags"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ------------------------------------------------------------------ processes

    def airflow(self, *args: str, timeout: float = 60.0, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``airflow <args>`` with the deployment's environment; return the finished process."""
        result = subprocess.run(
            [sys.executable, "-m", "airflow", *args],
            env=self.env,
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,
        )
        if check and result.returncode != 0:
            raise DeploymentError(
                f"`airflow {' '.join(args)}` exited {result.returncode}:\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result

    def start_component(self, name: str, command: tuple[str, ...] | None = None) -> None:
        """Start ``airflow <name>`` (or ``airflow <command...>``, by default the :attr:`plan`'s) in its own process
        group, output appended to ``<home>/<name>.log``. ``command`` lets one command run twice under two names."""
        command = command or self.plan.get(name)
        current = self.components.get(name)
        if current is not None and current.process.poll() is None:
            raise RuntimeError(f"{name} is already running (pid {current.process.pid})")
        log_file = (self.home / f"{name}.log").open("ab")
        log_file.write(f"\n===== starting {name} at {time.strftime('%H:%M:%S')} =====\n".encode())
        log_file.flush()
        process = subprocess.Popen(
            [sys.executable, "-m", "airflow", *(command or (name,))],
            env=self.env,
            cwd=self.home,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.components[name] = _Component(name, process, log_file)
        self._killed.discard(name)

    def kill_component(self, name: str, sig: int = signal.SIGKILL, wait: float = 15.0) -> None:
        """Send ``sig`` to the component's process group, wait for it, then SIGKILL whatever of it is left.

        Airflow puts task and trigger-runner children in process groups of their own (``setpgid``), so
        the component's descendants are listed first and killed one by one if they outlive the group.
        """
        component = self.components[name]
        self._killed.add(name)  # on purpose: no longer in the default liveness checks until restarted
        descendants = _descendants(component.process.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(component.process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            component.process.wait(timeout=wait)
        _kill_all(component, descendants)

    def kill_triggerer(self, name: str = "triggerer") -> None:
        """SIGKILL a triggerer's process group (no graceful shutdown, like a crashed node)."""
        self.kill_component(name, signal.SIGKILL)

    def start_triggerer(self, name: str = "triggerer", timeout: float = STARTUP_TIMEOUT) -> int:
        """(Re)start a triggerer and wait until its new job runs; return the job id (also in
        :attr:`triggerer_jobs`). Triggerers start one at a time: the new job row is this one's."""
        known = self._max_job_id("TriggererJob")
        self.start_component(name)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            rows = self.query(
                "SELECT id FROM job WHERE job_type = 'TriggererJob' AND state = 'running' AND id > ? ORDER BY id",
                (known,),
            )
            if rows:
                self.triggerer_jobs[name] = int(rows[-1][0])
                return self.triggerer_jobs[name]
            time.sleep(0.5)
        raise DeploymentError(f"No new TriggererJob for {name} in time.\n{self.logs_tail()}")

    def _max_job_id(self, job_type: str) -> int:
        rows = self.query("SELECT max(id) FROM job WHERE job_type = ?", (job_type,))
        return int(rows[0][0]) if rows and rows[0][0] is not None else 0

    def running_triggerer_jobs(self) -> list[int]:
        """Ids of the TriggererJobs in state ``running`` (a SIGKILLed one stays ``running``: no one ends it)."""
        rows = self.query("SELECT id FROM job WHERE job_type = 'TriggererJob' AND state = 'running' ORDER BY id")
        return [int(r[0]) for r in rows]

    def add_connection(self, conn_id: str, connection: str | Mapping[str, Any]) -> None:
        """Store a connection in the metadata DB (``airflow connections add``): every component reads it from
        there on its next lookup, so a test can add one (a Luma connection with its own extras, a ``redis``
        one) to a running deployment. ``connection``: JSON or a dict (``conn_type``, ``host``, ``extra``...)."""
        text = connection if isinstance(connection, str) else json.dumps(dict(connection))
        self.airflow("connections", "add", conn_id, "--conn-json", text)

    def stop(self) -> None:
        """Stop the sampler and every component: SIGTERM to each group, then SIGKILL. Idempotent."""
        self._stop_sampler.set()
        if self._sampler is not None:
            self._sampler.join(timeout=5)
        if self.database is not None:
            self.database.close()
        descendants = {name: _descendants(c.process.pid) for name, c in self.components.items()}
        running = [c for c in self.components.values() if c.process.poll() is None]
        for component in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(component.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for component in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                component.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        for name, component in self.components.items():
            _kill_all(component, descendants[name])

    def check_alive(self, names: Iterable[str] | None = None) -> None:
        """Raise (with the logs) if one of ``names`` (default: every component not killed on purpose) has exited."""
        if names is None:
            names = [n for n in self.components if n not in self._killed]
        dead = [
            f"{n} (exit {self.components[n].process.returncode})"
            for n in names
            if n in self.components and self.components[n].process.poll() is not None
        ]
        if dead:
            raise DeploymentError(f"Airflow component(s) exited: {', '.join(dead)}\n{self.logs_tail()}")

    # ------------------------------------------------------------------ start-up

    def start(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """``airflow db migrate``, then the :attr:`plan`'s components (triggerers last, one at a time, so that
        each one's job id is known); wait until each is up (bounded)."""
        started = time.monotonic()
        self.dags_folder.mkdir(parents=True, exist_ok=True)
        self.logs_folder.mkdir(parents=True, exist_ok=True)
        deadline = started + timeout
        self.airflow("db", "migrate", timeout=timeout)
        triggerers = [name for name in self.plan if name.startswith("triggerer")]
        for name in self.plan:
            if name not in triggerers:
                self.start_component(name)
        for name in triggerers:
            self.start_triggerer(name, timeout=max(1.0, deadline - time.monotonic()))
        for name, job_type in JOB_TYPES.items():
            if name in self.plan:
                self._wait_for_job(job_type, deadline=deadline)
        if "celery-worker" in self.plan:
            self._wait_for_log("celery-worker", " ready.", deadline=deadline)
        self._wait_for_http(f"{self.api_url}/api/v2/monitor/health", deadline=deadline)
        self._sampler = threading.Thread(target=self._sample_loop, name="ti-state-sampler", daemon=True)
        self._sampler.start()
        self.startup_seconds = time.monotonic() - started

    def _wait_for_log(self, name: str, text: str, *, deadline: float) -> None:
        path = self.home / f"{name}.log"
        while time.monotonic() < deadline:
            self.check_alive()
            if path.exists() and text in path.read_text(errors="replace"):
                return
            time.sleep(0.5)
        raise DeploymentError(f"{name} never logged {text!r}.\n{self.logs_tail()}")

    def _wait_for_job(self, job_type: str, *, deadline: float) -> None:
        while time.monotonic() < deadline:
            self.check_alive()
            if self.query("SELECT 1 FROM job WHERE job_type = ? AND state = 'running'", (job_type,)):
                return
            time.sleep(0.5)
        raise DeploymentError(f"No running {job_type} heartbeat in time.\n{self.logs_tail()}")

    def _wait_for_http(self, url: str, *, deadline: float) -> None:
        import urllib.request

        last: Exception | None = None
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except Exception as error:  # not up yet
                last = error
            time.sleep(0.5)
        raise DeploymentError(f"API server not answering {url} in time ({last!r}).\n{self.logs_tail()}")

    # ------------------------------------------------------------------ DAGs and runs

    def add_dag(self, source: str, filename: str, dag_id: str | None = None, timeout: float = 60.0) -> str:
        """Write ``source`` into the DAGs folder; wait until the DAG is parsed and serialized; return its id.

        ``dag_id`` defaults to the file name's stem. Fails fast with the import error if the file breaks.
        (Airflow's safe mode skips files that do not contain both ``airflow`` and ``dag``.)
        """
        dag_id = dag_id or Path(filename).stem
        path = self.dags_folder / filename
        tmp = path.with_suffix(".tmp")
        tmp.write_text(source)
        tmp.replace(path)  # atomic: the processor never parses half a file
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            if self.query(
                "SELECT 1 FROM dag d JOIN serialized_dag s ON s.dag_id = d.dag_id "
                "WHERE d.dag_id = ? AND NOT d.is_stale",
                (dag_id,),
            ):
                return dag_id
            errors = self.query("SELECT stacktrace FROM import_error WHERE filename LIKE ?", (f"%{filename}",))
            if errors:
                raise DeploymentError(f"DAG file {filename} failed to import:\n{errors[0][0]}")
            time.sleep(0.5)
        raise DeploymentError(f"DAG {dag_id} not parsed within {timeout:.0f} s.\n{self.logs_tail()}")

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None, run_id: str | None = None) -> str:
        """Unpause (if paused) and trigger ``dag_id`` through the CLI; return the run id."""
        if self.query("SELECT 1 FROM dag WHERE dag_id = ? AND is_paused", (dag_id,)):
            self.airflow("dags", "unpause", dag_id)
        run_id = run_id or f"test__{uuid.uuid4().hex[:12]}"
        args = ["dags", "trigger", dag_id, "--run-id", run_id]
        if conf is not None:
            args += ["--conf", json.dumps(conf)]
        self.airflow(*args)
        return run_id

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 90.0) -> str:
        """Wait (bounded) until the run is ``success`` or ``failed``; return that state."""
        deadline = time.monotonic() + timeout
        state = None
        while time.monotonic() < deadline:
            self.check_alive()
            state = self.run_state(dag_id, run_id)
            if state in FINISHED_RUN_STATES:
                return state
            time.sleep(0.5)
        raise DeploymentError(
            f"Run {dag_id}/{run_id} still {state!r} after {timeout:.0f} s; "
            f"tasks: {self.task_states(dag_id, run_id)}\n{self.logs_tail()}"
        )

    # ------------------------------------------------------------------ sockets

    def listening_addresses(self) -> dict[str, set[tuple[str, int]]]:
        """``{component or service: {(address, port), ...}}``: every TCP socket listening in its process tree."""
        import psutil

        out: dict[str, set[tuple[str, int]]] = {}
        roots = {name: c.process for name, c in self.components.items() if c.process.poll() is None}
        roots.update({name: p for name, p in self.services.items() if p is not None and p.poll() is None})
        for name, process in roots.items():
            try:
                tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
            except psutil.Error:
                continue
            found: set[tuple[str, int]] = set()
            for member in tree:
                with contextlib.suppress(psutil.Error):
                    for conn in member.net_connections(kind="inet"):
                        if conn.status == psutil.CONN_LISTEN:
                            found.add((conn.laddr.ip, conn.laddr.port))
            out[name] = found
        return out


def _descendants(pid: int) -> list[Any]:
    """The live descendants of ``pid`` as ``psutil.Process`` objects (empty if it is gone)."""
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _kill_all(component: _Component, descendants: list[Any]) -> None:
    """SIGKILL the component's group, its leader and the given descendants; reap the leader; close its log."""
    import psutil

    with contextlib.suppress(ProcessLookupError):
        os.killpg(component.process.pid, signal.SIGKILL)
    for child in descendants:
        with contextlib.suppress(psutil.Error):
            child.kill()
    if component.process.poll() is None:
        component.process.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        component.process.wait(timeout=10)
    psutil.wait_procs(descendants, timeout=5)
    if not component.log_file.closed:
        component.log_file.close()


def deployment_env(home: Path, port: int, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of every component: ``os.environ`` minus any ``AIRFLOW*`` setting, plus ours (SQLite and the
    LocalExecutor; ``extra`` wins: the production shape replaces the database and the executor)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW") and not k.startswith("PYTEST")}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__PARALLELISM": "8",
            "AIRFLOW__CORE__FERNET_KEY": "",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": uuid.uuid4().hex,
            # Shared by the scheduler (signs the workers' tokens) and the API server (checks them).
            "AIRFLOW__API_AUTH__JWT_SECRET": uuid.uuid4().hex + uuid.uuid4().hex,
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "1",
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
    )
    if extra:
        env.update(extra)
    return env


@contextlib.contextmanager
def deployment(extra_env: Mapping[str, str] | None = None, keep_home: bool = False):
    """Start a deployment in a fresh temporary ``AIRFLOW_HOME``; always stop it (and remove the home)."""
    home = Path(tempfile.mkdtemp(prefix="luma-deploy-airflow-home-"))
    port = free_port()
    dep = AirflowDeployment(home=home, env=deployment_env(home, port, extra_env), port=port)
    try:
        dep.start()
        yield dep
    finally:
        dep.stop()
        if not keep_home and not os.environ.get("LUMA_KEEP_DEPLOYMENT_HOME"):
            import shutil

            shutil.rmtree(home, ignore_errors=True)


def airflow_version() -> tuple[int, int]:
    """The installed Airflow's (major, minor)."""
    from importlib.metadata import version

    major, minor = version("apache-airflow").split(".")[:2]
    return int(major), int(minor)


def deployment_skip_reason() -> str | None:
    """Why real-deployment tests do not run on this Airflow, or ``None`` when they do (3.3+, the newest line)."""
    installed = airflow_version()
    if installed >= (3, 3):
        return None
    return (
        f"deployment tests run on the newest Airflow (3.3+, installed: {installed}): 2.11's standalone forces the "
        "SequentialExecutor on SQLite, and the task state store the retry test relies on is new in 3.3; dag.test() "
        "covers the older versions"
    )
