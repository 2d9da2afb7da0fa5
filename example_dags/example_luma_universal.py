"""
Luma's current models on the service's universal video endpoint: Ray 2, then Ray 3.2 editing its result.

``luma/ray-2`` generates a clip (waited for by a deferrable sensor that polls every ``poke_interval``
seconds, since this endpoint holds no request); ``luma/ray-3.2`` then edits that clip
(``edit_type="video_edit"`` with the first generation as ``source_video_url``) and waits for itself in
the triggerer. Both videos are downloaded. Needs a ``luma_default`` connection (the API key as password).
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
    dag_id="luma_universal",
    description="Ray 2 and Ray 3.2 on the universal video endpoint: generate, edit, download.",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    params={
        "prompt": Param("A lighthouse on a cliff at dusk, waves crashing, cinematic", type="string", maxLength=2048),
        "edit": Param("The same scene in a snowstorm", type="string", maxLength=2048),
        "output_dir": Param(OUTPUT_DIR, type="string"),
    },
    tags=["luma", "example"],
):
    # luma/ray-2 selects the universal endpoint; duration is whole seconds there ("5s" works too).
    generate = LumaGenerateVideoOperator(
        task_id="generate",
        prompt="{{ params.prompt }}",
        model="luma/ray-2",
        aspect_ratio="16:9",
        resolution="540p",
        duration=5,
        wait_for_completion=False,
    )

    # The generation dict says which endpoint it lives on: no api= needed. The service's own examples
    # poll every 10 s; poke_interval paces this sensor's polls in the triggerer.
    wait = LumaGenerationSensor(task_id="wait", generation_id=generate.output, poke_interval=10, timeout=60 * 60)

    # Ray 3.2 edits the finished clip: source_video_url is sent as the API's video_url, edit_type as its type.
    edit = LumaGenerateVideoOperator(
        task_id="edit",
        prompt="{{ params.edit }}",
        model="luma/ray-3.2",
        edit_type="video_edit",
        source_video_url=wait.output,
        resolution="720p",
    )

    download = LumaDownloadVideoOperator(
        task_id="download", generation=[wait.output, edit.output], destination="{{ params.output_dir }}/"
    )
