"""Fixtures for the deployment tests: a real Airflow 3 deployment whose ``luma_default`` is a simulator."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from airflow_provider_luma.testing import LumaSimulator
from tests.support.connection import connection_json
from tests.support.deployment import AirflowDeployment, deployment, deployment_skip_reason


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark everything in this folder ``deployment``; run it on the newest Airflow line (3.3+) only."""
    here = __file__.rsplit("/", 1)[0]
    reason = deployment_skip_reason()
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.deployment)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="module")
def airflow_deployment(deployment_simulator: LumaSimulator) -> Iterator[AirflowDeployment]:
    """A running Airflow 3 deployment (scheduler, triggerer, DAG processor, API server) on loopback.

    ``AIRFLOW_CONN_LUMA_DEFAULT`` points at :func:`deployment_simulator` (``.simulator`` on the object).
    """
    extra = {"AIRFLOW_CONN_LUMA_DEFAULT": connection_json(deployment_simulator)}
    with deployment(extra_env=extra) as dep:
        dep.simulator = deployment_simulator
        yield dep
