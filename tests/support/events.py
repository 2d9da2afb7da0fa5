"""Running a trigger to its end: every event it yields, checked to be plain JSON and key-free."""

from __future__ import annotations

import json

from airflow.triggers.base import TriggerEvent

from airflow_provider_luma.triggers.luma import LumaGenerationTrigger
from tests.support.connection import SENTINEL_KEY


async def all_events(trigger: LumaGenerationTrigger) -> list[dict]:
    """Run the trigger to its end and return every event payload it yielded."""
    events = []
    async for event in trigger.run():
        assert isinstance(event, TriggerEvent)
        events.append(event.payload)
    json.dumps(events)  # plain JSON, as the triggerer stores it
    assert SENTINEL_KEY not in json.dumps(events)
    return events


async def the_event(trigger: LumaGenerationTrigger) -> dict:
    events = await all_events(trigger)
    assert len(events) == 1, f"a trigger must yield exactly one event, got {events}"
    return events[0]
