"""Chaos suite set-up: every test here is marked ``chaos``; fault-test simulator, fast retries, deployment.

The deployment fixtures come from ``tests/deployment`` (the simulator behind ``luma_default`` and the
harness); :func:`chaos_deployment` only adds a short triggerer health-check threshold so a restarted
triggerer takes over the dead one's triggers in seconds instead of the default 30 s.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_luma.testing import LumaSimulator
from tests.support.connection import SENTINEL_KEY, connection_json
from tests.support.deployment import AirflowDeployment, deployment, deployment_skip_reason

HERE = str(Path(__file__).parent)

#: Connection extras of the fault tests: a 1 s client time-out (the least allowed), one retry per call.
FAULT_EXTRAS = {"timeout": 1, "max_retries": 1, "min_poll_interval": 0.05, "max_backoff": 0.2}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark everything in this folder ``chaos``; the deployment tests also ``deployment`` (Airflow 3 only)."""
    reason = deployment_skip_reason()
    for item in items:
        if not str(item.fspath).startswith(HERE):
            continue
        item.add_marker(pytest.mark.chaos)
        if "chaos_deployment" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.deployment)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def fault_sim() -> Iterator[LumaSimulator]:
    """A simulator for fault tests: holds 0.3 s, queued 0.05 s, dreaming 0.15 s (sentinel key)."""
    sim = LumaSimulator(api_key=SENTINEL_KEY, hold_seconds=0.3, queued_seconds=0.05, dreaming_seconds=0.15)
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def fault_conn(fault_sim: LumaSimulator, monkeypatch: pytest.MonkeyPatch) -> LumaSimulator:
    """``luma_default`` pointing at :func:`fault_sim` with :data:`FAULT_EXTRAS`; returns the simulator."""
    monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", connection_json(fault_sim, **FAULT_EXTRAS))
    return fault_sim


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shrink the hook's exponential back-off between retries (0.5 s → 0.01 s); the retry logic is untouched."""
    import tenacity

    from airflow_provider_luma.hooks import download, transport

    for module in (transport, download):
        monkeypatch.setattr(module, "RETRY_BACKOFF", tenacity.wait_fixed(0.01))


@pytest.fixture(scope="module")
def chaos_deployment(deployment_simulator: LumaSimulator) -> Iterator[AirflowDeployment]:
    """A real Airflow 3 deployment (see tests/deployment) whose triggerer is declared dead after 8 s of silence."""
    extra = {
        "AIRFLOW_CONN_LUMA_DEFAULT": connection_json(deployment_simulator),
        "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "8",
    }
    with deployment(extra_env=extra) as dep:
        dep.simulator = deployment_simulator
        yield dep
