"""Markdown report of a benchmark run (tables only; the prose around them is kept in RESULTS.md by hand)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.run import COLUMNS, ratio_table, table

BEGIN = "<!-- BEGIN GENERATED -->"
END = "<!-- END GENERATED -->"


def render(report: dict[str, Any]) -> str:
    args = report["args"]
    lines = [
        f"Command: `{report['command']}`  ",
        f"Date: {report['date']}; run took {report['seconds']:.0f} s  ",
        f"Machine: {report['machine']}  ",
        f"Time compression: factor {args['factor']:g} (hold {30 / args['factor']:g} s instead of 30 s; generation "
        f"T = {args['generation_seconds']:g} s / factor; poll intervals / factor), lowered per N so our long polls "
        f"stay under {args['max_rate']:g} requests/s (column `factor`). CPU ms/wait-min is real-time equivalent "
        "(measured / factor).  ",
        f"Loopback round trip (bare aiohttp GET, keep-alive): p50 {report['loopback']['p50_ms']:.3f} ms, "
        f"p99 {report['loopback']['p99_ms']:.3f} ms.",
        "",
        "### Waits in one event loop",
        "",
        table(report["rows"], COLUMNS),
        "",
        "### Long-poll figures as ratios to interval polling (same N, same T)",
        "",
        ratio_table(report["rows"]),
    ]
    slots = report.get("worker_slots")
    if slots:
        lines += ["", "### Worker-slot seconds per sensor in a real Airflow 3 deployment", "", slots["markdown"]]
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], out: Path) -> None:
    """Write the generated part between the markers of ``out`` (the whole file if it has none) and the JSON."""
    generated = render(report)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists() and BEGIN in (text := out.read_text()) and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        out.write_text(f"{head}{BEGIN}\n{generated}{END}{tail}")
    else:
        out.write_text(f"# Benchmark results\n\n{BEGIN}\n{generated}{END}\n")
    out.with_suffix(".json").write_text(json.dumps(report, indent=1, default=str))
