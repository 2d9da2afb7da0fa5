"""Shared by the simulator's tests: a running simulator with short timelines, and request helpers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from airflow_provider_luma.testing import LumaSimulator


@pytest.fixture
def sim() -> Iterator[LumaSimulator]:
    """A simulator holding long polls 1 s at most; generations queued 0.2 s, then dreaming 0.3 s."""
    with LumaSimulator(hold_seconds=1.0, queued_seconds=0.2, dreaming_seconds=0.3) as s:
        yield s
