"""Shared test set-up: a private AIRFLOW_HOME, the simulator as the Luma connection, a sentinel key."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

# Before anything imports Airflow: a throw-away home with a SQLite DB and no example DAGs.
AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="luma-tests-airflow-home-"))
(AIRFLOW_HOME / "dags").mkdir()
os.environ["AIRFLOW_HOME"] = str(AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(AIRFLOW_HOME / "dags")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ.pop("AIRFLOW_CONN_LUMA_DEFAULT", None)

import json  # noqa: E402
from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402

from airflow_provider_luma.hooks.endpoints import forget_learned_behaviour  # noqa: E402
from airflow_provider_luma.testing import LumaSimulator  # noqa: E402

#: The API key every test uses; the secrets checks look for it in logs, XCom, events and errors.
SENTINEL_KEY = "sk-luma-SENTINEL-4d9f2c7a1b"

#: Connection extras that make waits fast against short simulator holds.
FAST_EXTRAS = {"min_poll_interval": 0.05, "max_backoff": 0.3, "timeout": 10, "max_retries": 3}


def connection_json(sim: LumaSimulator, **extras) -> str:
    """The ``AIRFLOW_CONN_...`` JSON for ``sim`` with the sentinel key (and its hold, so early answers are told)."""
    hold = {"long_poll_hold": sim.hold_seconds} if hasattr(sim, "hold_seconds") else {}
    extra = {**FAST_EXTRAS, **hold, **extras}
    return json.dumps({"conn_type": "luma", "host": sim.base_url, "password": sim.api_key, "extra": extra})


@pytest.fixture(autouse=True)
def _fresh_learned_behaviour() -> Iterator[None]:
    """Each test starts with nothing learned about servers (hold names, gone routes): ports get reused."""
    forget_learned_behaviour()
    yield
    forget_learned_behaviour()


@pytest.fixture
def simulator() -> Iterator[LumaSimulator]:
    """A simulator with short holds (1 s) and timelines (queued 0.3 s, dreaming 0.6 s), sentinel key."""
    sim = LumaSimulator(api_key=SENTINEL_KEY, hold_seconds=1.0, queued_seconds=0.3, dreaming_seconds=0.6)
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def luma_conn(simulator: LumaSimulator, monkeypatch: pytest.MonkeyPatch) -> LumaSimulator:
    """``luma_default`` pointing at the simulator; returns the simulator."""
    monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", connection_json(simulator))
    return simulator


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """An initialised SQLite metadata DB in the private AIRFLOW_HOME (for dag.test())."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        capture_output=True,
        env={**os.environ},
        timeout=300,
    )
    return AIRFLOW_HOME


def logged_text(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> str:
    """Everything logged so far: stdlib records and what Airflow 3's structlog printed."""
    captured = capsys.readouterr()
    return "\n".join([*(r.getMessage() for r in caplog.records), captured.out, captured.err])


def _airflow_own_debug_line(line: str) -> bool:
    # Airflow 3.0's in-process supervisor (dag.test) prints its MaskSecret requests, key included, at
    # DEBUG level: Airflow's own logging, off by default, and the very call that masks the key.
    return "[debug" in line and "MaskSecret(" in line


@pytest.fixture(autouse=True)
def _no_sentinel_in_logs(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> Iterator[None]:
    """Every test: the key never appears in anything logged or printed."""
    caplog.set_level("DEBUG")
    yield
    leaks = [
        line
        for line in logged_text(caplog, capsys).splitlines()
        if SENTINEL_KEY in line and not _airflow_own_debug_line(line)
    ]
    assert not leaks, f"the API key was logged or printed: {leaks[:3]}"
