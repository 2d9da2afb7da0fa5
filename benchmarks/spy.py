"""
Where a process's CPU goes, sampled by py-spy (issue 23, item 1): the real-triggerer part records the
triggerer's process tree while a variant's waits run, when py-spy is installed (``pip install py-spy``:
a tool of the benchmark, not a dependency of the provider; absent, the part runs without a profile).

Each sample is one stack of a thread that was running (py-spy leaves idle threads out). The summary
says what share of the samples had their innermost frame in which code, and what share had the
provider anywhere on the stack (its own code and what it called).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

#: Where the innermost frame's file lies, first match wins: a pattern of the file part of a py-spy
#: frame, ``func (path/file.py:line)``, whose path py-spy gives relative to ``site-packages`` or the
#: standard library when it can, absolute otherwise.
_FILE = r"\((?:[^()]*/)?"
PLACES: tuple[tuple[str, str], ...] = (
    ("provider", _FILE + r"airflow_provider_luma/"),
    ("aiohttp, yarl, multidict", _FILE + r"(?:aiohttp|yarl|multidict)/"),
    ("logging (structlog, logging)", _FILE + r"(?:structlog/|logging/|airflow/_shared/logging/)"),
    ("database (SQLAlchemy, drivers)", _FILE + r"(?:sqlalchemy|psycopg2?|sqlite3|pymysql)/"),
    ("Airflow (its own code)", r"\((?:[^()]*/site-packages/)?airflow/"),
    ("event loop (asyncio, selectors)", _FILE + r"(?:asyncio/|selectors\.py|uvloop/)"),
)
_PATTERNS = tuple((place, re.compile(pattern)) for place, pattern in PLACES)
_PROVIDER = _PATTERNS[0][1]


def binary() -> str | None:
    """The py-spy executable on ``PATH``, or ``None``."""
    return shutil.which("py-spy")


class Spy:
    """
    ``py-spy record`` of ``pid`` and its children while the ``with`` block runs (raw stacks into ``out``).

    :param pid: The process to sample (its subprocesses too).
    :param out: Where py-spy writes its stacks, one ``frame;frame;... count`` line each.
    :param rate: Samples per second.
    """

    def __init__(self, pid: int, out: Path, rate: int = 97) -> None:
        self.pid, self.out, self.rate = pid, out, rate
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Spy:
        executable = binary()
        if executable is not None:
            command = [executable, "record", "--pid", str(self.pid), "--subprocesses", "--nonblocking"]
            command += ["--rate", str(self.rate), "--format", "raw", "--output", str(self.out)]
            self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def summary(self) -> dict[str, Any] | None:
        """:func:`summarize` of the recording, or ``None`` without py-spy or samples."""
        return summarize(self.out) if self.out.exists() else None


def _place(frame: str) -> str:
    for place, pattern in _PATTERNS:
        if pattern.search(frame):
            return place
    return "other"


def summarize(path: Path) -> dict[str, Any] | None:
    """Shares of the samples by the innermost frame's place, and the share with the provider on the stack."""
    innermost: Counter[str] = Counter()
    provider_on_stack = total = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        innermost[_place(stack.rsplit(";", 1)[-1])] += count
        provider_on_stack += count if _PROVIDER.search(stack) else 0
    if not total:
        return None
    return {
        "samples": total,
        "innermost": {place: innermost[place] / total for place in (*(place for place, _ in PLACES), "other")},
        "provider on the stack": provider_on_stack / total,
    }


def markdown(profiles: dict[str, dict[str, Any]]) -> str:
    """One column per profiled variant: the shares of its samples."""
    if not profiles:
        return ""
    names = list(profiles)
    places = [place for place, _ in PLACES] + ["other"]
    lines = ["| innermost frame in | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for place in places:
        lines.append(
            f"| {place} | " + " | ".join(f"{100 * profiles[n]['innermost'][place]:.1f} %" for n in names) + " |"
        )
    lines.append(
        "| *the provider anywhere on the stack* | "
        + " | ".join(f"{100 * profiles[n]['provider on the stack']:.1f} %" for n in names)
        + " |"
    )
    lines.append("| samples | " + " | ".join(str(profiles[n]["samples"]) for n in names) + " |")
    return "\n".join(lines)
