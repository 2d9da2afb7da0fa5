"""
Fan out: one Luma generation per prompt (dynamic task mapping), one sensor for all of them, one download.

The mapped generate tasks only submit; a single deferrable sensor waits for every generation with
the multi-fetch endpoint (one long poll for up to six ids), then every video is downloaded into the
output folder (``$LUMA_DEMO_OUTPUT_DIR`` or ``<temp dir>/luma-demo-output`` unless the run's config
says otherwise).
"""

from __future__ import annotations

import os
import tempfile

import pendulum
from airflow.providers.common.compat.sdk import DAG, Param

from airflow_provider_luma.operators.luma import LumaDownloadVideoOperator, LumaGenerateVideoOperator
from airflow_provider_luma.sensors.luma import LumaGenerationSensor

OUTPUT_DIR = os.environ.get("LUMA_DEMO_OUTPUT_DIR") or os.path.join(tempfile.gettempdir(), "luma-demo-output")
PROMPTS = [
    "A paper boat drifting down a rain gutter, macro shot",
    "Northern lights over a frozen lake, time-lapse",
    "A hummingbird hovering at a red flower, slow motion",
]

with DAG(
    dag_id="luma_fan_out",
    description="Generate several Luma videos in parallel and download them all.",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    params={"output_dir": Param(OUTPUT_DIR, type="string")},
    tags=["luma", "example"],
):
    generate = LumaGenerateVideoOperator.partial(
        task_id="generate",
        aspect_ratio="16:9",
        model="ray-flash-2",
        resolution="540p",
        wait_for_completion=False,
    ).expand(prompt=PROMPTS)

    # generate.output is the lazy sequence of every mapped task's generation dict.
    wait = LumaGenerationSensor(task_id="wait_for_videos", generation_ids=generate.output, timeout=60 * 60)

    download = LumaDownloadVideoOperator(
        task_id="download", generation=wait.output, destination="{{ params.output_dir }}/"
    )
