"""
The same DAG on either backend: the AI/ML API or Luma's own Dream Machine API, by connection alone.

Which API the tasks reach is the connection's business (its ``backend`` extra, or its host:
``https://api.lumalabs.ai`` is Luma's): ``luma/ray-flash-2`` and ``duration=5`` are sent as they are
to the AI/ML API's universal endpoint, and as ``ray-flash-2`` and ``"5s"`` to Luma's. Both answer at
once, so the deferrable sensor polls every ``poll_interval`` seconds (the connection's extra, 10 s by
default) in the triggerer. Run it with the ``luma_conn_id`` param naming either connection, e.g.
``luma_default`` (an AI/ML API key) or ``luma_lumalabs`` (host ``https://api.lumalabs.ai``, a Luma key).
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
    dag_id="luma_either_backend",
    description="Generate, wait and download on the AI/ML API or on Luma's own API, chosen by the connection.",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    params={
        "prompt": Param("A paper lantern drifting over a night river, soft bokeh", type="string", maxLength=2048),
        "luma_conn_id": Param("luma_default", type="string"),
        "output_dir": Param(OUTPUT_DIR, type="string"),
    },
    tags=["luma", "example"],
):
    generate = LumaGenerateVideoOperator(
        task_id="generate",
        prompt="{{ params.prompt }}",
        model="luma/ray-flash-2",
        duration=5,
        aspect_ratio="16:9",
        luma_conn_id="{{ params.luma_conn_id }}",
        wait_for_completion=False,
    )

    # The generation dict says which backend's family it lives in; the sensor waits in the triggerer.
    wait = LumaGenerationSensor(
        task_id="wait", generation_id=generate.output, luma_conn_id="{{ params.luma_conn_id }}", timeout=60 * 60
    )

    download = LumaDownloadVideoOperator(
        task_id="download",
        generation=wait.output,
        destination="{{ params.output_dir }}/",
        luma_conn_id="{{ params.luma_conn_id }}",
    )
