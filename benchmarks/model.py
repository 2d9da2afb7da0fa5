"""
A virtual-time model of many waits across K triggerers (issue 12 item 5).

A discrete-event simulation that drives the provider's real :class:`~airflow_provider_luma.waiting.WaitLoop`
objects (one per wait, the code the trigger runs) with a fake clock, against a model of the API:

* ``luma-ai``: a poll is held until the generation completes or ``hold`` seconds pass, then answered
  after ``rtt`` seconds; ``video`` (universal): answered at once (after ``rtt``);
* an optional per-triggerer call budget: the provider's own
  :class:`~airflow_provider_luma.hooks.budget.CallSchedule` (what every
  :class:`~airflow_provider_luma.hooks.budget.CallBudget` decides with), on the same fake clock.

Assumptions (stated, not measured): triggerers are independent and identical (waits are spread
evenly, so one triggerer with 100,000 / K waits is simulated and the API's total is K times its
calls); no transient errors; the triggerer's event loop never lags (a real loop adds its own
queueing under load: the comparison with the real run shows how much); every generation completes
(no failures); a wait's first poll comes when its trigger starts. Workload of the 100,000-wait model: waits start
evenly over one hold (a triggerer's steady state), each generation completes 60–180 s after its
wait starts (evenly spread), like the real-triggerer run.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import statistics
import time
from dataclasses import dataclass
from typing import Any

from airflow_provider_luma.hooks.budget import CallSchedule
from airflow_provider_luma.models import ApiFamily, Generation, GenerationRef, GenerationState
from airflow_provider_luma.waiting import Finished, Poll, Sleep, WaitLoop, WaitPacing
from benchmarks.common import REAL_HOLD, percentile, table, window_peak

#: Margins within which the model must predict the measured real-triggerer run.
CALLS_MARGIN = 0.10  # relative, calls per wait
LATENCY_MARGIN_S = 0.5  # absolute, wake-up latency p50

_QUIET = logging.getLogger("benchmarks.model.quiet")
_QUIET.setLevel(logging.CRITICAL)
_QUIET.propagate = False


class Clock:
    """The fake clock every WaitLoop of a simulation reads."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class WaitSpec:
    start: float  # when the wait's first poll is asked for
    done_at: float  # when the generation completes


@dataclass(frozen=True)
class PendingPoll:
    asked: float  # when the wait asked for the poll
    held: bool  # a long poll, held by the API until completion or ``hold`` seconds
    ticket: int  # its place in the budget's queue (-1 without a budget)


def simulate(
    waits: list[WaitSpec],
    family: ApiFamily,
    *,
    hold: float = REAL_HOLD,
    poll_interval: float = 10.0,
    min_poll_interval: float = 5.0,
    rtt: float = 0.002,
    budget: tuple[float, int] | None = None,
) -> dict[str, Any]:
    """Run the waits of one triggerer; return calls (send times), per-wait calls and wake-up latencies."""
    clock = Clock()
    pacing = WaitPacing(min_poll_interval=min_poll_interval, poll_interval=poll_interval)
    schedule = CallSchedule(*budget) if budget else None
    loops = [
        WaitLoop(
            [GenerationRef(f"g{i}", family)],
            GenerationState.COMPLETED,
            deadline=None,
            pacing=pacing,
            clock=clock,
            logger=_QUIET,
        )
        for i in range(len(waits))
    ]
    # Events: (time, sequence, wait, what), what being None (the first step), "sleep" (a sleep ended),
    # ("start", poll) (a poll the budget queued may start) or ("answer", poll, state).
    heap: list[tuple[float, int, int, Any]] = []
    sequence = itertools.count()

    def push(at: float, i: int, what: Any) -> None:
        heapq.heappush(heap, (at, next(sequence), i, what))

    for i, spec in enumerate(waits):
        push(spec.start, i, None)
    sends: list[float] = []
    calls = [0] * len(waits)
    latency = [float("nan")] * len(waits)
    while heap:
        t, _, i, what = heapq.heappop(heap)
        clock.now = t
        if what is None:
            step = loops[i].first_step()
        elif what == "sleep":
            step = loops[i].after_sleep()
        elif what[0] == "start":
            poll = what[1]
            again = schedule.start(poll.ticket, t) if schedule else None
            if again is not None:
                push(again, i, what)
                continue
            sends.append(t)
            calls[i] += 1
            done = waits[i].done_at
            at_server = max(t, min(done, t + hold)) if poll.held else t
            push(at_server + rtt, i, ("answer", poll, "completed" if at_server >= done else "dreaming"))
            continue
        else:
            _, poll, state = what
            if schedule:
                schedule.finished(poll.ticket, t)
            step = loops[i].after_poll([Generation(f"g{i}", state=state)], t - poll.asked)
        if isinstance(step, Finished):
            latency[i] = t - waits[i].done_at
        elif isinstance(step, Sleep):
            push(t + step.seconds, i, "sleep")
        else:
            assert isinstance(step, Poll)
            ticket, at = schedule.reserve(t) if schedule else (-1, t)
            push(at, i, ("start", PendingPoll(asked=t, held=step.hold, ticket=ticket)))
    return {"sends": sends, "calls": calls, "latency": latency}


def workload(n: int, lo: float = 60.0, hi: float = 180.0, stagger: float = REAL_HOLD) -> list[WaitSpec]:
    """``n`` waits starting evenly over ``stagger`` s, each completing ``lo``–``hi`` s after it starts."""
    out = []
    for i in range(n):
        start = stagger * i / n
        out.append(WaitSpec(start, start + lo + (hi - lo) * ((i * 7919) % n) / max(1, n - 1)))
    return out


def scale_table(total: int, ks: tuple[int, ...] = (1, 10, 100), budget: tuple[float, int] = (20.0, 20)) -> dict:
    """Per K and family, with and without a budget: calls/s per triggerer and in total, latency."""
    rows = []
    for family in (ApiFamily.LUMA_AI, ApiFamily.VIDEO):
        for k in ks:
            per = max(1, total // k)
            for b in (None, budget):
                started = time.monotonic()
                result = simulate(workload(per), family, budget=b)
                sends, lat = result["sends"], [x for x in result["latency"] if x == x]
                span = max(sends) - min(sends) if sends else 1.0
                # The steady state: calls between the last wait's start and the first completion.
                steady = [s for s in sends if REAL_HOLD <= s < 60.0]
                rate = len(steady) / (60.0 - REAL_HOLD)
                rows.append(
                    {
                        "family": family.value,
                        "K": k,
                        "waits/triggerer": per,
                        "budget": f"{b[0]:g}/s + {b[1]}" if b else "none",
                        "calls/wait": statistics.fmean(result["calls"]),
                        "steady calls/s/triggerer": rate,
                        "peak 1-s calls/triggerer": window_peak(sends),
                        "total steady calls/s (K×)": rate * k,
                        "latency p50 s": percentile(lat, 0.5) if lat else float("nan"),
                        "latency p99 s": percentile(lat, 0.99) if lat else float("nan"),
                        "simulated span s": span,
                        "cpu s": time.monotonic() - started,
                    }
                )
    return {"rows": rows}


def predict_measured(triggerer: dict[str, Any] | None) -> dict[str, Any]:
    """The model's calls/wait and wake-up p50 for the real-triggerer run's Luma variants, next to the measured ones.

    Inputs taken from the run (not predicted): each wait's completion time and the time of its first
    poll from the triggerer (its second logged call; the first is the sensor's check before deferring,
    counted as one call). Predicted: the trigger's calls and the wake-up latency.
    """
    if not triggerer or "raw" not in triggerer:
        return {"rows": [], "note": "no real-triggerer run to compare with"}
    rows = []
    for row in triggerer["rows"]:
        detail = triggerer["raw"]["variants"].get(row["variant"])
        if not detail or detail.get("kind") != "luma":
            continue
        family = ApiFamily.VIDEO if detail["universal"] else ApiFamily.LUMA_AI
        specs, skipped = [], 0
        for w in detail["waits"]:
            if len(w["calls"]) < 2:
                skipped += 1  # completed before the sensor deferred: nothing to model
                continue
            specs.append(WaitSpec(w["calls"][1], w["done_at"]))
        if not specs:
            continue
        result = simulate(specs, family)
        predicted_calls = 1 + statistics.fmean(result["calls"])
        lat = [x for x in result["latency"] if x == x]
        predicted_p50 = percentile(lat, 0.5)
        measured_calls = row["calls/wait"]
        measured_p50 = row["wake p50 s"]
        calls_ok = abs(predicted_calls - measured_calls) <= CALLS_MARGIN * measured_calls
        latency_ok = abs(predicted_p50 - measured_p50) <= LATENCY_MARGIN_S
        rows.append(
            {
                "variant": row["variant"],
                "waits modelled": len(specs),
                "calls/wait model": predicted_calls,
                "calls/wait measured": measured_calls,
                "wake p50 s model": predicted_p50,
                "wake p50 s measured": measured_p50,
                "within margin": "yes" if calls_ok and latency_ok else "no",
            }
        )
    return {"rows": rows}


def model_report(total_waits: int, triggerer: dict[str, Any] | None) -> dict[str, Any]:
    scale = scale_table(total_waits)
    check = predict_measured(triggerer)
    scale_columns = (
        "family",
        "K",
        "waits/triggerer",
        "budget",
        "calls/wait",
        "steady calls/s/triggerer",
        "peak 1-s calls/triggerer",
        "total steady calls/s (K×)",
        "latency p50 s",
        "latency p99 s",
    )
    check_columns = (
        "variant",
        "waits modelled",
        "calls/wait model",
        "calls/wait measured",
        "wake p50 s model",
        "wake p50 s measured",
        "within margin",
    )
    markdown = (
        f"{total_waits:,} waits in total; one triggerer simulated with total / K waits (driving real `WaitLoop`s).\n\n"
        + table(scale["rows"], scale_columns)
        + f"\n\nModel vs the real-triggerer run (margins: calls/wait ±{CALLS_MARGIN:.0%}, wake-up p50 "
        f"±{LATENCY_MARGIN_S:g} s):\n\n"
        + (table(check["rows"], check_columns) if check["rows"] else check.get("note", "no comparable variant"))
    )
    return {"scale": scale, "check": check, "markdown": markdown}
