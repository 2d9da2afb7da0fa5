"""The virtual-time model drives real WaitLoops: its call counts follow from the pacing (no timings asserted)."""

from __future__ import annotations

import math

import pytest

from airflow_provider_luma.models import ApiFamily
from benchmarks.common import window_peak
from benchmarks.model import WaitSpec, scale_table, simulate

pytestmark = [pytest.mark.benchmark]


def test_a_long_poll_makes_one_call_per_hold() -> None:
    result = simulate([WaitSpec(0.0, 95.0)], ApiFamily.LUMA_AI, hold=30.0)
    assert result["calls"] == [4]  # held 30 + 30 + 30, then answered at completion
    assert result["latency"][0] == pytest.approx(0.002, abs=1e-6)  # one modelled round trip


def test_the_universal_endpoint_is_polled_on_its_interval() -> None:
    result = simulate([WaitSpec(0.0, 95.0)], ApiFamily.VIDEO, poll_interval=10.0)
    assert result["calls"] == [11]  # 0, 10, ..., 100
    assert 4.9 < result["latency"][0] < 5.1  # the poll at 100 s sees the completion at 95 s


def test_a_budget_caps_every_one_second_window() -> None:
    waits = [WaitSpec(0.0, 60.0) for _ in range(500)]
    result = simulate(waits, ApiFamily.VIDEO, budget=(20.0, 20))
    assert window_peak(result["sends"]) <= 40
    assert all(not math.isnan(x) for x in result["latency"])  # every wait ends


def test_the_budget_serves_waits_in_the_order_they_asked() -> None:
    # 50 generations already complete: each wait makes one call, and ends when its answer arrives.
    waits = [WaitSpec(0.001 * i, 0.0) for i in range(50)]
    result = simulate(waits, ApiFamily.VIDEO, budget=(5.0, 0))
    assert result["calls"] == [1] * 50
    assert result["latency"] == sorted(result["latency"])  # FIFO: none overtakes an earlier one
    assert result["latency"][-1] >= 49 / 5.0  # and the rate held: 5 calls per second after the first


def test_scale_table_reports_both_families() -> None:
    rows = scale_table(200, ks=(1, 2))["rows"]
    assert {r["family"] for r in rows} == {"luma-ai", "video"}
    assert len(rows) == 8
