"""
Issue 23's benchmark parts: the many-waits part in a small real run (its servers, the client, real
HTTP on loopback; no timings asserted), its targets in the report, and the py-spy summary.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.many_waits import measure_many_waits
from benchmarks.report import COST_BUDGET, COST_FLOOR, COST_OURS, COST_POLLER, cost_targets, many_table, render
from benchmarks.spy import markdown, summarize

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.benchmark
@pytest.mark.timeout(180)
def test_a_small_many_waits_run_ends_every_wait_and_reports_each_figure() -> None:
    # 200 waits on one server process, generations completing 2-4 s after creation: each wait is
    # held until its generation completes, then ends.
    many = measure_many_waits(200, servers=1, steady=(0.0, 5.0), completes_after=(2.0, 4.0), stagger=0.5)
    assert many["ok"] == 200, many
    assert many["server calls"] >= 200
    assert 1.0 <= many["calls/wait"] < 3.0, many
    assert many["RSS/wait KB"] > 0
    assert many["wake-up p99 ms"] >= 0
    assert isinstance(many["GC full collections"], int)
    assert many["GC full collections"] >= 0
    assert many["GC longest pause ms"] >= 0
    text = many_table(many)
    assert "| ok | 200/200 |" in text
    assert f"| GC full collections | {many['GC full collections']} |" in text


def _row(variant: str, cpu: float) -> dict:
    return {"N": 1000, "variant": variant, "CPU ms/wait": cpu}


def test_the_cost_targets_compare_ours_with_the_floor_and_the_poller() -> None:
    rows = [_row(COST_OURS, 0.9), _row(COST_FLOOR, 0.66), _row(COST_POLLER, 1.8), _row(COST_BUDGET, 1.3)]
    many = {
        "waits": 10_000,
        "ok": 10_000,
        "steady CPU share of a core": 0.12,
        "steady window s": [40.0, 100.0],
        "wake-up p99 ms": 250.0,
        "server lateness p99 ms": 3.9,
        "GC longest pause ms": 200.0,
        "RSS/wait KB": 19.5,
    }
    found = {t["target"]: t for t in cost_targets({"rows": rows, "many": many})}
    floor = found["real time, N = 1,000: CPU per wait ≤ 1.5× the bare held GET"]
    assert floor["met"] == "yes"
    assert "ratio 1.36" in floor["result"]
    assert "Redis budget 1.3 ms" in floor["result"]
    poller = found["real time, N = 1,000: CPU per wait ≤ ½ of a bare 5 s poller"]
    assert poller["met"] == "yes"
    assert "ratio 0.50" in poller["result"]
    assert found["10,000 waits: our CPU ≤ 15 % of a core in the steady state"]["met"] == "yes"
    assert found["10,000 waits: wake-up p99 ≤ 100 ms (the servers' own p99 beside it)"]["met"] == "no"
    assert found["10,000 waits: RSS ≤ 20 KB per wait"]["met"] == "yes"
    worse = cost_targets({"rows": [_row(COST_OURS, 1.2), _row(COST_FLOOR, 0.66), _row(COST_POLLER, 1.8)]})
    assert [t["met"] for t in worse] == ["no", "no"]
    assert "Redis" not in worse[0]["result"]  # no budget row, no budget figure


def test_a_report_without_the_cost_rows_has_no_issue_23_targets() -> None:
    report = {"args": {}, "command": "x", "date": "d", "seconds": 1.0, "machine": "m"}
    assert cost_targets(report) == []
    assert "Targets of issue 23" not in render(report)


def test_the_py_spy_summary_places_each_sample_by_its_innermost_frame(tmp_path: Path) -> None:
    raw = tmp_path / "spy.txt"
    raw.write_text(
        "process 1:run;_run_once (asyncio/base_events.py:1) 50\n"
        "process 1:run;apoll (/x/airflow_provider_luma/hooks/luma.py:3);request (aiohttp/client.py:5) 30\n"
        "process 1:run;run (/x/airflow_provider_luma/triggers/luma.py:9) 10\n"
        "process 1:run;info (structlog/_base.py:2) 10\n"
        "not a sample line\n"
    )
    summary = summarize(raw)
    assert summary is not None
    assert summary["samples"] == 100
    assert summary["innermost"]["event loop (asyncio, selectors)"] == pytest.approx(0.5)
    assert summary["innermost"]["aiohttp, yarl, multidict"] == pytest.approx(0.3)
    assert summary["innermost"]["provider"] == pytest.approx(0.1)
    assert summary["innermost"]["logging (structlog, logging)"] == pytest.approx(0.1)
    assert summary["provider on the stack"] == pytest.approx(0.4)
    table = markdown({"luma long-poll": summary})
    assert "| provider | 10.0 % |" in table
    assert "| *the provider anywhere on the stack* | 40.0 % |" in table
    # py-spy's relative paths (site-packages and the standard library), and a folder named airflow
    # that is not Airflow (the official image's home): each placed by the file, not by a folder name.
    relative = tmp_path / "relative.txt"
    relative.write_text(
        "run;load_triggers (airflow/jobs/triggerer_job_runner.py:1) 1\n"
        "run;execute (sqlalchemy/engine/base.py:2) 1\n"
        "run;emit (logging/handlers.py:3) 1\n"
        "run;__call__ (airflow/_shared/logging/structlog.py:4) 1\n"
        "run;select (selectors.py:5) 1\n"
        "run;switch (/home/airflow/.local/lib/python3.11/site-packages/greenlet/__init__.py:6) 1\n"
        "run;get (/home/airflow/.local/lib/python3.11/site-packages/airflow/models/trigger.py:7) 1\n"
        "run;poll (airflow_provider_luma/hooks/luma.py:8) 1\n"
    )
    places = summarize(relative)
    assert places is not None
    assert places["innermost"]["Airflow (its own code)"] == pytest.approx(2 / 8)
    assert places["innermost"]["database (SQLAlchemy, drivers)"] == pytest.approx(1 / 8)
    assert places["innermost"]["logging (structlog, logging)"] == pytest.approx(2 / 8)
    assert places["innermost"]["event loop (asyncio, selectors)"] == pytest.approx(1 / 8)
    assert places["innermost"]["other"] == pytest.approx(1 / 8)  # greenlet under /home/airflow
    assert places["innermost"]["provider"] == pytest.approx(1 / 8)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert summarize(empty) is None
