"""Videos as Assets: the download's outlet events, their extra, and a consumer queued by them (Airflow 2.11 and 3)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import Asset, AssetAlias, ObjectStoragePath

from airflow_provider_luma.operators.lineage import (
    REQUEST_SUMMARY_KEY,
    file_uri,
    request_summary,
    triggering_videos,
    url_dataset_name,
)
from airflow_provider_luma.operators.luma import LumaDownloadVideoOperator, LumaGenerateVideoOperator
from airflow_provider_luma.testing import SAMPLE_VIDEO_PATH, LumaSimulator
from tests.support.dag_runner import activate_declared_assets, load_dag
from tests.support.tasks import FakeTaskInstance, completed_generation

EXAMPLE_DAGS = Path(__file__).parents[2] / "example_dags"
SAMPLE_SIZE = SAMPLE_VIDEO_PATH.stat().st_size
SIGNED = "https://bucket.example/start.png?X-Amz-Signature=deadbeef-presigned"


def outlet_events() -> Any:
    """Airflow's own accessor of outlet events, as the task context holds it (``context["outlet_events"]``)."""
    try:
        from airflow.sdk.execution_time.context import OutletEventAccessors  # Airflow 3
    except ImportError:
        from airflow.utils.context import OutletEventAccessors  # Airflow 2
    return OutletEventAccessors()


def alias_events(events: Any, alias: Any) -> list[tuple[str, dict[str, Any]]]:
    """``(asset uri, extra)`` of each event added to ``alias`` (Airflow 3: asset keys; 2.11: dataset URIs)."""
    out = []
    for event in events[alias].asset_alias_events if hasattr(events[alias], "asset_alias_events") else []:
        out.append((event.dest_asset_key.uri, event.extra))
    for event in getattr(events[alias], "dataset_alias_events", []):  # Airflow 2: dicts
        out.append((event["dest_dataset_uri"], event["extra"]))
    return out


# ---------------------------------------------------------------- the request summary


def test_generate_result_keeps_a_key_free_request_summary(luma_conn: LumaSimulator) -> None:
    operator = LumaGenerateVideoOperator(
        task_id="i2v",
        prompt="A fox turns its head",
        model="ray-flash-2",
        duration="5s",
        resolution="540p",
        keyframes={"frame0": {"type": "image", "url": SIGNED}},
        callback_url="https://example.com/hook?token=secret-token",
        wait_for_completion=False,
    )
    result = operator.execute({"ti": FakeTaskInstance()})

    assert result[REQUEST_SUMMARY_KEY] == {
        "prompt": "A fox turns its head",
        "model": "ray-flash-2",
        "duration": "5s",
        "resolution": "540p",
    }
    assert "request" not in result  # the API's echo stays out, as before
    stored = json.dumps(result)
    assert "X-Amz-Signature" not in stored
    assert "secret-token" not in stored


def test_request_summary_leaves_out_every_url() -> None:
    operator = LumaGenerateVideoOperator(
        task_id="edit",
        prompt="Make it winter",
        model="luma/ray-3.2",
        edit_type="video_edit",
        image_url=SIGNED,
        source_video_url="https://cdn.example/v.mp4?sig=1",
    )
    assert request_summary(operator._create_request()) == {"prompt": "Make it winter", "model": "luma/ray-3.2"}


# ---------------------------------------------------------------- outlet events


def test_download_attaches_the_video_to_its_asset_and_alias(luma_conn: LumaSimulator, tmp_path: Path) -> None:
    folder, alias = Asset(file_uri(tmp_path)), AssetAlias("luma-videos")
    generate = LumaGenerateVideoOperator(task_id="generate", prompt="Paper boats", model="ray-flash-2", duration="5s")
    summary = request_summary(generate._create_request())
    generation = {**completed_generation(luma_conn, "Paper boats"), REQUEST_SUMMARY_KEY: summary}
    events = outlet_events()
    operator = LumaDownloadVideoOperator(
        task_id="download", generation=generation, destination=f"{tmp_path}/", outlets=[folder, alias]
    )

    path = operator.execute({"ti": FakeTaskInstance(), "outlet_events": events})

    expected = {
        "generation_id": generation["id"],
        "model": "ray-2",  # what the API says made the video wins over what the summary asked for
        "uri": f"file://{tmp_path}/{generation['id']}.mp4",
        "path": path,
        "size": SAMPLE_SIZE,
        "prompt": "Paper boats",
        "duration": "5s",
    }
    assert Path(path).stat().st_size == SAMPLE_SIZE
    assert events[folder].extra == {**expected, "videos": [expected]}
    assert alias_events(events, alias) == [(expected["uri"], expected)]


def test_several_videos_one_folder_event_and_one_alias_event_each(luma_conn: LumaSimulator, tmp_path: Path) -> None:
    folder, alias = Asset(file_uri(tmp_path)), AssetAlias("luma-videos")
    first, second = completed_generation(luma_conn, "one"), completed_generation(luma_conn, "two")
    events = outlet_events()
    operator = LumaDownloadVideoOperator(
        task_id="download", generation=[first, second["id"]], destination=tmp_path, outlets=[folder, alias]
    )

    operator.execute({"ti": FakeTaskInstance(), "outlet_events": events})

    extra = events[folder].extra
    assert "generation_id" not in extra  # several videos: only the list
    assert [video["generation_id"] for video in extra["videos"]] == [first["id"], second["id"]]
    # Fetched by id, the prompt comes from the API's answer; the summary never carries a URL.
    assert extra["videos"][1]["prompt"] == "two"
    assert [uri for uri, _ in alias_events(events, alias)] == [video["uri"] for video in extra["videos"]]


def test_no_outlets_or_no_outlet_events_is_fine(luma_conn: LumaSimulator, tmp_path: Path) -> None:
    generation = completed_generation(luma_conn)
    operator = LumaDownloadVideoOperator(task_id="download", generation=generation, destination=f"{tmp_path}/")
    assert operator.execute({"ti": FakeTaskInstance()}) == str(tmp_path / f"{generation['id']}.mp4")
    events = outlet_events()
    operator.execute({"ti": FakeTaskInstance(), "outlet_events": events})
    assert not list(getattr(events, "_dict", {}).values())


def test_object_storage_uri_has_no_connection_id(luma_conn: LumaSimulator, tmp_path: Path) -> None:
    generation = completed_generation(luma_conn)
    alias = AssetAlias("luma-videos")
    events = outlet_events()
    operator = LumaDownloadVideoOperator(
        task_id="download", generation=generation, destination=f"file://{tmp_path}/store/", outlets=[alias]
    )
    operator.execute({"ti": FakeTaskInstance(), "outlet_events": events})
    ((uri, extra),) = alias_events(events, alias)
    assert uri == f"file://{tmp_path}/store/{generation['id']}.mp4"
    assert extra["size"] == SAMPLE_SIZE
    assert file_uri(ObjectStoragePath("s3://aws_default@bucket/videos/a b.mp4")) == "s3://bucket/videos/a%20b.mp4"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("file:///data/videos/x.mp4", ("file", "/data/videos/x.mp4")),
        ("file://host/data/x.mp4", ("file://host", "/data/x.mp4")),
        ("s3://bucket/videos/x.mp4", ("s3://bucket", "videos/x.mp4")),
        ("gs://bucket/x.mp4", ("gs://bucket", "x.mp4")),
        (SIGNED, ("https://bucket.example", "/start.png")),
        ("https://user:pw@cdn.example:8443/a.jpg#frag", ("https://cdn.example:8443", "/a.jpg")),
        ("not a url", None),
    ],
)
def test_openlineage_names_of_locations(url: str, expected: Any) -> None:
    assert url_dataset_name(url) == expected


def test_triggering_videos_reads_both_event_shapes() -> None:
    class Event:
        def __init__(self, extra: dict[str, Any]) -> None:
            self.extra = extra

    one = {"generation_id": "g1", "uri": "file:///v/g1.mp4"}
    two = {"generation_id": "g2", "uri": "file:///v/g2.mp4"}
    events = {
        "file:///v": [Event({**one, "videos": [one]}), Event({"videos": [one, two]})],
        "file:///v/g2.mp4": [Event(two)],
        "other": [Event({"rows": 3})],
    }
    assert triggering_videos({"triggering_dataset_events": events}) == [one, two]
    assert triggering_videos({"triggering_asset_events": events}) == [one, two]
    assert triggering_videos({}) == []


# ---------------------------------------------------------------- a real run: the event and the consumer's queue row


def asset_tables() -> tuple[str, str, str]:
    """(event table, asset table, consumer queue table) of this Airflow's metadata DB."""
    from importlib.metadata import version

    if int(version("apache-airflow").split(".")[0]) >= 3:
        return "asset_event", "asset", "asset_dag_run_queue"
    return "dataset_event", "dataset", "dataset_dag_run_queue"


def test_producer_run_records_the_event_and_queues_the_consumer(
    airflow_db: Path, luma_conn: LumaSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dag.test() of the producer: the Asset (2.11: Dataset) event's extra, and the consumer's queue row."""
    output = tmp_path / "videos"
    monkeypatch.setenv("LUMA_DEMO_OUTPUT_DIR", str(output))
    dags_folder = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    for stale in dags_folder.glob("example_*.py"):
        stale.unlink()
    for name in ("example_luma_assets_producer.py", "example_luma_assets_consumer.py"):
        shutil.copy(EXAMPLE_DAGS / name, dags_folder / name)
    producer = load_dag(dags_folder / "example_luma_assets_producer.py", "luma_assets_producer")
    consumer = load_dag(dags_folder / "example_luma_assets_consumer.py", "luma_assets_consumer")
    if hasattr(consumer, "sync_to_db"):  # Airflow 2: dag.test() stores neither the schedule nor the alias
        consumer.sync_to_db()
        producer.sync_to_db()
    # A manual run of the consumer (no events: it does nothing); on Airflow 3 it stores the DAG's schedule.
    consumer_run = consumer.test()
    assert str(consumer_run.state).endswith("success")
    activate_declared_assets(consumer, airflow_db)  # Airflow 3.0: store the consumer's Asset schedule
    with sqlite3.connect(airflow_db / "airflow.db") as db:  # DAGs start paused; a paused consumer is not queued
        db.execute("UPDATE dag SET is_paused = 0 WHERE dag_id = 'luma_assets_consumer'")
    activate_declared_assets(producer, airflow_db)
    producer_run = producer.test()
    assert str(producer_run.state).endswith("success")

    (generation,) = luma_conn.generations()
    video = output / f"{generation['id']}.mp4"
    assert video.stat().st_size == SAMPLE_SIZE
    events_table, assets_table, queue_table = asset_tables()
    asset_id = "asset_id" if events_table == "asset_event" else "dataset_id"
    with sqlite3.connect(airflow_db / "airflow.db") as db:
        rows = db.execute(
            f"SELECT a.uri, e.extra FROM {events_table} e JOIN {assets_table} a ON a.id = e.{asset_id} "
            "WHERE e.source_dag_id = 'luma_assets_producer' AND e.source_run_id = ?",
            (producer_run.run_id,),
        ).fetchall()
        queued = db.execute(
            f"SELECT a.uri FROM {queue_table} q JOIN {assets_table} a ON a.id = q.{asset_id} "
            "WHERE q.target_dag_id = 'luma_assets_consumer'"
        ).fetchall()
    extras = {uri: json.loads(extra) for uri, extra in rows}
    folder_uri, file = file_uri(output), f"file://{video}"
    assert set(extras) == {folder_uri, file}, extras
    assert extras[folder_uri]["generation_id"] == generation["id"]
    assert extras[folder_uri]["videos"] == [extras[file]]
    assert extras[file] == {
        "generation_id": generation["id"],
        "model": "ray-flash-2",
        "uri": file,
        "path": str(video),
        "size": SAMPLE_SIZE,
        "prompt": "Paper boats drifting down a rainy street, macro",
        "duration": "5s",
    }
    # The consumer is queued to run on the folder's event.
    assert queued == [(folder_uri,)]
