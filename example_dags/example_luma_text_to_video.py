"""
Text to video with Luma: submit a generation, wait for it in the triggerer, download the video.

The prompt and the output folder are DAG params (trigger with a config to change them); the
folder defaults to ``$LUMA_DEMO_OUTPUT_DIR`` or ``<temp dir>/luma-demo-output``. Needs a ``luma_default``
connection (the API key as password); ``python -m airflow_provider_luma.demo`` runs this DAG
against a local simulator.
"""

from __future__ import annotations

import os
import tempfile

import pendulum
from airflow.providers.common.compat.sdk import DAG, Param

from airflow_provider_luma.operators.luma import LumaDownloadVideoOperator, LumaGenerateVideoOperator
from airflow_provider_luma.sensors.luma import LumaGenerationSensor

OUTPUT_DIR = os.environ.get("LUMA_DEMO_OUTPUT_DIR") or os.path.join(tempfile.gettempdir(), "luma-demo-output")

with DAG(
    dag_id="luma_text_to_video",
    description="Generate a video from a prompt with Luma and download it.",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    params={
        "prompt": Param("A red fox trotting through fresh snow at dawn, cinematic", type="string", maxLength=2048),
        "output_dir": Param(OUTPUT_DIR, type="string"),
    },
    tags=["luma", "example"],
):
    # Returns right after submitting: the sensor below does the waiting, without a worker slot.
    # ray-flash-2 at 540p is the cheapest and quickest setting on the real API.
    generate = LumaGenerateVideoOperator(
        task_id="generate",
        prompt="{{ params.prompt }}",
        aspect_ratio="16:9",
        model="ray-flash-2",
        resolution="540p",
        duration="5s",
        wait_for_completion=False,
    )

    # report_progress logs each state as it comes ("dreaming after 3 s"), at one more call per state;
    # leave it out for the fewest calls.
    wait = LumaGenerationSensor(
        task_id="wait_for_video", generation_id=generate.output, timeout=60 * 60, report_progress=True
    )

    # The trailing "/" makes the destination a folder (created if missing): <folder>/<generation id>.mp4.
    download = LumaDownloadVideoOperator(
        task_id="download", generation=wait.output, destination="{{ params.output_dir }}/"
    )
