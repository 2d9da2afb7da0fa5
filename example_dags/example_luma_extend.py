"""
Extend a video with Luma: generate a clip, continue it with a second prompt, download both.

The extension uses the first generation as its start keyframe (``frame0``); giving the generate
task's output in place of ``{"type": "generation", "id": ...}`` is enough. Put it at ``frame1``
instead to extend backwards, or give two generations to interpolate between them.
"""

from __future__ import annotations

import os
import tempfile

import pendulum
from airflow.providers.common.compat.sdk import DAG, Param

from airflow_provider_luma.operators.luma import LumaDownloadVideoOperator, LumaGenerateVideoOperator

OUTPUT_DIR = os.environ.get("LUMA_DEMO_OUTPUT_DIR") or os.path.join(tempfile.gettempdir(), "luma-demo-output")

with DAG(
    dag_id="luma_extend",
    description="Generate a Luma video, extend it with a second prompt and download both clips.",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    params={
        "prompt": Param("A lighthouse on a cliff at dusk, waves crashing", type="string", maxLength=2048),
        "extension_prompt": Param("The lighthouse beam sweeps over a passing ship", type="string", maxLength=2048),
        "output_dir": Param(OUTPUT_DIR, type="string"),
    },
    tags=["luma", "example"],
):
    # Both tasks wait for completion in the triggerer (the default): only a completed generation
    # can be extended.
    generate = LumaGenerateVideoOperator(
        task_id="generate", prompt="{{ params.prompt }}", aspect_ratio="16:9", model="ray-flash-2", resolution="540p"
    )

    extend = LumaGenerateVideoOperator(
        task_id="extend",
        prompt="{{ params.extension_prompt }}",
        keyframes={"frame0": generate.output},
        model="ray-flash-2",
        resolution="540p",
    )

    download = LumaDownloadVideoOperator(
        task_id="download", generation=[generate.output, extend.output], destination="{{ params.output_dir }}/"
    )
