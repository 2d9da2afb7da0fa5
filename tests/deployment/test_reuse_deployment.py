"""A retried generate task reuses the generation of its first try, on a real Airflow 3.3 deployment (SQLite).

The same scenario runs on the production shape in tests/deployment/production/test_reuse_and_assets.py.
"""

from __future__ import annotations

import pytest

from tests.support.deployment import AirflowDeployment
from tests.support.scenarios import check_retry_reuse

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(240)]


def test_retry_reuses_the_first_tries_generation(airflow_deployment: AirflowDeployment) -> None:
    check_retry_reuse(airflow_deployment, airflow_deployment.simulator)
