"""
Fixtures of the UI tests: one real Airflow 3 deployment for the folder (API server, scheduler,
triggerer, DAG processor), the example DAGs run on it, and headless Chromium driving its UI.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from airflow_provider_luma.testing import LumaSimulator
from tests.support.browser import Browser, browser_skip_reason
from tests.support.connection import connection_json
from tests.support.deployment import AirflowDeployment, deployment
from tests.support.examples import ExampleRuns, run_examples
from tests.support.markers import mark_deployment_folder


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark everything in this folder ``deployment``; run it on the newest Airflow line (3.3+) only."""
    mark_deployment_folder(__file__, items)


@pytest.fixture(scope="package")
def ui_simulator() -> Iterator[LumaSimulator]:
    """The simulator behind the deployment's ``luma_default``: short timelines, the sentinel key."""
    from tests.support.connection import SENTINEL_KEY

    sim = LumaSimulator(api_key=SENTINEL_KEY, hold_seconds=2.0, queued_seconds=1.0, dreaming_seconds=2.0)
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture(scope="package")
def ui_deployment(ui_simulator: LumaSimulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowDeployment]:
    """
    A real Airflow 3 deployment whose ``luma_default`` is the simulator, the Test button enabled and
    every UI user an admin (loopback only), with the example DAGs in its DAGs folder.
    """
    videos = tmp_path_factory.mktemp("videos")
    extra = {
        "AIRFLOW_CONN_LUMA_DEFAULT": connection_json(ui_simulator),
        "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "True",  # the assets consumer runs on the producer's event
        "LUMA_DEMO_OUTPUT_DIR": str(videos),
    }
    with deployment(extra_env=extra) as dep:
        dep.simulator = ui_simulator
        yield dep


@pytest.fixture(scope="package")
def example_runs(ui_deployment: AirflowDeployment) -> ExampleRuns:
    """Each example DAG run once on the deployment, finished, and a failing generate DAG's run."""
    return run_examples(ui_deployment)


@pytest.fixture(scope="package")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """Headless Chromium (Debian's ``chromium`` and ``chromium-driver``) with a fresh profile."""
    reason = browser_skip_reason()
    if reason:
        pytest.fail(reason)  # CI installs them (.ci/run); a missing browser is a broken setup, not a skip
    with Browser(tmp_path_factory.mktemp("chromium-profile")) as chrome:
        yield chrome
