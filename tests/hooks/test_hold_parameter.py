"""
The long-poll parameter: ``state`` (the seed, the schema's single fetch) or ``status`` (the schema's
multi fetch). Whichever name the server reads, strict or lenient about the other, a wait gets the hold.
"""

from __future__ import annotations

import asyncio
import itertools
import logging

import pytest

from airflow_provider_luma.hooks.luma import LumaHook
from airflow_provider_luma.testing import LumaSimulator
from airflow_provider_luma.triggers.luma import LumaGenerationTrigger
from tests.support.connection import SENTINEL_KEY, connection_json

HOLD = 8.0
#: Each generation completes about 2.5 s after it is created: well inside one hold.
QUEUED, DREAMING = 1.5, 1.0


def matrix_simulator(kind: str, server_reads: str, strict: bool) -> LumaSimulator:
    options = {"single_hold_param" if kind == "single" else "multi_hold_param": server_reads}
    return LumaSimulator(
        api_key=SENTINEL_KEY,
        hold_seconds=HOLD,
        queued_seconds=QUEUED,
        dreaming_seconds=DREAMING,
        strict_query=strict,
        **options,
    )


def fetches(sim: LumaSimulator, kind: str) -> list[dict]:
    return sim.requests("get" if kind == "single" else "list")


MATRIX = [
    pytest.param(kind, reads, strict, id=f"{kind}-server-reads-{reads}-{'strict' if strict else 'lenient'}")
    for kind in ("single", "multi")
    for reads in ("state", "status")
    for strict in (False, True)
]


@pytest.mark.parametrize("path", ["sync", "trigger"])
@pytest.mark.parametrize(("kind", "server_reads", "strict"), MATRIX)
def test_the_wait_gets_the_hold_whatever_name_the_server_reads(monkeypatch, kind, server_reads, strict, path):
    with matrix_simulator(kind, server_reads, strict) as sim:
        monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", connection_json(sim, min_poll_interval=0.05))
        hook = LumaHook()
        ids = [hook.create_generation(f"fox {n}").id for n in range(1 if kind == "single" else 2)]
        if path == "sync":
            done = hook.wait_for_generations(ids, timeout=60)
            assert {g.state for g in done} == {"completed"}
        else:
            events = asyncio.run(_events(LumaGenerationTrigger(ids, deadline=_in(60))))
            assert [e["status"] for e in events] == ["success"]

        calls = fetches(sim, kind)
        last = calls[-1]
        # The wait ended on a request the server held until the state change released it ...
        assert last["released_by"] == "state", calls
        assert last["held"] > 0.5, calls
        assert last["query"].get(server_reads) == "completed", calls
        # ... within one call of the floor (one held poll): the schema's name needs none extra, the
        # other name one (an early answer, or a 400 naming the parameter).
        schema_name = "state" if kind == "single" else "status"
        assert len(calls) <= (1 if server_reads == schema_name else 2), calls
        if server_reads != schema_name:
            assert calls[0]["status"] == (400 if strict else 200), calls
        assert all(c["status"] in (200, 400) for c in calls)


def test_the_name_learned_is_kept_for_the_process(monkeypatch):
    with matrix_simulator("single", "status", strict=True) as sim:
        monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", connection_json(sim, min_poll_interval=0.05))
        hook = LumaHook()
        for n in range(2):
            hook.wait_for_generation(hook.create_generation(f"fox {n}").id, timeout=60)
        statuses = [c["status"] for c in fetches(sim, "single")]
        assert statuses == [400, 200, 200], statuses  # only the first wait paid for finding out


def test_when_neither_name_holds_the_wait_polls_at_min_poll_interval(monkeypatch, caplog):
    with LumaSimulator(
        api_key=SENTINEL_KEY, hold_seconds=HOLD, queued_seconds=1.0, dreaming_seconds=1.0, ignore_state_param=True
    ) as sim:
        monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", connection_json(sim, min_poll_interval=0.3))
        hook = LumaHook()
        for n in range(2):
            hook.wait_for_generation(hook.create_generation(f"fox {n}").id, timeout=60)
        calls = fetches(sim, "single")
        assert [sorted(set(c["query"]) - {"generation_id"}) for c in calls[:2]] == [["state"], ["status"]]
        assert all(set(c["query"]) == {"generation_id"} for c in calls[2:])  # stopped probing
        first = [c for c in calls[2:] if c["query"]["generation_id"] == calls[0]["query"]["generation_id"]]
        gaps = [b["time"] - a["time"] for a, b in itertools.pairwise(first)]
        assert gaps
        assert min(gaps) >= 0.25, gaps  # paced, not a hot loop
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "neither 'state' nor" in r.message]
        assert len(warnings) == 1


def test_a_connection_extra_pins_the_name(monkeypatch):
    with matrix_simulator("multi", "state", strict=False) as sim:
        monkeypatch.setenv(
            "AIRFLOW_CONN_LUMA_DEFAULT", connection_json(sim, min_poll_interval=0.05, multi_hold_param="state")
        )
        hook = LumaHook()
        ids = [hook.create_generation(f"fox {n}").id for n in range(2)]
        hook.wait_for_generations(ids, timeout=60)
        calls = fetches(sim, "multi")
        assert len(calls) == 1, calls
        assert calls[0]["query"]["state"] == "completed", calls
        assert calls[0]["released_by"] == "state"


async def _events(trigger: LumaGenerationTrigger) -> list[dict]:
    return [event.payload async for event in trigger.run()]


def _in(seconds: float) -> float:
    import time

    return time.time() + seconds
