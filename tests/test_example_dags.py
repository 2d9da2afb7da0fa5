"""The example DAGs import cleanly and run end to end (dag.test()) against the simulator."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_luma.testing import SAMPLE_VIDEO_PATH, LumaSimulator
from tests.support.dag_runner import activate_declared_assets
from tests.support.links import web_links

EXAMPLE_DAGS = Path(__file__).parents[1] / "example_dags"
SAMPLE = SAMPLE_VIDEO_PATH.read_bytes()


def dagbag(folder: Path) -> Any:
    try:
        from airflow.dag_processing.dagbag import DagBag  # Airflow 3
    except ImportError:
        from airflow.models.dagbag import DagBag  # Airflow 2
    return DagBag(dag_folder=str(folder))


def example_files() -> list[Path]:
    return sorted(EXAMPLE_DAGS.glob("example_*.py"))


def test_every_example_dag_imports_without_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No connection and an unreachable host: parsing must not call anything.
    monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", json.dumps({"conn_type": "luma", "host": "http://127.0.0.1:9"}))
    for file in example_files():
        shutil.copy(file, tmp_path / file.name)
    bag = dagbag(tmp_path)

    assert bag.import_errors == {}
    assert set(bag.dag_ids) == {
        "luma_text_to_video",
        "luma_fan_out",
        "luma_extend",
        "luma_universal",
        "luma_assets_producer",
        "luma_assets_consumer",
    }


def run_example(file_name: str, dag_id: str, output_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Copy the example into the DAGs folder (Airflow 3 runs only DAGs it can sync), load it, run it."""
    monkeypatch.setenv("LUMA_DEMO_OUTPUT_DIR", str(output_dir))
    dags_folder = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    for stale in dags_folder.glob("example_*.py"):
        stale.unlink()
    shutil.copy(EXAMPLE_DAGS / file_name, dags_folder / file_name)
    bag = dagbag(dags_folder)
    assert bag.import_errors == {}
    dag_run = bag.get_dag(dag_id).test()
    assert dag_run is not None
    return dag_run


def xcom_values(airflow_home: Path, dag_id: str, run_id: str) -> dict[tuple[str, int, str], Any]:
    """Every XCom of a run, read from the metadata DB: (task_id, map_index, key) -> value."""
    with sqlite3.connect(airflow_home / "airflow.db") as db:
        rows = db.execute(
            "SELECT task_id, map_index, key, value FROM xcom WHERE dag_id = ? AND run_id = ?", (dag_id, run_id)
        ).fetchall()
    result = {}
    for task_id, map_index, key, value in rows:
        text = value.decode() if isinstance(value, bytes) else value
        result[(task_id, map_index, key)] = json.loads(text)
        # Airflow 3 may store a JSON string holding the JSON value.
        if isinstance(result[(task_id, map_index, key)], str) and text.startswith('"{'):
            result[(task_id, map_index, key)] = json.loads(result[(task_id, map_index, key)])
    return result


def assert_success(dag_run: Any) -> None:
    states = {
        ti.task_id + (f"[{ti.map_index}]" if ti.map_index >= 0 else ""): ti.state for ti in dag_run.get_task_instances()
    }
    assert str(dag_run.state).endswith("success"), states
    assert all(str(state).endswith("success") for state in states.values()), states


def videos(folder: Path) -> list[Path]:
    files = sorted(folder.glob("*.mp4"))
    assert all(file.read_bytes() == SAMPLE for file in files)
    assert not [p for p in folder.iterdir() if ".part-" in p.name]
    return files


def test_text_to_video(airflow_db, luma_conn: LumaSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dag_run = run_example("example_luma_text_to_video.py", "luma_text_to_video", tmp_path, monkeypatch)
    assert_success(dag_run)

    (generation,) = luma_conn.generations()
    assert [file.name for file in videos(tmp_path)] == [f"{generation['id']}.mp4"]
    assert generation["request"]["prompt"].startswith("A red fox")
    assert all(entry["authorization"] is None for entry in luma_conn.requests("video"))

    xcom = xcom_values(airflow_db, "luma_text_to_video", dag_run.run_id)
    assert xcom[("generate", -1, "generation_id")] == generation["id"]
    assert xcom[("download", -1, "return_value")] == str(tmp_path / f"{generation['id']}.mp4")

    # Every task links to the video: the generate task too, though it ended before the video existed
    # (its link reads what the sensor stored; on Airflow 3 through the provider's plugin).
    video = generation["assets"]["video"]
    for task_id in ("generate", "wait_for_video", "download"):
        assert web_links(dag_run, task_id) == {"Luma video": video}, task_id
    # The download names the file each link's video went to.
    path = str(tmp_path / f"{generation['id']}.mp4")
    assert xcom[("download", -1, "luma_videos")] == [
        {"generation_id": generation["id"], "video_url": video, "path": path}
    ]


def test_fan_out(airflow_db, luma_conn: LumaSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dag_run = run_example("example_luma_fan_out.py", "luma_fan_out", tmp_path, monkeypatch)
    assert_success(dag_run)

    generations = luma_conn.generations()
    assert len(generations) == 3
    assert sorted(file.name for file in videos(tmp_path)) == sorted(f"{g['id']}.mp4" for g in generations)
    # One sensor waited for all three through the multi-fetch endpoint.
    assert any(len(entry["query"].get("generation_ids[]", [])) == 3 for entry in luma_conn.requests("list"))

    # Links: each mapped generate task its own video; the sensor and the download one per generation,
    # in order (the number of links is fixed at parse time: 10 for a mapped task's output, the rest empty).
    by_id = {g["id"]: g["assets"]["video"] for g in generations}
    xcom = xcom_values(airflow_db, "luma_fan_out", dag_run.run_id)
    ordered = [by_id[xcom[("generate", i, "generation_id")]] for i in range(3)]
    for i in range(3):
        assert web_links(dag_run, "generate", map_index=i) == {"Luma video": ordered[i]}
    expected = {"Luma video": ordered[0], **{f"Luma video {n}": None for n in range(2, 11)}}
    expected.update({"Luma video 2": ordered[1], "Luma video 3": ordered[2]})
    assert web_links(dag_run, "wait_for_videos") == expected
    assert web_links(dag_run, "download") == expected


def test_extend(airflow_db, luma_conn: LumaSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dag_run = run_example("example_luma_extend.py", "luma_extend", tmp_path, monkeypatch)
    assert_success(dag_run)

    first, extension = luma_conn.generations()
    assert extension["request"]["keyframes"] == {"frame0": {"type": "generation", "id": first["id"]}}
    assert sorted(file.name for file in videos(tmp_path)) == sorted(f"{g['id']}.mp4" for g in (first, extension))

    # The "Luma video" link of each generate task, which waited itself.
    assert web_links(dag_run, "generate") == {"Luma video": first["assets"]["video"]}
    assert web_links(dag_run, "extend") == {"Luma video": extension["assets"]["video"]}


def test_universal(airflow_db, luma_conn: LumaSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dag_run = run_example("example_luma_universal.py", "luma_universal", tmp_path, monkeypatch)
    assert_success(dag_run)

    first, edit = luma_conn.generations()
    assert first["id"].endswith(":luma/ray-2")
    assert edit["id"].endswith(":luma/ray-3.2")
    (edit_create,) = [r for r in luma_conn.requests("video_create") if r["json"]["model"] == "luma/ray-3.2"]
    assert edit_create["json"]["type"] == "video_edit"
    assert edit_create["json"]["video_url"] == first["video"]["url"]
    # Every wait and fetch went to the universal endpoint; the luma-ai endpoints were never asked.
    assert luma_conn.count("create") == luma_conn.count("get") == luma_conn.count("list") == 0
    assert len(videos_below(tmp_path)) == 2

    xcom = xcom_values(airflow_db, "luma_universal", dag_run.run_id)
    assert xcom[("wait", -1, "return_value")]["api"] == "video"
    assert xcom[("edit", -1, "return_value")]["usage"]["credits_used"] > 0


def videos_below(folder: Path) -> list[Path]:
    files = sorted(folder.rglob("*.mp4"))
    assert all(file.read_bytes() == SAMPLE for file in files)
    return files


def test_assets_pair(airflow_db, luma_conn: LumaSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The consumer's manual run (no triggering events) does nothing and succeeds.
    assert_success(run_example("example_luma_assets_consumer.py", "luma_assets_consumer", tmp_path, monkeypatch))
    # The producer's download records the Asset events (more in tests/operators/test_assets.py, and in
    # tests/deployment/test_assets_deployment.py, where the event triggers the consumer).
    dags_folder = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    shutil.copy(EXAMPLE_DAGS / "example_luma_assets_producer.py", dags_folder)
    producer = dagbag(dags_folder).get_dag("luma_assets_producer")
    if hasattr(producer, "sync_to_db"):  # Airflow 2: dag.test() does not store the DAG's alias
        producer.sync_to_db()
    activate_declared_assets(producer, airflow_db)
    dag_run = producer.test()
    assert_success(dag_run)
    (generation,) = luma_conn.generations()
    assert [file.name for file in videos(tmp_path)] == [f"{generation['id']}.mp4"]
    xcom = xcom_values(airflow_db, "luma_assets_producer", dag_run.run_id)
    assert xcom[("generate", -1, "return_value")]["request_summary"]["prompt"].startswith("Paper boats")
