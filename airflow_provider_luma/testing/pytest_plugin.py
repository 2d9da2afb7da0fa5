"""Pytest plugin providing the ``luma_simulator`` fixture.

Registered through the ``pytest11`` entry point ``airflow_provider_luma.testing.pytest_plugin``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from airflow_provider_luma.testing.simulator import LumaSimulator


@pytest.fixture
def luma_simulator() -> Iterator[LumaSimulator]:
    """A running :class:`LumaSimulator` on free loopback ports with short timelines.

    Long polls are held 2 s at most; generations are queued 0.5 s, then dreaming 1 s.
    """
    sim = LumaSimulator(hold_seconds=2.0, queued_seconds=0.5, dreaming_seconds=1.0)
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()
