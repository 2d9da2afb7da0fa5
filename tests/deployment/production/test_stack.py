"""The production-shaped harness is what it says: PostgreSQL, Redis, CeleryExecutor, three triggerers, loopback only."""

from __future__ import annotations

import pytest

from tests.support.logs import find_leaks
from tests.support.production import QUEUED_TRIGGERERS as TRIGGERERS
from tests.support.production import ProductionDeployment

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(120)]


def test_the_stack_runs_on_postgresql_redis_and_celery(production: ProductionDeployment) -> None:
    ((version,),) = production.query("SELECT version()")
    assert version.startswith("PostgreSQL ")
    assert production.airflow("config", "get-value", "core", "executor").stdout.strip() == "CeleryExecutor"
    broker = production.airflow("config", "get-value", "celery", "broker_url").stdout.strip()
    assert broker == f"{production.redis_url}/0"
    # Each triggerer heartbeats its own job: three distinct, running.
    assert set(production.triggerer_jobs) == set(TRIGGERERS)
    assert len(set(production.triggerer_jobs.values())) == len(TRIGGERERS)
    assert set(production.triggerer_jobs.values()) <= set(production.running_triggerer_jobs())
    assert "celery@" in production.component_logs()["celery-worker"]


def test_nothing_listens_beyond_loopback(production: ProductionDeployment) -> None:
    listening = production.listening_addresses()
    assert {"api-server", "postgres", "redis", "celery-worker", *TRIGGERERS} <= set(listening)
    assert listening["api-server"] == {("127.0.0.1", production.port)}
    assert listening["postgres"]
    assert listening["redis"]
    wide = {name: addrs for name, addrs in listening.items() if any(ip != "127.0.0.1" for ip, _ in addrs)}
    assert not wide, f"bound beyond 127.0.0.1: {wide}"


def test_api_key_leaks_nowhere(production: ProductionDeployment) -> None:
    # Runs after the failover, reuse, Asset and queue tests of this folder (file order): their material is scanned.
    task_logs = production.task_log_text()
    db_text = production.db_dump_text()
    assert "run_id=" in task_logs
    assert "LumaGenerationTrigger" in db_text
    leaks = find_leaks({"task logs": task_logs, "database": db_text, **production.component_logs()})
    assert not leaks, f"the API key leaked: {leaks}"
