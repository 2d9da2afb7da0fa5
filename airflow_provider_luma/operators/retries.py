"""
How a generate task never pays twice: the record a try keeps of its generation (Airflow 3.3+'s task
state store) and the message of a task failed without retries once its generation exists.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from airflow.providers.common.compat.sdk import Context

from airflow_provider_luma.create_requests import CreateRequest
from airflow_provider_luma.operators.links import GENERATION_ID_XCOM_KEY

#: Task state key (Airflow 3.3+ ``task_state_store``) of the generation a try submitted, for the next try.
REUSE_STATE_KEY = "luma_generation"


def request_fingerprint(luma_conn_id: str, request: CreateRequest | Mapping[str, Any]) -> str:
    """A digest of everything that makes a generation request: the connection, the endpoint and the body."""
    described = request.to_dict() if isinstance(request, CreateRequest) else {"body": dict(request)}
    canonical = json.dumps({"conn": luma_conn_id, **described}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def not_retrying(reason: str, generation_id: str | None, why: str) -> str:
    """The message of a task failed without retries once its generation exists: what happened, and what to do."""
    if generation_id is None:
        return (
            f"{reason} Not retrying automatically: {why}. The generation's id is in this task's XCom "
            f"({GENERATION_ID_XCOM_KEY!r}) and log; LumaGenerationSensor can wait for it."
        )
    return (
        f"{reason} Not retrying automatically: Luma generation {generation_id} exists and {why}. To wait for "
        f"it, use LumaGenerationSensor(generation_id={generation_id!r}); clear this task to submit a new one."
    )


def pushed_generation_id(context: Context) -> str | None:
    """The generation id this try pushed to XCom (kept across a deferral), or ``None``."""
    try:
        ti: Any = context["ti"]
        map_index = getattr(ti, "map_index", None)
        if isinstance(map_index, int) and map_index >= 0:
            # A mapped task's own index: Airflow 2.11 would otherwise return every index's value.
            value = ti.xcom_pull(task_ids=ti.task_id, key=GENERATION_ID_XCOM_KEY, map_indexes=map_index)
        else:
            value = ti.xcom_pull(task_ids=ti.task_id, key=GENERATION_ID_XCOM_KEY)
    except Exception:
        return None  # only a message depends on it: never fail the failure
    return value if isinstance(value, str) and value else None


def forget_generation(context: Context) -> None:
    """Drop the record of this task instance's generation (it succeeded: a cleared task submits anew)."""
    store = context.get("task_state_store")
    if store is not None:
        store.delete(REUSE_STATE_KEY)
