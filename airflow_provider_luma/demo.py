"""
Run the text-to-video example DAG once, end to end, with ``airflow dags test``, and say what happens.

Usage::

    python -m airflow_provider_luma.demo ["a prompt"] [--verbose]

Prints one line per step a person cares about: the generation created (id, model), each state it
reaches with the seconds since its creation (``queued``, ``dreaming``, ``completed``), and where the
video was written and its size. ``--verbose`` prints every line of ``airflow dags test`` as well.

Against the bundled simulator by default (started and stopped here; queued 3 s, dreaming 6 s, or
``$LUMA_DEMO_QUEUED`` / ``$LUMA_DEMO_DREAMING`` seconds), so it costs nothing and needs no key.
With ``LUMA_API_KEY`` set, it uses the real API with that key (a real, paid generation); with
``AIRFLOW_CONN_LUMA_DEFAULT`` set, that connection. Airflow runs in a throw-away ``AIRFLOW_HOME``;
the video goes to ``$LUMA_DEMO_OUTPUT_DIR`` or ``./luma-demo-output``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from airflow_provider_luma.waiting import PROGRESS_LOG_PREFIX

DAG_ID = "luma_text_to_video"
#: The example DAG of a checkout; ``$LUMA_DEMO_DAG_FILE`` names it for an installed wheel (scripts/release).
DAG_FILE = Path(
    os.environ.get("LUMA_DEMO_DAG_FILE")
    or Path(__file__).resolve().parents[1] / "example_dags" / "example_luma_text_to_video.py"
)
DEFAULT_PROMPT = "A red fox trotting through fresh snow at dawn, cinematic"
#: Seconds the simulator keeps a generation ``queued``, then ``dreaming``, unless the environment says.
DEFAULT_TIMELINE = {"LUMA_DEMO_QUEUED": 3.0, "LUMA_DEMO_DREAMING": 6.0}

# The provider's own log lines the demo turns into its steps (the same in Airflow 2's and 3's formats).
_CREATED = re.compile(
    r"Created Luma generation (?P<id>\S+) \((?P<state>[^,]+), (?P<api>[\w-]+) endpoint(?:, (?P<model>[^)]+))?\)\."
)
_PROGRESS = re.compile(
    re.escape(PROGRESS_LOG_PREFIX)
    + r"(?P<id>\S+): (?P<state>queued|dreaming|completed|failed) after (?P<seconds>\d+) s\."
)
_WRITTEN = re.compile(
    r"Wrote the video of Luma generation (?P<id>\S+) \((?P<size>\d+) bytes\) to (?P<path>.+?)\.(?=\s|$)"
)
_WAIT_ENDED = re.compile(r"Luma wait ended: (?P<message>.+?)(?=\s+\[[\w.]+\]|\s*$)")
# What explains a failed run when the output is not verbose.
_ERROR = re.compile(r"\[error|\bERROR\b|Error:|Exception:|DagRun Finished.*state=failed")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m airflow_provider_luma.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("prompt", nargs="?", default=DEFAULT_PROMPT, help="what the video shows")
    parser.add_argument("--verbose", action="store_true", help="also print every line of `airflow dags test`")
    return parser.parse_args(argv)


def _seconds(name: str) -> float:
    """A timeline setting of the simulator from the environment, or its default."""
    value = os.environ.get(name, "").strip()
    try:
        seconds = float(value) if value else DEFAULT_TIMELINE[name]
    except ValueError:
        raise SystemExit(f"{name}={value!r} is not a number of seconds.") from None
    if not 0 <= seconds <= 600:
        raise SystemExit(f"{name}={value!r}: give between 0 and 600 seconds.")
    return seconds


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

    simulator = LumaSimulator(
        hold_seconds=30.0,
        queued_seconds=_seconds("LUMA_DEMO_QUEUED"),
        dreaming_seconds=_seconds("LUMA_DEMO_DREAMING"),
    )
    simulator.start()
    try:
        env["AIRFLOW_CONN_LUMA_DEFAULT"] = simulator.connection_json()
        yield f"the local Luma simulator at {simulator.base_url} (no key, no cost)"
    finally:
        simulator.stop()


def _secrets() -> list[str]:
    """The keys the output must never show: ``LUMA_API_KEY`` and the password of ``AIRFLOW_CONN_LUMA_DEFAULT``."""
    secrets = [os.environ.get("LUMA_API_KEY", "").strip()]
    connection = os.environ.get("AIRFLOW_CONN_LUMA_DEFAULT", "").strip()
    try:
        secrets.append(str(json.loads(connection).get("password") or ""))
    except (ValueError, AttributeError):
        with suppress(ValueError):
            secrets.append(unquote(urlsplit(connection).password or ""))
    return [secret for secret in secrets if secret]


def _redact(line: str, secrets: list[str]) -> str:
    for secret in secrets:
        line = line.replace(secret, "***")
    return line


def _size(size: int) -> str:
    """``1,753 bytes`` or ``2.4 MB``."""
    return f"{size:,} bytes" if size < 100_000 else f"{size / 1_000_000:.1f} MB"


@dataclass
class Story:
    """
    The steps of the run a person cares about, picked out of the lines of ``airflow dags test``.

    Each step is told once (Airflow 2 prints a task's lines twice; a state may be seen by the sensor's
    first check and again by its trigger): :meth:`read` returns the new human lines a log line tells.
    """

    told: set[tuple[str, ...]] = field(default_factory=set)
    written: list[Path] = field(default_factory=list)
    ended: str | None = None

    def _new(self, *key: str) -> bool:
        if key in self.told:
            return False
        self.told.add(key)
        return True

    def read(self, line: str) -> list[str]:
        """The human lines ``line`` adds to the story (none for Airflow's own lines)."""
        if created := _CREATED.search(line):
            generation_id, state = created["id"], created["state"]
            lines = []
            if self._new("created", generation_id):
                model = f"model {created['model']}" if created["model"] else "the API did not name the model"
                lines.append(f"Created Luma generation {generation_id} ({model})")
            # The create answer is the generation's first state, at its creation.
            if state in ("queued", "dreaming", "completed", "failed") and self._new("state", generation_id, state):
                lines.append(f"  {state:<9} after 0 s")
            return lines
        if progress := _PROGRESS.search(line):
            if self._new("state", progress["id"], progress["state"]):
                return [f"  {progress['state']:<9} after {progress['seconds']} s"]
            return []
        if written := _WRITTEN.search(line):
            if self._new("written", written["path"]):
                self.written.append(Path(written["path"]))
                return [f"Video written to {written['path']} ({_size(int(written['size']))})"]
            return []
        if ended := _WAIT_ENDED.search(line):
            self.ended = ended["message"]
        return []


def _how_to_watch(video: Path) -> str:
    """How to open the video on this machine (the simulator's clips are stamped "simulated")."""
    opener = {"darwin": "open", "win32": "start"}.get(sys.platform, "xdg-open")
    return f"Watch it: {opener} {shlex.quote(str(video))}  (or open it in a browser or VLC)"


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
    secrets = _secrets()
    airflow = [sys.executable, "-m", "airflow"]
    started = time.time()
    story = Story()
    errors: list[str] = []
    try:
        print("Preparing a throw-away Airflow (airflow db migrate) ...", flush=True)
        migrate = subprocess.run([*airflow, "db", "migrate"], env=env, capture_output=True, text=True, check=False)
        if migrate.returncode != 0:
            print(_redact(migrate.stdout + migrate.stderr, secrets)[-4000:], file=sys.stderr)
            return migrate.returncode
        if not args.verbose:
            logging.getLogger("airflow_provider_luma.testing").setLevel(logging.WARNING)  # "listening on ..."
        with _connection(env) as where:
            print(f"Running the example DAG {DAG_ID} with `airflow dags test` against {where}.", flush=True)
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
            for raw in process.stdout:
                line = _redact(raw.rstrip(), secrets)
                if args.verbose:
                    print("  | " + line, flush=True)
                elif _ERROR.search(line):
                    errors.append(line)
                for told in story.read(line):
                    print(told, flush=True)
            code = process.wait()
    finally:
        shutil.rmtree(home, ignore_errors=True)
    if code == 0 and not story.written:
        # The download's log line was not recognised: say what the run wrote all the same.
        for path in sorted(p for p in output_dir.glob("*.mp4") if p.stat().st_mtime >= started - 1):
            story.written.append(path)
            print(f"Video written to {path} ({_size(path.stat().st_size)})", flush=True)
    if code == 0 and story.written:
        print(f"Done in {time.time() - started:.0f} s.", flush=True)
        print(_how_to_watch(story.written[-1]), flush=True)
        return 0
    if story.ended:
        print(f"The wait ended: {story.ended}", flush=True)
    for line in errors[-15:]:
        print("  " + line, flush=True)
    print(f"The DAG run did not produce a video (exit code {code}); rerun with --verbose for details.", flush=True)
    return code or 1


if __name__ == "__main__":
    sys.exit(main())
