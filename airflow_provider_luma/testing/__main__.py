"""Run the Luma API simulator until SIGINT/SIGTERM.

Example::

    python -m airflow_provider_luma.testing --port 8089 --cdn-port 8090

Its flags are those of the options (:data:`~.options.OPTIONS`) that have one. The API key can also come
from ``LUMA_SIMULATOR_API_KEY`` (keeps it out of ``ps``). A custom key is never printed: the printed
connection shows ``***`` in its place.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from airflow_provider_luma.testing.checks import Choice, Flag
from airflow_provider_luma.testing.options import DEFAULT_API_KEY, OPTIONS, Option
from airflow_provider_luma.testing.simulator import LumaSimulator


def _reader(option: Option) -> Callable[[str], Any]:
    """The flag's text as the option's value, or argparse's usage error naming the flag."""

    def read(text: str) -> Any:
        try:
            return option.check(option.check.from_text(text))
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return read


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m airflow_provider_luma.testing",
        description="Local simulator of the Luma video API (AI/ML API wrapper).",
    )
    for option in OPTIONS:
        if option.flag is None:
            continue
        default = option.default if option.cli_default is None else option.cli_default
        if option.env:
            default = os.environ.get(option.env, default)
        shown = "" if option.name == "api_key" else f" (default: {default})"
        text = f"{option.help}{shown}".replace("%", "%%")
        if isinstance(option.check, Flag):
            # A switch: its flag turns a default-off option on, or a default-on option off.
            action = "store_false" if option.default else "store_true"
            p.add_argument(option.flag, dest=option.name, action=action, default=option.default, help=text)
            continue
        choices = option.check.values if isinstance(option.check, Choice) else None
        p.add_argument(option.flag, dest=option.name, type=_reader(option), default=default, choices=choices, help=text)
    return p.parse_args(argv)


async def _run(args: argparse.Namespace) -> None:
    sim = LumaSimulator(**{o.name: getattr(args, o.name) for o in OPTIONS if o.flag is not None})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await sim.astart()
    shown_key = sim.api_key if sim.api_key == DEFAULT_API_KEY else "***"
    conn = json.dumps({"conn_type": "luma", "host": sim.base_url, "password": shown_key})
    print(
        f"Luma simulator on {sim.base_url} (videos {sim.cdn_url}); AIRFLOW_CONN_LUMA_DEFAULT='{conn}'",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        await sim.astop()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m airflow_provider_luma.testing``."""
    asyncio.run(_run(_parse(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
