"""Retry reuse (the task state store, Airflow 3.3+) and the Asset producer/consumer pair on the production shape.

The same scenarios as tests/deployment/test_reuse_deployment.py and test_assets_deployment.py (SQLite),
here on PostgreSQL with the CeleryExecutor: the state store and the Asset events live in the metadata DB,
and the tries run in Celery worker processes that share nothing but that DB.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.production import ProductionDeployment
from tests.support.scenarios import add_asset_pair, check_asset_pair, check_retry_reuse

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(300)]


def test_retry_reuses_the_first_tries_generation(production: ProductionDeployment) -> None:
    check_retry_reuse(production, production.simulator)


def test_download_event_triggers_the_consumer(production: ProductionDeployment, asset_output_dir: Path) -> None:
    add_asset_pair(production)
    check_asset_pair(production, asset_output_dir)
