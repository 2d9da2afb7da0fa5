"""Fixtures for the deployment tests: a real Airflow 3 deployment whose ``luma_default`` is a simulator."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from airflow_provider_luma.testing import LumaSimulator
from tests.support.connection import connection_json
from tests.support.deployment import AirflowDeployment, deployment
from tests.support.markers import mark_deployment_folder


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark everything in this folder ``deployment``; run it on the newest Airflow line (3.3+) only."""
    mark_deployment_folder(__file__, items)


@pytest.fixture(scope="module")
def airflow_deployment(deployment_simulator: LumaSimulator) -> Iterator[AirflowDeployment]:
    """A running Airflow 3 deployment (scheduler, triggerer, DAG processor, API server) on loopback.

    ``AIRFLOW_CONN_LUMA_DEFAULT`` points at :func:`deployment_simulator` (``.simulator`` on the object).
    """
    extra = {"AIRFLOW_CONN_LUMA_DEFAULT": connection_json(deployment_simulator)}
    with deployment(extra_env=extra) as dep:
        dep.simulator = deployment_simulator
        yield dep
