"""What a test reads from a running deployment: the metadata DB, the sampled states and trigger holders, the logs.

:class:`DeploymentObservation` is the reading half of :class:`tests.support.deployment.AirflowDeployment`
(which runs the processes); it reads ``self.database``, ``self.home`` and the sampler's records.

How ``deferred`` is proven: a background thread samples every task instance's state from the DB every
``SAMPLE_INTERVAL`` seconds and records each state seen. Nothing in the DB keeps the fact once the
task is done (``next_method``/``next_kwargs`` and ``trigger_id`` are cleared on resume, the trigger row
is deleted when unused, ``task_instance_history`` only keeps earlier *tries*), so sampling is the one
DB-side way; it is reliable as long as the deferral lasts several sample periods (the simulator's
timelines make it last seconds). The worker's task log line ``Pausing task as DEFERRED`` is durable
corroboration (:meth:`DeploymentObservation.deferral_evidence`). The same sampler records which
triggerer job held each trigger row when (:meth:`DeploymentObservation.trigger_holders`).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tests.support.metadb import db_dump_text, text_of

#: How often the sampler reads task instance states.
SAMPLE_INTERVAL = 0.2
#: A trigger row: ``(id, created_date as text)`` (ids are reused on SQLite).
TriggerKey = tuple[int, str]


class DeploymentObservation:
    """Reading a deployment: mixed into :class:`~tests.support.deployment.AirflowDeployment`."""

    home: Path
    database: Any
    _seen: dict[tuple[str, str, str, int], list[str]]
    _seen_triggers: dict[tuple[str, str, str, int], set[TriggerKey]]
    _seen_trigger_rows: dict[TriggerKey, str]
    _trigger_holders: dict[TriggerKey, list[tuple[float, Any]]]
    _seen_lock: Any
    _stop_sampler: Any

    @property
    def logs_folder(self) -> Path:
        return self.home / "logs"

    # ------------------------------------------------------------------ database

    def try_number(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> int:
        """The try a task instance is on (1 unless it was retried)."""
        rows = self.query(
            "SELECT try_number FROM task_instance WHERE dag_id = ? AND run_id = ? AND task_id = ? AND map_index = ?",
            (dag_id, run_id, task_id, map_index),
        )
        return int(rows[0][0]) if rows else 0

    def retried_only_for_airflows_race(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> bool:
        """Whether the task instance ran once, or was retried once because of Airflow's own resume-after-defer race.

        See :func:`retry_explained_by_airflows_race` and tests/deployment/AIRFLOW_RACE.md.
        """
        mismatches = self.query(
            "SELECT try_number, extra FROM log WHERE event = 'state mismatch' "
            "AND dag_id = ? AND run_id = ? AND task_id = ? AND map_index = ?",
            (dag_id, run_id, task_id, map_index),
        )
        return retry_explained_by_airflows_race(self.try_number(dag_id, run_id, task_id, map_index), mismatches)

    def audit_log(self, dag_id: str, run_id: str) -> list[tuple[Any, ...]]:
        """The run's audit log rows ``(task_id, map_index, try_number, event, extra)``: shown when a check fails."""
        return self.query(
            "SELECT task_id, map_index, try_number, event, extra FROM log WHERE dag_id = ? AND run_id = ? ORDER BY id",
            (dag_id, run_id),
        )

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a read-only query (``?`` placeholders) on the metadata DB, SQLite or PostgreSQL."""
        assert self.database is not None
        return self.database.query(sql, params)

    def _sample_loop(self) -> None:
        assert self.database is not None
        while not self._stop_sampler.is_set():
            with contextlib.suppress(*self.database.errors):
                rows = self.query(
                    "SELECT ti.dag_id, ti.run_id, ti.task_id, ti.map_index, ti.state, ti.trigger_id, t.created_date "
                    "FROM task_instance ti LEFT JOIN trigger t ON t.id = ti.trigger_id"
                )
                with self._seen_lock:
                    for dag_id, run_id, task_id, map_index, state, trigger_id, created in rows:
                        key = (dag_id, run_id, task_id, map_index)
                        states = self._seen.setdefault(key, [])
                        state = state or "none"
                        if not states or states[-1] != state:
                            states.append(state)
                        if trigger_id is not None and created is not None:
                            self._seen_triggers.setdefault(key, set()).add((trigger_id, str(created)))
                # Trigger rows are deleted once unused: keep what each one held while it existed.
                triggers = self.query("SELECT id, created_date, classpath, kwargs, triggerer_id FROM trigger")
                now = time.time()
                with self._seen_lock:
                    for trigger_id, created, classpath, kwargs, triggerer_id in triggers:
                        trigger = (trigger_id, str(created))
                        self._seen_trigger_rows[trigger] = f"{classpath} | {text_of(kwargs)}"
                        holders = self._trigger_holders.setdefault(trigger, [])
                        if not holders or holders[-1][1] != triggerer_id:
                            holders.append((now, triggerer_id))
            self._stop_sampler.wait(SAMPLE_INTERVAL)

    def trigger_holders(self) -> dict[TriggerKey, list[tuple[float, Any]]]:
        """``{trigger: [(UNIX time first seen, triggerer job id or None), ...]}``: who held each trigger when, as
        sampled every :data:`SAMPLE_INTERVAL` seconds (a change shorter than that may be missed). A trigger is
        ``(id, created_date)``: SQLite hands a deleted row's id to the next trigger."""
        with self._seen_lock:
            return {tid: list(history) for tid, history in self._trigger_holders.items()}

    def run_trigger_ids(self, dag_id: str, run_id: str) -> set[TriggerKey]:
        """Every trigger (``(id, created_date)``) the sampler saw a task instance of the run point at."""
        with self._seen_lock:
            return {
                tid for (d, r, _, _), tids in self._seen_triggers.items() if (d, r) == (dag_id, run_id) for tid in tids
            }

    def trigger_rows_seen(self) -> dict[TriggerKey, str]:
        """``{(id, created_date): "classpath | kwargs"}`` of every trigger row the sampler saw."""
        with self._seen_lock:
            return dict(self._seen_trigger_rows)

    def states_seen(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> list[str]:
        """Every state the sampler saw the task instance in, in order (consecutive repeats folded)."""
        with self._seen_lock:
            return list(self._seen.get((dag_id, run_id, task_id, map_index), []))

    def saw_state(self, dag_id: str, run_id: str, task_id: str, state: str, map_index: int = -1) -> bool:
        """Whether the sampler saw the task instance in ``state`` at some point."""
        return state in self.states_seen(dag_id, run_id, task_id, map_index)

    def deferral_evidence(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any]:
        """What shows the task deferred: sampled states, trigger ids it pointed at, the worker's log line."""
        with self._seen_lock:
            triggers = sorted(self._seen_triggers.get((dag_id, run_id, task_id, map_index), set()))
        return {
            "states_seen": self.states_seen(dag_id, run_id, task_id, map_index),
            "trigger_ids": triggers,
            "log_says_deferred": "Pausing task as DEFERRED" in self.task_log_text(dag_id, run_id, task_id),
        }

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        """``{task_id: state}`` now (mapped tasks: ``task_id[i]``)."""
        rows = self.query(
            "SELECT task_id, map_index, state FROM task_instance WHERE dag_id = ? AND run_id = ?", (dag_id, run_id)
        )
        return {(t if m < 0 else f"{t}[{m}]"): s for t, m, s in rows}

    def run_state(self, dag_id: str, run_id: str) -> str | None:
        rows = self.query("SELECT state FROM dag_run WHERE dag_id = ? AND run_id = ?", (dag_id, run_id))
        return rows[0][0] if rows else None

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
        """The XCom value as stored (JSON in Airflow 3), decoded; ``KeyError`` if absent."""
        rows = self.query(
            "SELECT value FROM xcom WHERE dag_id = ? AND run_id = ? AND task_id = ? AND key = ? AND map_index = ?",
            (dag_id, run_id, task_id, key, map_index),
        )
        if not rows:
            raise KeyError(f"no XCom {key!r} for {dag_id}.{task_id} in {run_id}")
        value = rows[0][0]
        if isinstance(value, bytes):
            value = value.decode()
        return json.loads(value) if isinstance(value, str) else value

    def db_dump_text(self) -> str:
        """:func:`db_dump_text` of this deployment's metadata DB, with the trigger rows the sampler saw."""
        with self._seen_lock:
            sampled = dict(self._seen_trigger_rows)
        assert self.database is not None
        return db_dump_text(self.database, sampled)

    # ------------------------------------------------------------------ logs

    def task_log_text(self, dag_id: str | None = None, run_id: str | None = None, task_id: str | None = None) -> str:
        """All task (and trigger) logs under ``$AIRFLOW_HOME/logs``, optionally narrowed to a run / task."""
        chunks = []
        for path in sorted(self.logs_folder.rglob("*")):
            if not path.is_file():
                continue
            text = str(path)
            if dag_id and f"dag_id={dag_id}" not in text:
                continue
            if run_id and f"run_id={run_id}" not in text:
                continue
            if task_id and f"task_id={task_id}" not in text:
                continue
            chunks.append(f"----- {path.relative_to(self.logs_folder)}\n{path.read_text(errors='replace')}")
        return "\n".join(chunks)

    def component_logs(self) -> dict[str, str]:
        """``{component: output}`` of every component started (restarts appended to the same file)."""
        return {
            path.stem: path.read_text(errors="replace") for path in sorted(self.home.glob("*.log")) if path.is_file()
        }

    def logs_tail(self, lines: int = 40) -> str:
        out = []
        for name, text in self.component_logs().items():
            tail = "\n".join(text.splitlines()[-lines:])
            out.append(f"===== {name}.log (last {lines} lines)\n{tail}")
        return "\n".join(out)


def retry_explained_by_airflows_race(try_number: int, mismatches: Iterable[tuple[Any, Any]]) -> bool:
    """
    Whether a task instance on try ``try_number`` ran once, or was retried once for Airflow's race only.

    ``mismatches``: ``(try_number, extra)`` of the audit log's "state mismatch" rows of *this* task
    instance (dag_id, run_id, task_id, map_index). The race (tests/deployment/AIRFLOW_RACE.md): the
    scheduler handles the executor's "success" for the worker that exited after deferring only once the
    trigger has already moved the task on, and fails that first try as changed externally. Tolerated:
    exactly one retry (try 2), explained by a mismatch row of try 1 saying the executor reported success.
    """
    if try_number <= 1:
        return True
    if try_number > 2:
        return False
    return any(int(row_try) == 1 and "finished with state success" in text_of(extra) for row_try, extra in mismatches)
