"""Marks of the folders whose tests start a real Airflow deployment."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.deployment import deployment_skip_reason


def mark_deployment_folder(conftest: str, items: list[pytest.Item]) -> None:
    """Mark every test of the conftest's folder ``deployment``; skip them below the newest Airflow line (3.3+)."""
    here = str(Path(conftest).parent)
    reason = deployment_skip_reason()
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.deployment)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))
