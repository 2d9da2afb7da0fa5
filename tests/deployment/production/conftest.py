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
from tests.support.connection import DEPLOYMENT_TIMELINES, connection_json, running_simulator
from tests.support.production import QUEUED_TRIGGERERS, ProductionDeployment, production_deployment
from tests.support.scenarios import asset_settings
from tests.support.warmup import warm_up_triggerers


@pytest.fixture(scope="package")
def production_simulator() -> Iterator[LumaSimulator]:
    """The simulator behind ``luma_default``: sentinel key, holds 2 s, queued 2 s, dreaming 4 s."""
    with running_simulator(**DEPLOYMENT_TIMELINES) as sim:
        yield sim


@pytest.fixture(scope="package")
def asset_output_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the example Asset producer writes its videos (``LUMA_DEMO_OUTPUT_DIR``)."""
    return tmp_path_factory.mktemp("luma-production-videos")


@pytest.fixture(scope="package")
def production(production_simulator: LumaSimulator, asset_output_dir: Path) -> Iterator[ProductionDeployment]:
    """The running production-shaped deployment (``.simulator``: the simulator behind ``luma_default``)."""
    extra = {"AIRFLOW_CONN_LUMA_DEFAULT": connection_json(production_simulator), **asset_settings(asset_output_dir)}
    with production_deployment(extra, triggerers=QUEUED_TRIGGERERS, worker_queues=("default", "luma")) as dep:
        dep.simulator = production_simulator
        # Every triggerer's first connection lookup stalls its heartbeat (tests/support/warmup.py): before the tests.
        warm = warm_up_triggerers(dep, production_simulator, queues=QUEUED_TRIGGERERS)
        print(f"\nwarm-up of the production deployment: {warm}")
        yield dep
