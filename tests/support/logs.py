"""What a test logged or printed, and the one scan for the key in it."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import pytest

from tests.support.connection import SENTINEL_KEY


def logged_text(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> str:
    """Everything logged so far: stdlib records and what Airflow 3's structlog printed."""
    captured = capsys.readouterr()
    return "\n".join([*(r.getMessage() for r in caplog.records), captured.out, captured.err])


class LineRecorder:
    """
    A logger for a wait that keeps its lines with their level (Airflow 2 and 3 route the hook's own
    logger differently, and a DEBUG line reaches neither capture by default).
    """

    def __init__(self) -> None:
        self.records: list[tuple[str, str]] = []

    def _keep(self, level: str, message: str, *args: object) -> None:
        self.records.append((level, message % args))

    def debug(self, message: str, *args: object) -> None:
        self._keep("debug", message, *args)

    def info(self, message: str, *args: object) -> None:
        self._keep("info", message, *args)

    def warning(self, message: str, *args: object) -> None:
        self._keep("warning", message, *args)

    @property
    def lines(self) -> list[str]:
        """Every line, all levels."""
        return [line for _, line in self.records]

    def at(self, level: str) -> list[str]:
        """The lines of one level."""
        return [line for kept, line in self.records if kept == level]


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


def sentinel_free(payload: object) -> None:
    """Assert the sentinel key is nowhere in ``payload`` (as JSON)."""
    assert SENTINEL_KEY not in json.dumps(payload, default=str)
