"""
No storage failure can make a retry pay again (issue 19 item 1): an answer holding what Airflow cannot
store (``1e999999``, nesting deep enough for a ``RecursionError``, a lone surrogate) once failed the
push of the generate task's return value after its retry record was forgotten, and each retry paid for
a new generation. Run with ``dag.test()`` and ``retries=2``, so Airflow itself pushes the value.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.connection import SENTINEL_KEY
from tests.support.dag_runner import latest_run_id, run_dag_source
from tests.support.raw_server import FakeLumaApi

pytestmark = pytest.mark.timeout(300)

PAID_ONCE_DAG = """
from datetime import timedelta
import pendulum
from airflow.providers.common.compat.sdk import DAG
from airflow_provider_luma.operators.luma import LumaGenerateVideoOperator

with DAG("luma_paid_once", schedule=None, start_date=pendulum.datetime(2026, 1, 1)):
    LumaGenerateVideoOperator(task_id="generate", prompt="poisoned answer", deferrable=False, wait_timeout=30,
                              retries=2, retry_delay=timedelta(seconds=0))
"""

POISONED_ANSWERS = {
    "1e999999": '{"id": "{id}", "state": "completed", "video_url": "https://cdn.example/v.mp4", '
    '"meta": {"usage": {"credits_used": 1e999999}}}',
    "deep": '{"id": "{id}", "state": "completed", "video_url": "https://cdn.example/v.mp4", "x": '
    + "[" * 500
    + "]" * 500
    + "}",
    "surrogate": '{"id": "{id}", "state": "completed", "video_url": "https://cdn.example/v.mp4", '
    '"note": "cut \\ud83d"}',
}
#: (An integer beyond 64 bits passes dag.test()'s in-process XCom path: the property test,
#: tests/chaos/test_storable_property.py, feeds it through Airflow's own msgpack encoder.)


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLumaApi]:
    with FakeLumaApi() as server:
        extra = {"min_poll_interval": 0.05, "timeout": 5, "max_retries": 0, "single_hold_param": "state"}
        conn = {"conn_type": "luma", "host": server.url, "password": SENTINEL_KEY, "extra": extra}
        monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", json.dumps(conn))
        yield server


@pytest.mark.parametrize("poison", list(POISONED_ANSWERS))
def test_a_poisoned_answer_is_paid_once_and_the_task_succeeds(api, airflow_db, poison):
    api.fetch_body = POISONED_ANSWERS[poison]
    result = run_dag_source(PAID_ONCE_DAG, "luma_paid_once")
    assert api.creates == 1, f"{api.creates} generations paid for"
    assert result.state == "success", result
    stored = latest_return_value(airflow_db, "luma_paid_once", "generate")
    assert stored["id"] == api.created[0]
    assert stored["video_url"] == "https://cdn.example/v.mp4"


def latest_return_value(airflow_home: Path, dag_id: str, task_id: str) -> dict:
    """The task's return value as Airflow stored it (JSON in the metadata DB), of the DAG's latest run."""
    run_id = latest_run_id(airflow_home, dag_id)
    with sqlite3.connect(airflow_home / "airflow.db") as db:
        ((value,),) = db.execute(
            "SELECT value FROM xcom WHERE dag_id = ? AND run_id = ? AND task_id = ? AND key = 'return_value'",
            (dag_id, run_id, task_id),
        ).fetchall()
    decoded = json.loads(value.decode() if isinstance(value, bytes) else value)
    return decoded if isinstance(decoded, dict) else json.loads(decoded)
