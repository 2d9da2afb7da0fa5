"""
Videos as Assets, the producer: generate a video, download it, and announce the file as an Asset event.

The download task's outlets are the destination folder (a fixed Asset a consumer DAG is scheduled
on) and an alias (``luma-videos``) to which each run adds the file's own Asset. Both events carry
the video in their extra: generation id, model, file URI and size, prompt and duration.
``example_luma_assets_consumer.py`` runs whenever a video lands here. Airflow 2.11 calls them
Datasets; ``airflow.providers.common.compat`` gives the right class on each version.
"""

from __future__ import annotations

import os
import tempfile

import pendulum
from airflow.providers.common.compat.sdk import DAG, Asset, AssetAlias, Param

from airflow_provider_luma.operators.lineage import file_uri
from airflow_provider_luma.operators.luma import LumaDownloadVideoOperator, LumaGenerateVideoOperator

OUTPUT_DIR = os.environ.get("LUMA_DEMO_OUTPUT_DIR") or os.path.join(tempfile.gettempdir(), "luma-demo-output")
#: The folder the videos go to, as an Asset: what the consumer DAG is scheduled on.
LUMA_VIDEOS = Asset(file_uri(OUTPUT_DIR))
#: Each run adds the file it wrote (file:///<folder>/<generation id>.mp4) to this alias.
LUMA_VIDEO_FILES = AssetAlias("luma-videos")

with DAG(
    dag_id="luma_assets_producer",
    description="Generate a Luma video and publish the downloaded file as an Asset event.",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    params={"prompt": Param("Paper boats drifting down a rainy street, macro", type="string", maxLength=2048)},
    tags=["luma", "example", "assets"],
):
    # Waits in the triggerer; the result keeps a key-free request summary (prompt, model, duration)
    # that the download puts into the Asset event's extra.
    generate = LumaGenerateVideoOperator(
        task_id="generate", prompt="{{ params.prompt }}", model="ray-flash-2", resolution="540p", duration="5s"
    )

    LumaDownloadVideoOperator(
        task_id="download",
        generation=generate.output,
        destination=OUTPUT_DIR + "/",
        outlets=[LUMA_VIDEOS, LUMA_VIDEO_FILES],
    )
