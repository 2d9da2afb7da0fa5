"""Run the Luma API simulator until SIGINT/SIGTERM.

Example::

    python -m airflow_provider_luma.testing --port 8089 --cdn-port 8090

The API key can also come from ``LUMA_SIMULATOR_API_KEY`` (keeps it out of ``ps``).
A custom key is never printed: the printed connection shows ``***`` in its place.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys

from airflow_provider_luma.testing.simulator import (
    DEFAULT_API_KEY,
    HOLD_PARAMS,
    MULTI_SHAPES,
    STATES,
    LumaSimulator,
)


def _status_words(text: str) -> dict[str, str]:
    """``queued=waiting,dreaming=active`` -> ``{"queued": "waiting", "dreaming": "active"}``."""
    words: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        state, sep, word = pair.partition("=")
        if not sep or state.strip() not in STATES or not word.strip():
            raise argparse.ArgumentTypeError(f"expected STATE=WORD pairs with STATE in {STATES}, got {pair!r}")
        words[state.strip()] = word.strip()
    return words


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m airflow_provider_luma.testing",
        description="Local simulator of the Luma video API (AI/ML API wrapper).",
    )
    p.add_argument("--host", default="127.0.0.1", help="bind address (loopback by default)")
    p.add_argument("--port", type=int, default=8089, help="API port (0: any free port)")
    p.add_argument("--cdn-port", type=int, default=8090, help="video origin port")
    p.add_argument("--hold", type=float, default=30.0, help="max long-poll hold, seconds")
    p.add_argument("--queued", type=float, default=1.0, help="seconds spent queued")
    p.add_argument("--dreaming", type=float, default=2.0, help="seconds spent dreaming")
    p.add_argument(
        "--api-key",
        default=os.environ.get("LUMA_SIMULATOR_API_KEY", DEFAULT_API_KEY),
        help="accepted key (default: $LUMA_SIMULATOR_API_KEY or the simulator key)",
    )
    p.add_argument("--state-file", default=None, help="persist generations here")
    p.add_argument("--multi-shape", choices=MULTI_SHAPES, default="list")
    p.add_argument("--ignore-state-param", action="store_true", help="never hold a long poll")
    p.add_argument(
        "--single-hold-param", choices=HOLD_PARAMS, default="state", help="hold parameter of the single fetch"
    )
    p.add_argument(
        "--multi-hold-param", choices=HOLD_PARAMS, default="status", help="hold parameter of the multi fetch"
    )
    p.add_argument("--strict-query", action="store_true", help="400 on unknown query parameters")
    p.add_argument("--luma-ai-routes-gone", action="store_true", help="answer every luma-ai route with NestJS's 404")
    p.add_argument(
        "--universal-id-field",
        choices=("id", "generation_id"),
        default="id",
        help="key of the id in the universal create's answer",
    )
    p.add_argument("--universal-no-id-suffix", action="store_true", help="universal ids without the ':<model>' suffix")
    p.add_argument(
        "--universal-status-words",
        type=_status_words,
        default=None,
        metavar="STATE=WORD,...",
        help="override universal status words, e.g. queued=waiting,dreaming=active",
    )
    p.add_argument("--fault-rate", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


async def _run(args: argparse.Namespace) -> None:
    sim = LumaSimulator(
        args.host,
        args.port,
        args.cdn_port,
        api_key=args.api_key,
        hold_seconds=args.hold,
        queued_seconds=args.queued,
        dreaming_seconds=args.dreaming,
        multi_shape=args.multi_shape,
        ignore_state_param=args.ignore_state_param,
        single_hold_param=args.single_hold_param,
        multi_hold_param=args.multi_hold_param,
        strict_query=args.strict_query,
        luma_ai_routes_gone=args.luma_ai_routes_gone,
        universal_id_field=args.universal_id_field,
        universal_id_suffix=not args.universal_no_id_suffix,
        universal_status_words=args.universal_status_words,
        state_file=args.state_file,
        fault_rate=args.fault_rate,
        seed=args.seed,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await sim.astart()
    shown_key = args.api_key if args.api_key == DEFAULT_API_KEY else "***"
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
