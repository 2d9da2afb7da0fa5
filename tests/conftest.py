"""Shared test set-up: a private AIRFLOW_HOME, the simulator as the Luma connection, a sentinel key."""

from __future__ import annotations

import atexit
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# Before anything imports Airflow: a throw-away home with a SQLite DB and no example DAGs.
AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="luma-tests-airflow-home-"))
atexit.register(shutil.rmtree, AIRFLOW_HOME, ignore_errors=True)  # every run made one and left it behind
(AIRFLOW_HOME / "dags").mkdir()
os.environ["AIRFLOW_HOME"] = str(AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(AIRFLOW_HOME / "dags")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ.pop("AIRFLOW_CONN_LUMA_DEFAULT", None)

from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

from airflow_provider_luma.hooks.endpoints import forget_learned_behaviour  # noqa: E402
from airflow_provider_luma.testing import LumaSimulator  # noqa: E402
from tests.support.connection import (  # noqa: E402
    DEPLOYMENT_TIMELINES,
    SENTINEL_KEY,
    connection_json,
    running_simulator,
)
from tests.support.logs import OutputTee, find_leaks  # noqa: E402
from tests.support.relay import Relay, relay_connection  # noqa: E402

# Hypothesis: derandomized in CI (the same examples every run, so CI cannot flake on a rare draw);
# elsewhere random, with the seed chosen here, printed in the run's header, and replayable.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("dev", print_blob=True)


@pytest.hookimpl(tryfirst=True)  # before Hypothesis' own plugin reads --hypothesis-seed
def pytest_configure(config: pytest.Config) -> None:
    settings.load_profile("ci" if os.environ.get("CI") else "dev")
    if not os.environ.get("CI") and config.getoption("hypothesis_seed", None) is None:
        config.option.hypothesis_seed = str(random.SystemRandom().randrange(2**32))


def pytest_report_header(config: pytest.Config) -> str:
    if os.environ.get("CI"):
        return "hypothesis: derandomized (CI is set)"
    seed = config.getoption("hypothesis_seed", None)
    return f"hypothesis seed: {seed} (the same examples again: bash scripts/test --hypothesis-seed={seed} ...)"


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


@pytest.fixture(autouse=True)
def _no_sentinel_in_logs(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> Iterator[None]:
    """Every test: the key never appears in anything it logged or printed (even what it read itself)."""
    caplog.set_level("DEBUG")
    tee = OutputTee(capsys).start()
    try:
        yield
    finally:
        text = tee.stop()
    leaks = find_leaks({"logged or printed": text})
    assert not leaks, f"the API key was logged or printed: {leaks}"


@pytest.fixture(name="relay")
def relay_fixture(simulator: LumaSimulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[Relay]:
    """``luma_default`` pointing at a relay in front of the simulator; returns the relay."""
    proxy = Relay(simulator.base_url)
    monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", relay_connection(simulator, proxy.base_url))
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture(scope="module")
def deployment_simulator() -> Iterator[LumaSimulator]:
    """The simulator the deployment talks to: sentinel key, holds 2 s, queued 2 s, dreaming 4 s."""
    with running_simulator(**DEPLOYMENT_TIMELINES) as sim:
        yield sim
