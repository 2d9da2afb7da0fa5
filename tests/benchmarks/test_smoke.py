"""A smoke run of the benchmark suite (N = 20, no deployment): it runs and writes its tables. No timings asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.run import COLUMNS

pytestmark = [pytest.mark.benchmark, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]


def test_a_quick_run_writes_every_column(tmp_path: Path) -> None:
    out = tmp_path / "RESULTS.md"
    subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--out", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=240,
    )
    text = out.read_text()
    assert "| " + " | ".join(COLUMNS) + " |" in text
    report = json.loads(out.with_suffix(".json").read_text())
    variants = {row["variant"] for row in report["rows"]}
    assert variants == {"long-poll", "long-poll burst", "poll 5s", "poll 60s"}
    for row in report["rows"]:
        assert row["N"] == 20
        assert row["ok"] == "20/20"
        assert set(COLUMNS) <= set(row)
    assert "as ratios to interval polling" in text
    assert report["loopback"]["p50_ms"] > 0
