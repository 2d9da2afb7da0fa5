"""OpenLineage facets of both operators, with the OpenLineage provider installed (the ``openlineage`` extra)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("airflow.providers.openlineage", reason="the OpenLineage provider is not installed")

from airflow.providers.common.compat.openlineage.facet import Dataset
from airflow.providers.openlineage.extractors.base import DefaultExtractor
from airflow.providers.openlineage.extractors.manager import ExtractorManager
from openlineage.client.serde import Serde

from airflow_provider_luma.operators.lineage import DEFAULT_API_NAMESPACE, RUN_FACET_NAME
from airflow_provider_luma.operators.luma import LumaDownloadVideoOperator, LumaGenerateVideoOperator
from airflow_provider_luma.testing import SAMPLE_VIDEO_PATH, LumaSimulator
from tests.support.tasks import FakeTaskInstance, completed_generation

SIGNED = "https://bucket.example/start.png?X-Amz-Signature=deadbeef-presigned"


def api_namespace(sim: LumaSimulator) -> str:
    return "aimlapi://" + sim.base_url.split("://", 1)[1].rstrip("/")


def lineage_of(operator: Any) -> Any:
    """What the OpenLineage listener gets for ``operator``: the extractor it picks, run on completion."""
    assert ExtractorManager().get_extractor_class(operator) is DefaultExtractor
    lineage = DefaultExtractor(operator).extract_on_complete(FakeTaskInstance())
    assert lineage is not None
    # Every facet serializes the way the listener sends it.
    json.dumps(Serde.to_dict(lineage.run_facets[RUN_FACET_NAME]))
    return lineage


def test_generate_image_to_video(luma_conn: LumaSimulator) -> None:
    operator = LumaGenerateVideoOperator(
        task_id="i2v",
        prompt="A fox turns its head",
        model="ray-flash-2",
        duration="5s",
        keyframes={"frame0": {"type": "image", "url": SIGNED}},
        deferrable=False,
    )
    result = operator.execute({"ti": FakeTaskInstance()})

    lineage = lineage_of(operator)

    # The keyframe image, without its signature; the generation in the connection's namespace.
    assert lineage.inputs == [Dataset(namespace="https://bucket.example", name="/start.png")]
    assert lineage.outputs == [Dataset(namespace=api_namespace(luma_conn), name=result["id"])]
    facet = Serde.to_dict(lineage.run_facets[RUN_FACET_NAME])
    assert facet["generations"] == [
        {
            "id": result["id"],
            "prompt": "A fox turns its head",
            "model": "ray-flash-2",
            "duration": "5s",
            "api": "luma-ai",
        }
    ]
    assert "X-Amz-Signature" not in json.dumps([Serde.to_dict(d) for d in lineage.inputs])


def test_generate_extend_has_the_source_generations_as_inputs(luma_conn: LumaSimulator) -> None:
    first, second = completed_generation(luma_conn, "one"), completed_generation(luma_conn, "two")
    operator = LumaGenerateVideoOperator(
        task_id="bridge", prompt="Seamless", keyframes={"frame0": first, "frame1": second}, wait_for_completion=False
    )
    result = operator.execute({"ti": FakeTaskInstance()})

    lineage = lineage_of(operator)

    namespace = api_namespace(luma_conn)
    assert lineage.inputs == [
        Dataset(namespace=namespace, name=first["id"]),
        Dataset(namespace=namespace, name=second["id"]),
    ]
    assert lineage.outputs == [Dataset(namespace=namespace, name=result["id"])]
    assert Serde.to_dict(lineage.run_facets[RUN_FACET_NAME])["generations"][0]["prompt"] == "Seamless"


def test_generate_ray_32_edit_names_its_source_video(luma_conn: LumaSimulator) -> None:
    source = completed_generation(luma_conn, "source")
    operator = LumaGenerateVideoOperator(
        task_id="edit",
        prompt="Make it winter",
        model="luma/ray-3.2",
        edit_type="video_edit",
        source_video_url=source,
        image_url=SIGNED,
        wait_for_completion=False,
    )
    operator.execute({"ti": FakeTaskInstance()})

    inputs = lineage_of(operator).inputs
    assert Dataset(namespace="https://bucket.example", name="/start.png") in inputs
    assert Dataset(namespace=api_namespace(luma_conn), name=source["id"]) in inputs


def test_download_outputs_the_file_named_by_openlineage_rules(luma_conn: LumaSimulator, tmp_path: Path) -> None:
    generation = {**completed_generation(luma_conn, "Paper boats"), "request_summary": {"prompt": "Paper boats"}}
    operator = LumaDownloadVideoOperator(task_id="download", generation=generation, destination=f"{tmp_path}/")
    path = operator.execute({"ti": FakeTaskInstance()})

    lineage = lineage_of(operator)

    assert lineage.inputs == [Dataset(namespace=api_namespace(luma_conn), name=generation["id"])]
    (output,) = lineage.outputs
    assert (output.namespace, output.name) == ("file", path)
    assert output.outputFacets["outputStatistics"].size == SAMPLE_VIDEO_PATH.stat().st_size
    assert output.outputFacets["outputStatistics"].fileCount == 1
    (entry,) = Serde.to_dict(lineage.run_facets[RUN_FACET_NAME])["generations"]
    assert entry == {
        "id": generation["id"],
        "prompt": "Paper boats",
        "model": "ray-2",
        "api": "luma-ai",
        "uri": f"file://{path}",
    }


def test_download_to_object_storage(luma_conn: LumaSimulator, tmp_path: Path) -> None:
    generation = completed_generation(luma_conn)
    operator = LumaDownloadVideoOperator(task_id="download", generation=generation, destination=f"file://{tmp_path}/s/")
    operator.execute({"ti": FakeTaskInstance()})
    (output,) = lineage_of(operator).outputs
    assert (output.namespace, output.name) == ("file", f"{tmp_path}/s/{generation['id']}.mp4")


def test_unreadable_connection_falls_back_to_the_service_namespace(tmp_path: Path) -> None:
    # No luma_default connection at all: a dict needs none to download, and lineage must not fail.
    generation = {"id": "g-1", "state": "completed", "video_url": "https://cdn.example/g-1.mp4"}
    operator = LumaDownloadVideoOperator(task_id="download", generation=generation, destination=f"{tmp_path}/")
    operator._written = []
    assert operator.get_openlineage_facets_on_complete(FakeTaskInstance()).inputs == []
    from airflow_provider_luma.operators.download import api_namespace

    assert api_namespace(operator.hook) == DEFAULT_API_NAMESPACE
