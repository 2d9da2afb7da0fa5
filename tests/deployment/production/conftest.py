"""The production-shaped deployment the tests of this folder share, started once for the folder.

PostgreSQL, Redis, the CeleryExecutor (one worker consuming the ``default`` and ``luma`` queues) and three
triggerers with trigger queues on: ``triggerer`` and ``triggerer-2`` (``--queues default``: the two that
share every task's waits, as two triggerers for high availability do) and ``triggerer-luma``
(``--queues luma``: dedicated to the tasks that name that queue). ``luma_default`` is
:func:`production_simulator`; tests add connections of their own at run time (``add_connection``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_luma.testing import LumaSimulator
from tests.support.connection import SENTINEL_KEY, connection_json
from tests.support.production import QUEUED_TRIGGERERS, ProductionDeployment, production_deployment
from tests.support.warmup import warm_up_triggerers


@pytest.fixture(scope="package")
def production_simulator() -> Iterator[LumaSimulator]:
    """The simulator behind ``luma_default``: sentinel key, holds 2 s, queued 2 s, dreaming 4 s."""
    sim = LumaSimulator(api_key=SENTINEL_KEY, hold_seconds=2.0, queued_seconds=2.0, dreaming_seconds=4.0)
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture(scope="package")
def asset_output_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the example Asset producer writes its videos (``LUMA_DEMO_OUTPUT_DIR``)."""
    return tmp_path_factory.mktemp("luma-production-videos")


@pytest.fixture(scope="package")
def production(production_simulator: LumaSimulator, asset_output_dir: Path) -> Iterator[ProductionDeployment]:
    """The running production-shaped deployment (``.simulator``: the simulator behind ``luma_default``)."""
    extra = {
        "AIRFLOW_CONN_LUMA_DEFAULT": connection_json(production_simulator),
        "LUMA_DEMO_OUTPUT_DIR": str(asset_output_dir),
        # Asset-triggered runs need the scheduler's own DAG run creation (the SQLite harness turns it off).
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "True",
    }
    with production_deployment(extra, triggerers=QUEUED_TRIGGERERS, worker_queues=("default", "luma")) as dep:
        dep.simulator = production_simulator
        # Every triggerer's first connection lookup stalls its heartbeat (tests/support/warmup.py): before the tests.
        warm = warm_up_triggerers(dep, production_simulator, queues=QUEUED_TRIGGERERS)
        print(f"\nwarm-up of the production deployment: {warm}")
        yield dep
