"""Parse-time errors name the DAG's task, on every operator and the sensor, and reach the DAG's import error."""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_luma.errors import LumaInputError
from airflow_provider_luma.operators.luma import LumaDownloadVideoOperator, LumaGenerateVideoOperator
from airflow_provider_luma.sensors.luma import LumaGenerationSensor

#: (operator, keyword arguments, what the check says): every parameter refused at construction.
REFUSED: list[tuple[type, dict[str, Any], str]] = [
    (LumaGenerateVideoOperator, {"prompt": "x", "aspect_ratio": "16:10"}, "aspect_ratio='16:10' is not supported"),
    (LumaGenerateVideoOperator, {"prompt": "x", "model": "ray-9"}, "model='ray-9' is not supported"),
    (LumaGenerateVideoOperator, {"prompt": "x", "model": "ray-2", "hdr": True}, "is not a parameter of model"),
    (LumaGenerateVideoOperator, {"prompt": "x" * 2049}, "2048"),
    (LumaGenerateVideoOperator, {"prompt": "x", "wait_timeout": -1}, "wait_timeout must be positive"),
    (
        LumaGenerateVideoOperator,
        {"prompt": "x", "keyframes": {"frame0": {"id": "g", "state": "dreaming"}}},
        "only a completed generation",
    ),
    (LumaGenerationSensor, {}, "give exactly one of generation_id or generation_ids"),
    (LumaGenerationSensor, {"generation_id": "a", "target_state": "failed"}, "failed"),
    (LumaGenerationSensor, {"generation_id": "a", "api": "nope"}, "nope"),
    (LumaGenerationSensor, {"generation_id": "a,b"}, "generation_id must be one id"),
    (LumaGenerationSensor, {"generation_ids": "a,,b"}, "empty generation id"),
    (LumaDownloadVideoOperator, {"generation": {"id": "g"}, "destination": " "}, "give a destination"),
    (LumaDownloadVideoOperator, {"generation": [], "destination": "/tmp/v/"}, "empty list"),
    (LumaDownloadVideoOperator, {"generation": 42, "destination": "/tmp/v/"}, "expected a generation dict"),
]


@pytest.mark.parametrize(("operator", "kwargs", "check"), REFUSED, ids=lambda v: getattr(v, "__name__", None))
def test_a_refused_parameter_names_the_task(operator: type, kwargs: dict[str, Any], check: str) -> None:
    with pytest.raises(LumaInputError) as refused:
        operator(task_id="my_task", **kwargs)
    message = str(refused.value)
    assert message.startswith("task 'my_task': "), message
    assert check in message
    assert message.count("my_task") == 1  # named once, not twice
    assert refused.value.message == message


def test_a_task_in_a_group_is_named_with_its_group() -> None:
    import pendulum
    from airflow.providers.common.compat.sdk import DAG, TaskGroup

    refused = pytest.raises(LumaInputError, match=r"^task 'videos\.generate': aspect_ratio=")
    with DAG("d", schedule=None, start_date=pendulum.datetime(2025, 1, 1)), TaskGroup("videos"), refused:
        LumaGenerateVideoOperator(task_id="generate", prompt="x", aspect_ratio="16:10")


def test_the_dag_files_import_error_names_the_task(tmp_path: Path) -> None:
    """What ``airflow dags list-import-errors`` and the UI's import errors show for such a file."""
    try:
        from airflow.dag_processing.dagbag import DagBag  # Airflow 3
    except ImportError:
        from airflow.models.dagbag import DagBag  # Airflow 2
    (tmp_path / "broken_luma_dag.py").write_text(
        textwrap.dedent(
            """
            import pendulum
            from airflow.providers.common.compat.sdk import DAG
            from airflow_provider_luma.operators.luma import LumaGenerateVideoOperator

            with DAG("broken_luma_dag", schedule=None, start_date=pendulum.datetime(2025, 1, 1)):
                LumaGenerateVideoOperator(task_id="generate", prompt="a fox", aspect_ratio="16:10")
            """
        )
    )
    bag = DagBag(dag_folder=str(tmp_path))
    (error,) = bag.import_errors.values()
    assert re.search(r"LumaInputError: task 'generate': aspect_ratio='16:10' is not supported", error), error
    assert "broken_luma_dag" not in bag.dag_ids
    assert os.path.basename(next(iter(bag.import_errors))) == "broken_luma_dag.py"
