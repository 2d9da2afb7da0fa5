"""
Run the text-to-video example DAG once, end to end, with ``airflow dags test``.

Usage::

    python -m airflow_provider_luma.demo ["a prompt"]

Against the bundled simulator by default (started and stopped here; queued 2 s, dreaming 5 s),
so it costs nothing and needs no key. With ``LUMA_API_KEY`` set, it uses the real API with that
key (a real, paid generation); with ``AIRFLOW_CONN_LUMA_DEFAULT`` set, that connection. Airflow
runs in a throw-away ``AIRFLOW_HOME``; the video goes to ``$LUMA_DEMO_OUTPUT_DIR`` or
``./luma-demo-output``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DAG_ID = "luma_text_to_video"
DAG_FILE = Path(__file__).resolve().parents[1] / "example_dags" / "example_luma_text_to_video.py"
DEFAULT_PROMPT = "A red fox trotting through fresh snow at dawn, cinematic"
# The lines of `airflow dags test` worth showing: state changes, task results, errors.
_RELEVANT = re.compile(
    r"Luma|DEFERRED|new_state=|Marking run|Marking task|\[error|ERROR|Traceback|Exception|DagRun Finished",
)
_NOISE = re.compile(r"DeprecationWarning|RemovedInAirflow|warnings.warn")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m airflow_provider_luma.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("prompt", nargs="?", default=DEFAULT_PROMPT, help="what the video shows")
    parser.add_argument("--verbose", action="store_true", help="show every line of `airflow dags test`")
    return parser.parse_args(argv)


@contextmanager
def _connection(env: dict[str, str]) -> Iterator[str]:
    """Set ``AIRFLOW_CONN_LUMA_DEFAULT`` in ``env``; yield a description that never holds the key."""
    api_key = os.environ.get("LUMA_API_KEY", "").strip()
    if api_key:
        env["AIRFLOW_CONN_LUMA_DEFAULT"] = json.dumps({"conn_type": "luma", "password": api_key})
        yield "the real Luma API (key from LUMA_API_KEY; this generation is billed)"
        return
    if os.environ.get("AIRFLOW_CONN_LUMA_DEFAULT"):
        yield "the luma_default connection from AIRFLOW_CONN_LUMA_DEFAULT"
        return
    from airflow_provider_luma.testing import LumaSimulator

    simulator = LumaSimulator(hold_seconds=30.0, queued_seconds=2.0, dreaming_seconds=5.0)
    simulator.start()
    try:
        env["AIRFLOW_CONN_LUMA_DEFAULT"] = simulator.connection_json()
        yield f"the local Luma simulator at {simulator.base_url} (no key, no cost)"
    finally:
        simulator.stop()


def _redact(line: str, secrets: list[str]) -> str:
    for secret in secrets:
        line = line.replace(secret, "***")
    return line


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m airflow_provider_luma.demo``; returns the exit code of the DAG run."""
    args = _parse(argv)
    if not DAG_FILE.is_file():
        print(f"The example DAG is not at {DAG_FILE}: run the demo from a checkout of the repository.", file=sys.stderr)
        return 2
    output_dir = Path(os.environ.get("LUMA_DEMO_OUTPUT_DIR") or "luma-demo-output").resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="luma-demo-airflow-home-"))
    (home / "dags").mkdir()
    shutil.copy(DAG_FILE, home / "dags" / DAG_FILE.name)
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "LUMA_DEMO_OUTPUT_DIR": str(output_dir),
        "PYTHONWARNINGS": "ignore",
    }
    secrets = [key for key in (os.environ.get("LUMA_API_KEY", "").strip(),) if key]
    airflow = [sys.executable, "-m", "airflow"]
    started = time.time()
    try:
        print(f"Preparing a throw-away Airflow in {home} ...", flush=True)
        migrate = subprocess.run([*airflow, "db", "migrate"], env=env, capture_output=True, text=True, check=False)
        if migrate.returncode != 0:
            print(_redact(migrate.stdout + migrate.stderr, secrets)[-4000:], file=sys.stderr)
            return migrate.returncode
        with _connection(env) as where:
            print(f"Running DAG {DAG_ID} with `airflow dags test` against {where}.", flush=True)
            print(f"Prompt: {args.prompt!r}", flush=True)
            conf = json.dumps({"prompt": args.prompt, "output_dir": str(output_dir)})
            process = subprocess.Popen(
                [*airflow, "dags", "test", DAG_ID, "--conf", conf],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                bufsize=1,
            )
            assert process.stdout is not None
            recent: list[str] = []
            for line in process.stdout:
                if not args.verbose and (not _RELEVANT.search(line) or _NOISE.search(line)):
                    continue
                # Airflow 2 logs task lines twice (task log and console): show each once.
                key = re.sub(r"^\[[^\]]*\]\s*", "", line.strip())
                if key in recent:
                    continue
                recent = [*recent[-4:], key]
                print("  " + _redact(line.rstrip(), secrets), flush=True)
            code = process.wait()
    finally:
        shutil.rmtree(home, ignore_errors=True)
    written = sorted(p for p in output_dir.glob("*.mp4") if p.stat().st_mtime >= started - 1)
    if code == 0 and written:
        for path in written:
            print(f"The video was written to {path}", flush=True)
        return 0
    print(f"The DAG run did not produce a video (exit code {code}); rerun with --verbose for details.", flush=True)
    return code or 1


if __name__ == "__main__":
    sys.exit(main())
