"""Markdown report of a benchmark run (tables and the targets; the prose around them is kept in RESULTS.md by hand)."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from benchmarks.common import BASELINE_INTERVALS, BUDGET_TARGET, BUDGET_VARIANT, COLUMNS, fmt, spread, table

BEGIN = "<!-- BEGIN GENERATED -->"
END = "<!-- END GENERATED -->"
#: Columns shown as median (min–max) over runs; the others as the median.
SPREAD_COLUMNS = ("CPU ms/wait-min", "CPU ms/wait", "calls/wait", "p50 ms", "p99 ms")


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (N, variant): median (min–max) over the runs."""
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["N"], row["variant"]), []).append(row)
    out = []
    for (_, _), group in groups.items():
        merged: dict[str, Any] = {"runs": len(group)}
        for column in COLUMNS:
            values = [r.get(column) for r in group]
            numbers = [v for v in values if isinstance(v, (int, float))]
            if column in SPREAD_COLUMNS and numbers:
                merged[column] = spread(numbers)
            elif numbers and len(numbers) == len(values):
                merged[column] = float(statistics.median(numbers)) if column not in ("N",) else numbers[0]
            else:
                merged[column] = " / ".join(sorted({str(v) for v in values}))
        out.append(merged)
    return out


def _median(rows: list[dict[str, Any]], n: int, variant: str, column: str) -> float:
    values = [r[column] for r in rows if r["N"] == n and r["variant"] == variant and isinstance(r.get(column), float)]
    return float(statistics.median(values)) if values else float("nan")


def ratio_table(rows: list[dict[str, Any]]) -> str:
    """Our long-poll figures (median of runs) divided by each baseline's, per N (below 1: ours is lower)."""
    metrics = ("RSS/wait KB", "CPU ms/wait", "CPU ms/wait-min", "calls/wait", "p50 ms", "p99 ms")
    out = []
    for n in sorted({r["N"] for r in rows}):
        for suffix, ours in (("", "long-poll"), (" 1-hold", "long-poll 1-hold")):
            for kind in ("bare poll", "HttpSensorTrigger"):
                for interval in BASELINE_INTERVALS:
                    theirs = f"{kind} {interval:g}s{suffix}"
                    if not any(r["variant"] == theirs and r["N"] == n for r in rows):
                        continue
                    ratios: dict[str, Any] = {"N": n, "ours": ours, "vs": theirs}
                    for metric in metrics:
                        a, b = _median(rows, n, ours, metric), _median(rows, n, theirs, metric)
                        ratios[metric] = f"{a / b:.2f}" if b and not math.isnan(b) and not math.isnan(a) else "n/a"
                    out.append(ratios)
    return table(out, ("N", "ours", "vs", *metrics))


def _row(part: dict[str, Any] | None, variant: str) -> dict[str, Any] | None:
    for row in (part or {}).get("rows", []):
        if row.get("variant") == variant:
            return row
    return None


def targets(report: dict[str, Any]) -> list[dict[str, str]]:
    """Issue 12's targets, each met / missed / not measured, with the figures and the reason."""
    out = []
    trig = report.get("triggerer") or {}
    ours, http5, http60 = (_row(trig, v) for v in ("luma long-poll", "HttpSensor 5s", "HttpSensor 60s"))
    if ours and http5:
        ratio = ours["calls/wait"] / http5["calls/wait"]
        out.append(
            {
                "target": "calls per wait ≤ 1/5 of HttpSensor at 5 s (long-poll endpoint, real triggerer)",
                "result": f"{fmt(ours['calls/wait'])} vs {fmt(http5['calls/wait'])} calls/wait (ratio {ratio:.2f})",
                "met": "yes" if ratio <= 0.2 else "no",
            }
        )
    budget = next((r for r in report.get("rows", []) if r["variant"] == BUDGET_VARIANT), None)
    if budget is None:
        out.append({"target": "universal endpoint under a call budget", "result": "not run", "met": "n/a"})
    else:
        rate, burst = BUDGET_TARGET["max_calls_per_second"], BUDGET_TARGET["max_call_burst"]
        limit = rate + burst
        ok, total = (int(x) for x in budget["ok"].split("/"))
        out.append(
            {
                "target": f"{total:,} waits on the universal endpoint, budget {rate:g} calls/s + burst {burst}: "
                f"no one-second window above {limit:g} calls, all succeed",
                "result": f"most calls in a one-second window of the simulator's log: {fmt(budget['peak calls/s'])}; "
                f"{ok}/{total} waits succeeded",
                "met": "yes" if budget["peak calls/s"] <= limit and ok == total else "no",
            }
        )
    if ours and http60:
        cpu_ok = ours["trig CPU ms/wait"] <= http60["trig CPU ms/wait"]
        sooner = http60["wake p50 s"] / ours["wake p50 s"] if ours["wake p50 s"] else float("inf")
        out.append(
            {
                "target": "triggerer CPU per wait ≤ HttpSensor 60 s, waking ≥ 30× sooner",
                "result": f"{fmt(ours['trig CPU ms/wait'])} vs {fmt(http60['trig CPU ms/wait'])} ms/wait; wake p50 "
                f"{fmt(ours['wake p50 s'])} s vs {fmt(http60['wake p50 s'])} s ({sooner:.0f}× sooner)",
                "met": "yes" if cpu_ok and sooner >= 30 else "no",
            }
        )
    rows = report.get("rows", [])
    ns = sorted({r["N"] for r in rows if r["variant"] == "long-poll 1-hold"})
    if ns:
        n = ns[-1]
        a, b = (
            _median(rows, n, "long-poll 1-hold", "CPU ms/wait"),
            _median(rows, n, "bare poll 5s 1-hold", "CPU ms/wait"),
        )
        c = _median(rows, n, "HttpSensorTrigger 5s 1-hold", "CPU ms/wait")
        ratio = a / b if b else float("nan")
        out.append(
            {
                "target": "one loop, generations within one hold: CPU/wait ≤ 1/2 of a bare 5 s poller (stretch 1/3)",
                "result": f"N = {n}: {fmt(a)} vs {fmt(b)} ms/wait (ratio {ratio:.2f}); vs HttpSensorTrigger 5 s "
                f"{fmt(c)} ms/wait (ratio {a / c if c else float('nan'):.2f})",
                "met": "yes" if ratio <= 0.5 else "no",
            }
        )
    if ours:
        gap = ours["e2e p99 s"] - ours["sched p99 s"]
        out.append(
            {
                "target": "end-to-end p99 within 1 s of the scheduler's own latency",
                "result": f"e2e p99 {fmt(ours['e2e p99 s'])} s vs scheduler p99 {fmt(ours['sched p99 s'])} s "
                f"(gap {gap:.2f} s)",
                "met": "yes" if gap <= 1.0 else "no",
            }
        )
    ha = report.get("ha") or {}
    for backend, part in (ha.get("backends") or {}).items():
        if "row" not in part:
            out.append({"target": f"two triggerers on {backend}", "result": f"failed: {part['error']}", "met": "n/a"})
            continue
        label = backend if backend == "PostgreSQL" else f"{backend} (unsupported by Airflow)"
        right = part["ended_right"] == part["n"] and part["run_state"] == "success"
        out.append(
            {
                "target": f"two triggerers on {label}, one killed: 100 % of waits end right, 0 duplicate creates, "
                "0 duplicate held polls",
                "result": f"{part['ended_right']}/{part['n']} ended right, "
                f"{part['duplicate_creates']} duplicate creates, "
                f"{part['duplicate_held_polls']} held polls of one wait by two live triggerers "
                f"({part['overlaps_in_log']} overlaps in the simulator's log, the killed one's held polls included)",
                "met": "yes"
                if right and part["duplicate_creates"] == 0 and part["duplicate_held_polls"] == 0
                else "no",
            }
        )
        reassigned = max(part["reassigned_s"] or [math.inf])
        first = max(part["first_poll_s"] or [math.inf])
        out.append(
            {
                "target": f"{label}: recovery within the threshold + 2 × job_heartbeat_sec (+ one poll interval "
                "for the first poll)",
                "result": f"reassigned ≤ {fmt(reassigned)} s vs {fmt(part['reassign_bound'])} s; first poll ≤ "
                f"{fmt(first)} s vs {fmt(part['first_poll_bound'])} s",
                "met": "yes" if reassigned <= part["reassign_bound"] and first <= part["first_poll_bound"] else "no",
            }
        )
    model = report.get("model") or {}
    for row in (model.get("check") or {}).get("rows", []):
        out.append(
            {
                "target": f"model predicts the real run ({row['variant']}) within the stated margin",
                "result": f"calls/wait {fmt(row['calls/wait model'])} vs {fmt(row['calls/wait measured'])}; wake p50 "
                f"{fmt(row['wake p50 s model'])} s vs {fmt(row['wake p50 s measured'])} s",
                "met": row["within margin"],
            }
        )
    return out


#: Issue 23's real-time rows (:func:`benchmarks.run.cost_scenarios`).
COST_OURS, COST_FLOOR, COST_POLLER = "real-time long-poll", "real-time held GET", "real-time bare poll 5s"
COST_BUDGET = "real-time long-poll, Redis budget"


def cost_targets(report: dict[str, Any]) -> list[dict[str, str]]:
    """Issue 23's targets: CPU per wait against the held-GET floor and a 5 s poller, and 10,000 waits in one process."""
    out = []
    rows = report.get("rows", [])
    ns = sorted({r["N"] for r in rows if r["variant"] == COST_OURS})
    if ns:
        n = ns[-1]
        ours, floor, poller, budget = (
            _median(rows, n, v, "CPU ms/wait") for v in (COST_OURS, COST_FLOOR, COST_POLLER, COST_BUDGET)
        )
        budget_text = (
            f"; with the Redis budget {fmt(budget)} ms ({budget / floor:.2f}× the floor)"
            if not math.isnan(budget)
            else ""
        )
        out += [
            {
                "target": f"real time, N = {n:,}: CPU per wait ≤ 1.5× the bare held GET",
                "result": f"{fmt(ours)} vs {fmt(floor)} ms/wait (ratio {ours / floor:.2f}){budget_text}",
                "met": "yes" if ours <= 1.5 * floor else "no",
            },
            {
                "target": f"real time, N = {n:,}: CPU per wait ≤ ½ of a bare 5 s poller",
                "result": f"{fmt(ours)} vs {fmt(poller)} ms/wait (ratio {ours / poller:.2f}; the floor alone: "
                f"{floor / poller:.2f})",
                "met": "yes" if ours <= 0.5 * poller else "no",
            },
        ]
    many = report.get("many")
    if many and "error" not in many:
        n = many["waits"]
        out += [
            {
                "target": f"{n:,} waits: our CPU ≤ 15 % of a core in the steady state",
                "result": f"{fmt(100 * many['steady CPU share of a core'])} % (seconds {many['steady window s'][0]:g}–"
                f"{many['steady window s'][1]:g} of the run)",
                "met": "yes" if many["steady CPU share of a core"] <= 0.15 else "no",
            },
            {
                "target": f"{n:,} waits: wake-up p99 ≤ 100 ms (the servers' own p99 beside it)",
                "result": f"{fmt(many['wake-up p99 ms'])} ms (servers' lateness p99 "
                f"{fmt(many['server lateness p99 ms'])} ms; the collector's longest pause "
                f"{fmt(many.get('GC longest pause ms'))} ms)",
                "met": "yes" if many["wake-up p99 ms"] <= 100 else "no",
            },
            {
                "target": f"{n:,} waits: RSS ≤ 20 KB per wait",
                "result": f"{fmt(many['RSS/wait KB'])} KB",
                "met": "yes" if many["RSS/wait KB"] <= 20 else "no",
            },
        ]
    return out


def many_table(many: dict[str, Any]) -> str:
    """The many-waits part's figures, one per row."""
    if "error" in many:
        return f"The part failed: {many['error']}"
    keys = (
        "ok",
        "steady CPU share of a core",
        "CPU ms/wait",
        "calls/wait",
        "RSS/wait KB",
        "wake-up p50 ms",
        "wake-up p99 ms",
        "wake-up max ms",
        "GC full collections",
        "GC full seconds",
        "GC longest pause ms",
        "server lateness p99 ms",
        "server CPU share of a core",
        "wall s",
    )
    rows = [
        {"figure": key, "value": fmt(many.get(key)) if key != "ok" else f"{many['ok']}/{many['waits']}"} for key in keys
    ]
    return table(rows, ("figure", "value"))


def render(report: dict[str, Any]) -> str:
    args = report["args"]
    lines = [
        f"Command: `{report['command']}`  ",
        f"Date: {report['date']}; run took {report['seconds']:.0f} s  ",
        f"Machine: {report['machine']}  ",
    ]
    rows = report.get("rows")
    if rows:
        levels = next((r.get("log levels") for r in rows if r.get("log levels")), {})
        lines += [
            f"One-loop part: {args['runs']} run(s) of each scenario, cells of key columns give median (min–max). "
            f"Time compression: factor {args['factor']:g} (hold {30 / args['factor']:g} s instead of 30 s; generation "
            f"T = {args['generation_seconds']:g} s / factor; poll intervals / factor), lowered per N so our long polls "
            f"stay under {args['max_rate']:g} requests/s (column `factor`).  ",
            "Logging level in force in the measured process (measured after Airflow configured logging, not assumed): "
            + (", ".join(f"`{k}` {v}" for k, v in levels.items()) or "n/a")
            + "  ",
            f"Loopback round trip (bare aiohttp GET, keep-alive): p50 {report['loopback']['p50_ms']:.3f} ms, "
            f"p99 {report['loopback']['p99_ms']:.3f} ms.",
            "",
            "### Targets of issue 12",
            "",
            table(targets(report), ("target", "result", "met")),
            "",
            "### Waits in one event loop",
            "",
            table(aggregate(rows), (*COLUMNS, "runs")),
            "",
            "### Ours as ratios to the baselines (same N, same T; medians of runs)",
            "",
            ratio_table(rows),
        ]
    else:
        lines += ["", "### Targets of issue 12", "", table(targets(report), ("target", "result", "met"))]
    costs = cost_targets(report)
    if costs:
        lines += ["", "### Targets of issue 23", "", table(costs, ("target", "result", "met"))]
    many = report.get("many")
    if many:
        waits = many.get("waits", args.get("many_n", 0))
        lines += ["", f"### {waits:,} waits in one process (real 30 s holds)", "", many_table(many)]
    for key, title in (
        ("triggerer", "Waits in a real Airflow triggerer (no time compression)"),
        ("ha", "Two triggerers, one SIGKILLed mid-wait"),
        ("model", "Virtual-time model (real WaitLoops, fake clock)"),
        ("worker_slots", "Worker-slot seconds per sensor in a real Airflow 3 deployment"),
    ):
        part = report.get(key)
        if part:
            body = part.get("markdown") or f"The part failed: {part.get('error')}"
            lines += ["", f"### {title}", "", body]
    plots = report.get("plots") or {}
    if plots:
        lines += ["", "### Plots", ""]
        if "error" in plots:
            lines.append(f"No plots: {plots['error']}")
        for name, path in plots.items():
            if name != "error":
                lines.append(f"* {name}: [{Path(path).name}](results/{Path(path).name})")
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
