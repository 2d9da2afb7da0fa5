"""A smoke run of the one-loop benchmark (N = 20; 50 in the budget scenario): it runs and writes its tables.

No timings asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.common import BUDGET_VARIANT, COLUMNS

pytestmark = [pytest.mark.benchmark, pytest.mark.timeout(420)]

ROOT = Path(__file__).resolve().parents[2]


def test_a_quick_run_writes_every_column(tmp_path: Path) -> None:
    out = tmp_path / "RESULTS.md"
    subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--no-triggerer", "--no-ha", "--out", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=400,
    )
    text = out.read_text()
    assert "| " + " | ".join((*COLUMNS, "runs")) + " |" in text
    report = json.loads(out.with_suffix(".json").read_text())
    variants = {row["variant"] for row in report["rows"]}
    assert {
        "long-poll",
        "long-poll burst",
        "bare poll 5s",
        "bare poll 60s",
        "HttpSensorTrigger 5s",
        "HttpSensorTrigger 60s",
        "long-poll 1-hold",
        "bare poll 5s 1-hold",
        "HttpSensorTrigger 5s 1-hold",
    } <= variants
    budget = next(row for row in report["rows"] if row["variant"] == BUDGET_VARIANT)
    assert budget["peak calls/s"] <= 40, budget  # the simulator's log, not the client's count
    assert "budget 20 calls/s + burst 20: no one-second window above 40 calls" in text
    for row in report["rows"]:
        assert row["ok"] == f"{row['N']}/{row['N']}", row
        assert set(COLUMNS) <= set(row)
        # HttpSensorTrigger and the bare poller ask the video URL / the fetch: their calls are counted.
        assert row["calls/wait"] >= 1, row
    levels = report["rows"][0]["log levels"]
    assert {"root", "airflow_provider_luma.waiting", "trigger.log"} <= set(levels)
    assert "as ratios to the baselines" in text
    assert "### Targets of issue 12" in text
    assert "### Virtual-time model" in text
    assert report["loopback"]["p50_ms"] > 0
    for path in report["plots"].values():
        assert Path(path).exists()
