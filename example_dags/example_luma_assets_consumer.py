"""
Videos as Assets, the consumer: runs whenever ``luma_assets_producer`` downloads a video.

Scheduled on the producer's destination folder (an Asset; a Dataset on Airflow 2.11), it reads the
videos from the triggering events' extra with :func:`~airflow_provider_luma.operators.lineage.triggering_videos`
(``triggering_asset_events`` on Airflow 3, ``triggering_dataset_events`` on 2.11) and returns them.
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any

import pendulum
from airflow.providers.common.compat.sdk import DAG, Asset, task

from airflow_provider_luma.operators.lineage import file_uri, triggering_videos

OUTPUT_DIR = os.environ.get("LUMA_DEMO_OUTPUT_DIR") or os.path.join(tempfile.gettempdir(), "luma-demo-output")
#: The producer's destination folder (example_luma_assets_producer.py).
LUMA_VIDEOS = Asset(file_uri(OUTPUT_DIR))

log = logging.getLogger(__name__)

with DAG(
    dag_id="luma_assets_consumer",
    description="Runs on each Luma video the producer downloads; reads it from the Asset event's extra.",
    schedule=[LUMA_VIDEOS],
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["luma", "example", "assets"],
):

    @task
    def describe_videos(**context: Any) -> list[dict[str, Any]]:
        """Log each new video (generation id, model, file, size, prompt) and return them for the next task."""
        videos = triggering_videos(context)
        if not videos:
            log.info("Not triggered by a Luma video (a manual run?): nothing to do.")
        for video in videos:
            log.info(
                "Luma generation %s (%s): %s, %s bytes, prompt %r",
                video["generation_id"],
                video.get("model"),
                video["uri"],
                video.get("size"),
                video.get("prompt"),
            )
        return videos

    describe_videos()
