"""
What Airflow itself does to a trigger event and an XCom value before storing them, so that a test can
prove the provider hands over only what survives it.

Airflow 3 (read in the installed source, 3.3.2):

- a trigger event leaves the trigger runner as msgpack: ``TriggerRunner.sync_state_to_supervisor``
  (``airflow/jobs/triggerer_job_runner.py``) sends ``messages.TriggerStateChanges`` through
  ``CommsDecoder.asend``, which frames ``msg.model_dump()`` in a ``_RequestFrame`` encoded by
  ``airflow/sdk/execution_time/comms.py``'s msgspec encoder (``_new_encoder``); only a
  ``NotImplementedError`` of it is survived, anything else ends the trigger runner;
- the supervisor then stores ``serialize({"event": payload})`` (``airflow/sdk/serde``,
  ``models/trigger.py`` ``handle_event_submit``) in ``task_instance.next_kwargs``, a JSON column
  (JSONB on PostgreSQL, which refuses ``\\u0000``); 3.0.6 frames the same message with the events as
  ``(trigger id, event)`` pairs, its serde is ``airflow.serialization.serde``;
- an XCom value is ``serialize(value)`` (``BaseXCom.serialize_value``), sent to the supervisor in a
  ``SetXCom`` frame (msgpack), then to the API server by httpx as ``json.dumps(...,
  allow_nan=False, ensure_ascii=False).encode("utf-8")`` (``httpx/_content.py`` ``encode_json``).

Airflow 2.11 stores events and XCom as JSON: there only the JSON checks apply.
"""

from __future__ import annotations

import json
from importlib.metadata import version
from typing import Any


def airflow_major() -> int:
    """The installed Airflow's major version."""
    return int(version("apache-airflow").split(".")[0])


def _serialize(value: Any) -> Any:
    """Airflow 3's serde: ``airflow.sdk.serde`` (3.3), ``airflow.serialization.serde`` (3.0)."""
    try:
        from airflow.sdk.serde import serialize
    except ImportError:
        from airflow.serialization.serde import serialize
    return serialize(value)


def _json_for_the_database(value: Any) -> bytes:
    """As httpx sends it and a PostgreSQL JSONB column accepts it: strict JSON, valid UTF-8, no NUL."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    assert "\\u0000" not in text, "a NUL character: PostgreSQL's JSONB refuses it"
    return text.encode("utf-8")


def encode_trigger_event(payload: Any) -> bytes:
    """Encode a trigger event's payload as the installed Airflow's triggerer does; raises what it would."""
    from airflow.triggers.base import TriggerEvent

    if airflow_major() < 3:
        return _json_for_the_database(payload)
    from airflow.jobs.triggerer_job_runner import messages
    from airflow.sdk.execution_time.comms import _RequestFrame

    event = TriggerEvent(payload)
    try:
        from airflow.jobs.triggerer_job_runner import TriggerEventEntry  # 3.3

        entries: list[Any] = [TriggerEventEntry(1, event, None)]
    except ImportError:  # 3.0: (trigger id, event) pairs
        entries = [(1, event)]
    message = messages.TriggerStateChanges(events=entries)
    frame = _RequestFrame(id=1, body=message.model_dump())
    encoded = bytes(frame.as_bytes())
    # next_kwargs, as the supervisor stores them (3.0 stores the payload as is: the same JSON checks)
    return encoded + _json_for_the_database(_serialize({"event": payload}))


def encode_xcom(value: Any, key: str = "return_value") -> bytes:
    """Encode an XCom value as the installed Airflow's task runner and supervisor do; raises what they would."""
    if airflow_major() < 3:
        from airflow.models.xcom import BaseXCom

        BaseXCom.serialize_value(value)
        return _json_for_the_database(value)
    from airflow.sdk.execution_time.comms import SetXCom, _RequestFrame

    serialized = _serialize(value)
    message = SetXCom(key=key, value=serialized, dag_id="d", run_id="r", task_id="t")
    frame = _RequestFrame(id=1, body=message.model_dump())
    return bytes(frame.as_bytes()) + _json_for_the_database(serialized)
