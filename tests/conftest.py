"""Shared test set-up: a private AIRFLOW_HOME, the simulator as the Luma connection, a sentinel key."""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
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
import logging  # noqa: E402
from collections.abc import Iterator, Mapping  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

from airflow_provider_luma.hooks.endpoints import forget_learned_behaviour  # noqa: E402
from airflow_provider_luma.testing import LumaSimulator  # noqa: E402

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


def wait_for_polls(sim: LumaSimulator, generation_id: str, state: str | None = None, timeout: float = 60) -> None:
    """Block until ``sim`` answered a fetch of ``generation_id`` (asking for ``state``, if given); bounded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in sim.requests("get"):
            query = entry["query"]
            if query.get("generation_id") == generation_id and (state is None or query.get("state") == state):
                return
        time.sleep(0.05)
    raise AssertionError(f"no poll of {generation_id} asking for {state!r} within {timeout:.0f} s")


@contextlib.contextmanager
def timeline_driven_by_polls(
    sim: LumaSimulator, prompt: str, steps: list[tuple[str, str]], failure_reason: str | None = None
) -> Iterator[None]:
    """Move the generation whose prompt holds ``prompt`` on as the waits ask, not as the clock goes.

    ``steps``: ``(asked, new_state)`` pairs: once ``sim`` answered a poll asking for ``asked``, the
    generation is set to ``new_state``. A DAG run on a loaded machine may take any time between its
    tasks; a fixed timeline would let a later state be seen first. Script the prompt with a long
    ``queued_seconds`` so that only these steps move it.
    """
    stop = threading.Event()
    problems: list[BaseException] = []

    def drive() -> None:
        try:
            while not stop.is_set():
                ours = [g for g in sim.generations() if prompt in g["request"]["prompt"]]
                if ours:
                    break
                time.sleep(0.05)
            else:
                return
            for asked, new_state in steps:
                while not stop.is_set():
                    try:
                        wait_for_polls(sim, ours[0]["id"], asked, timeout=0.2)
                        break
                    except AssertionError:
                        continue
                else:
                    return
                sim.set_state(ours[0]["id"], new_state, failure_reason if new_state == "failed" else None)
        except BaseException as error:  # shown by the test, not lost in the thread
            problems.append(error)

    thread = threading.Thread(target=drive, name="timeline-driver", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)
    assert not problems, problems


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


# -- secret scans ------------------------------------------------------------------------------------


def _airflow_own_debug_line(line: str) -> bool:
    # Airflow 3.0's in-process supervisor (dag.test) prints its MaskSecret requests, key included, at
    # DEBUG level: Airflow's own logging, off by default, and the very call that masks the key.
    return "[debug" in line and "MaskSecret(" in line


def find_leaks(texts: Mapping[str, str], secret: str = SENTINEL_KEY) -> dict[str, list[str]]:
    """``{name: lines holding secret}`` for each named text that holds it; empty when nothing leaked.

    The one scan every secrets check uses: the per-test output check below, the deployment tests' log,
    XCom and database scans, and the positive controls (tests/chaos/test_secret_scans.py) that plant a key.
    """
    leaks = {}
    for name, text in texts.items():
        lines = [line[:300] for line in text.splitlines() if secret in line and not _airflow_own_debug_line(line)]
        if lines:
            leaks[name] = lines
    return leaks


class OutputTee(logging.Handler):
    """Keeps everything a test logs (every record, traceback included) and prints, whoever reads it first.

    Tests that call ``capsys.readouterr()`` themselves (directly or through :func:`logged_text`) consume
    the captured output; the tee wraps ``readouterr`` so each result is kept here too, and the rest is
    read at :meth:`stop`. Records come from a handler on the root logger, so no phase is missed.
    """

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        super().__init__(logging.NOTSET)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        self.texts: list[str] = []
        self._capsys = capsys
        self._readouterr = capsys.readouterr

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.texts.append(self.format(record))
        except Exception:  # a record whose arguments do not format: keep its parts
            self.texts.append(f"{record.msg!s} {record.args!r}")

    def _reading(self) -> Any:
        captured = self._readouterr()
        self.texts += [captured.out, captured.err]
        return captured

    def start(self) -> OutputTee:
        logging.getLogger().addHandler(self)
        self._capsys.readouterr = self._reading  # type: ignore[method-assign]
        return self

    def stop(self) -> str:
        """Stop recording; return everything seen (what is still captured included)."""
        logging.getLogger().removeHandler(self)
        self._reading()
        self._capsys.readouterr = self._readouterr  # type: ignore[method-assign]
        return "\n".join(self.texts)


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
