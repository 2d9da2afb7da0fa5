"""Fixtures of the hook tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from airflow_provider_luma.hooks.budget import forget_budgets
from airflow_provider_luma.hooks.settings import SETTINGS_CACHE
from tests.support.redis_server import RedisServer, redis_server_binary


@pytest.fixture
def empty_settings_cache() -> Iterator[None]:
    """The process's settings cache empty before and after the test (counted lookups start from nothing)."""
    SETTINGS_CACHE.clear()
    yield
    SETTINGS_CACHE.clear()


@pytest.fixture
def fresh_budgets() -> Iterator[None]:
    """No call budget and no cached settings before and after the test (each starts from an empty budget)."""
    forget_budgets()
    SETTINGS_CACHE.clear()
    yield
    forget_budgets()
    SETTINGS_CACHE.clear()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A redis-server of the test's own on 127.0.0.1 (skipped where redis-server is not installed, failed in CI)."""
    server = RedisServer(redis_server_binary()).start()
    try:
        yield server
    finally:
        server.stop()
