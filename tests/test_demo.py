"""
``python -m airflow_provider_luma.demo`` (what ``bash scripts/demo`` runs): one human line per step,
Airflow's own lines only with ``--verbose``, never a key. Against simulators only: never the real API.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_provider_luma.demo import Story
from airflow_provider_luma.testing import SAMPLE_VIDEO_PATH, LumaSimulator
from tests.support.connection import SENTINEL_KEY, connection_json

ROOT = Path(__file__).parents[1]
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
SIZE = f"{SAMPLE_VIDEO_PATH.stat().st_size:,} bytes"


def run_demo(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the demo as a person would, with a short simulated timeline (queued 2 s, dreaming 2 s)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "LUMA_"))}
    environment = {
        **base,
        "LUMA_DEMO_QUEUED": "2",
        "LUMA_DEMO_DREAMING": "2",
        "LUMA_DEMO_OUTPUT_DIR": str(tmp_path / "videos"),
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "airflow_provider_luma.demo", *args],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def test_prints_one_line_per_step_and_nothing_of_airflow(tmp_path: Path) -> None:
    result = run_demo(tmp_path, "a paper boat on a pond")
    assert result.returncode == 0, result.stdout + result.stderr

    lines = result.stdout.splitlines()
    (video,) = sorted((tmp_path / "videos").glob("*.mp4"))
    expected = [
        r"Preparing a throw-away Airflow \(airflow db migrate\) \.\.\.",
        r"Running the example DAG luma_text_to_video with `airflow dags test` against the local Luma simulator "
        r"at http://127\.0\.0\.1:\d+ \(no key, no cost\)\.",
        r"Prompt: 'a paper boat on a pond'",
        rf"Created Luma generation {video.stem} \(model ray-flash-2\)",
        r"  queued    after 0 s",
        r"  dreaming  after [123] s",
        r"  completed after [345] s",
        rf"Video written to {re.escape(str(video))} \({SIZE}\)",
        r"Done in \d+ s\.",
        rf"Watch it: xdg-open {re.escape(str(video))}  \(or open it in a browser or VLC\)",
    ]
    assert len(lines) == len(expected), result.stdout
    for line, pattern in zip(lines, expected, strict=True):
        assert re.fullmatch(pattern, line), (line, pattern, result.stdout)
    assert re.fullmatch(UUID, video.stem)
    assert video.read_bytes() == SAMPLE_VIDEO_PATH.read_bytes()


def test_verbose_adds_airflows_lines_and_never_shows_the_key(tmp_path: Path) -> None:
    # A connection given as AIRFLOW_CONN_LUMA_DEFAULT (here a simulator with the sentinel key) is used as is.
    # Queued 5 s: the wait task starts a second or two after the submit task on a loaded machine, and
    # must still find the generation queued for the fetches below.
    sim = LumaSimulator(api_key=SENTINEL_KEY, hold_seconds=30.0, queued_seconds=5.0, dreaming_seconds=2.0)
    sim.start()
    try:
        result = run_demo(tmp_path, "--verbose", AIRFLOW_CONN_LUMA_DEFAULT=connection_json(sim))
    finally:
        sim.stop()
    assert result.returncode == 0, result.stdout + result.stderr

    out = result.stdout
    assert "against the luma_default connection from AIRFLOW_CONN_LUMA_DEFAULT" in out
    airflow_lines = [line for line in out.splitlines() if line.startswith("  | ")]
    assert any("DagRun Finished" in line and "state=success" in line for line in airflow_lines), out
    assert any("Luma wait ended" in line for line in airflow_lines), out
    # The human lines are there too, each once.
    for pattern in (r"^Created Luma generation \S+ \(model ray-flash-2\)$", r"^  dreaming  after \d+ s$"):
        assert len(re.findall(pattern, out, flags=re.MULTILINE)) == 1, (pattern, out)
    assert re.search(r"^Video written to .+\.mp4 \(", out, flags=re.MULTILINE)
    assert SENTINEL_KEY not in out + result.stderr
    # Every fetch of the wait went through the simulator with the flag on: one per state.
    assert [e["query"].get("state") for e in sim.requests("get")] == [None, "queued", "dreaming", "completed"]


@pytest.mark.parametrize(
    ("lines", "told"),
    [
        # Airflow 3's format; a state seen twice (the sensor's check, then its trigger) is told once.
        (
            [
                "2026-11-26T14:16:08Z [info     ] Created Luma generation g-1 (queued, luma-ai endpoint). [x] loc=a:1",
                "2026-11-26T14:16:09Z [info     ] Luma generation g-1: queued after 1 s. [x.y.Z] loc=waiting.py:361",
                "2026-11-26T14:16:11Z [info     ] Luma generation g-1: dreaming after 3 s. [x.y.Z] loc=waiting.py:361",
            ],
            [
                "Created Luma generation g-1 (the API did not name the model)",
                "  queued    after 0 s",
                "  dreaming  after 3 s",
            ],
        ),
        # Airflow 2's format, each task line printed twice.
        (
            [
                "[2026-11-26T14:16:17.406+0000] {download.py:118} INFO - Wrote the video of Luma generation g-1 "
                "(12345678 bytes) to /data/my videos/g-1.mp4.",
                "[2026-11-26T14:16:17.406+0000] {download.py:118} INFO - Wrote the video of Luma generation g-1 "
                "(12345678 bytes) to /data/my videos/g-1.mp4.",
                "[2026-11-26T14:16:17.407+0000] {luma.py:120} INFO - Luma generation g-1: failed after 7 s.",
            ],
            ["Video written to /data/my videos/g-1.mp4 (12.3 MB)", "  failed    after 7 s"],
        ),
    ],
)
def test_the_story_picks_the_providers_lines_out_of_either_airflows_log(lines: list[str], told: list[str]) -> None:
    story = Story()
    assert [human for line in lines for human in story.read(line)] == told
