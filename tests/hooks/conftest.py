"""Fixtures of the hook tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from airflow_provider_luma.hooks.settings import SETTINGS_CACHE


@pytest.fixture
def empty_settings_cache() -> Iterator[None]:
    """The process's settings cache empty before and after the test (counted lookups start from nothing)."""
    SETTINGS_CACHE.clear()
    yield
    SETTINGS_CACHE.clear()
