"""The key every test uses and the connection JSON of a simulator."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

from airflow_provider_luma.testing import LumaSimulator

#: The API key every test uses; the secrets checks look for it in logs, XCom, events and errors.
SENTINEL_KEY = "sk-luma-SENTINEL-4d9f2c7a1b"

#: Connection extras that make waits fast against short simulator holds.
FAST_EXTRAS = {"min_poll_interval": 0.05, "max_backoff": 0.3, "timeout": 10, "max_retries": 3}


def connection_json(sim: LumaSimulator, **extras) -> str:
    """The ``AIRFLOW_CONN_...`` JSON for ``sim`` with the sentinel key (and its hold, so early answers are told)."""
    hold = {"long_poll_hold": sim.hold_seconds} if hasattr(sim, "hold_seconds") else {}
    extra = {**FAST_EXTRAS, **hold, **extras}
    return json.dumps({"conn_type": "luma", "host": sim.base_url, "password": sim.api_key, "extra": extra})


#: The timelines of the simulator a real deployment talks to: holds 2 s, queued 2 s, dreaming 4 s.
DEPLOYMENT_TIMELINES = {"hold_seconds": 2.0, "queued_seconds": 2.0, "dreaming_seconds": 4.0}


@contextlib.contextmanager
def running_simulator(**options: Any) -> Iterator[LumaSimulator]:
    """A started simulator with the sentinel key and ``options``; stopped on exit."""
    sim = LumaSimulator(api_key=SENTINEL_KEY, **options)
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()
