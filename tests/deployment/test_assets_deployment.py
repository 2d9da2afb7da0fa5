"""Videos as Assets on a real Airflow 3 deployment (SQLite): the download's Asset event triggers the consumer DAG.

The same scenario runs on the production shape in tests/deployment/production/test_reuse_and_assets.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_luma.testing import LumaSimulator
from tests.support.connection import connection_json
from tests.support.deployment import AirflowDeployment, deployment
from tests.support.scenarios import add_asset_pair, asset_settings, check_asset_pair

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def output_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("luma-asset-videos")


@pytest.fixture(scope="module")
def assets_deployment(deployment_simulator: LumaSimulator, output_dir: Path) -> Iterator[AirflowDeployment]:
    """A deployment running the example pair, its videos going to ``output_dir``."""
    extra = {"AIRFLOW_CONN_LUMA_DEFAULT": connection_json(deployment_simulator), **asset_settings(output_dir)}
    with deployment(extra_env=extra) as dep:
        dep.simulator = deployment_simulator
        add_asset_pair(dep)
        yield dep


def test_download_event_triggers_the_consumer(assets_deployment: AirflowDeployment, output_dir: Path) -> None:
    check_asset_pair(assets_deployment, output_dir)
