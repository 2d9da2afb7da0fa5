"""
Quick versions of the benchmark's real-deployment parts (Airflow 3.3 only, like tests/deployment):
a real triggerer with N = 10 deferred sensors vs deferrable HttpSensors, and two triggerers with one
SIGKILLed mid-wait (on SQLite; tests/deployment/production/ runs that scenario on PostgreSQL).
Outcomes are asserted (every wait ends right, no generation created twice); timings are not.
"""

from __future__ import annotations

from argparse import Namespace

import pytest

from benchmarks.ha import measure_one
from benchmarks.triggerer import measure_real_triggerer
from tests.support.deployment import deployment_skip_reason

_SKIP = deployment_skip_reason()
pytestmark = [
    pytest.mark.benchmark,
    pytest.mark.deployment,
    pytest.mark.skipif(_SKIP is not None, reason=_SKIP or ""),
]


@pytest.mark.timeout(600)
def test_real_triggerer_quick() -> None:
    result = measure_real_triggerer(Namespace(triggerer_n=10, quick=True))
    rows = {row["variant"]: row for row in result["rows"]}
    assert set(rows) == {"luma long-poll", "HttpSensor 5s"}
    for row in rows.values():
        assert row["ok"] == "10/10", row
        assert row["calls/wait"] >= 1
    # The sensors' downstream tasks started after their generations completed; the control run ran.
    for detail in result["raw"]["variants"].values():
        assert len(detail["e2e"]) == 10
        assert all(x > 0 for x in detail["e2e"])
        assert detail["sched"]


@pytest.mark.timeout(400)
def test_two_triggerers_one_killed_quick() -> None:
    # SQLite only here: the PostgreSQL run of the same scenario is tests/deployment/production/test_failover.py.
    result = measure_one("SQLite", 6)
    assert result["run_state"] == "success", result
    assert result["ended_right"] == result["n"] == 6, result
    assert result["duplicate_creates"] == 0, result
    assert result["orphans"] >= 1, result  # the killed triggerer held at least one wait
    assert result["row"]["database"] == "SQLite (unsupported by Airflow)"
