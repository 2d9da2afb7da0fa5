"""The parts of a task instance and its context that the operators use, for driving them without Airflow."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from airflow_provider_luma.hooks.luma import LumaHook
from airflow_provider_luma.testing import LumaSimulator

#: Whether this Airflow has the task state store (3.3+) that lets a retry reuse a generation.
AIRFLOW_HAS_TASK_STATE = tuple(int(p) for p in version("apache-airflow").split(".")[:2]) >= (3, 3)


class FakeTaskInstance:
    """
    The task instance as the operators use it: try number, XCom push and pull (kept across resumptions).

    :param try_number: The try this is.
    :param fail_push: An XCom key whose push of a non-empty value fails (an XCom backend refusing it).
    :param max_tries: Airflow's ``max_tries`` (the task's retries): a failed try is retried while
        ``try_number <= max_tries``.
    """

    def __init__(self, try_number: int = 1, fail_push: str | None = None, max_tries: int = 0) -> None:
        self.try_number = try_number
        self.max_tries = max_tries
        self.task_id = "generate"
        self.map_index = -1
        self.xcom: dict[str, Any] = {}
        self.fail_push = fail_push

    def xcom_push(self, key: str, value: Any, **_: Any) -> None:
        if key == self.fail_push and value:
            raise RuntimeError(f"XCom backend refused {key}")
        self.xcom[key] = value

    def xcom_pull(self, task_ids: Any = None, key: str = "return_value", **_: Any) -> Any:
        return self.xcom.get(key)


class TaskStateStore:
    """Airflow 3.3's ``task_state_store`` as the operator uses it (get / set / delete), kept across tries."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def set(self, key: str, value: Any, *, retention: Any = None) -> None:
        self.values[key] = value

    def delete(self, key: str) -> None:
        self.values.pop(key, None)


def task_context(
    try_number: int = 1, store: TaskStateStore | None = None, ti: FakeTaskInstance | None = None
) -> dict[str, Any]:
    """A task's context: ``ti`` (else a new :class:`FakeTaskInstance` of ``try_number``) and the store, if any."""
    context: dict[str, Any] = {"ti": ti or FakeTaskInstance(try_number)}
    if store is not None:
        context["task_state_store"] = store
    return context


def completed_generation(sim: LumaSimulator, prompt: str = "a finished clip") -> dict[str, Any]:
    """A generation the simulator reports as completed right away (as the sensor would return it)."""
    generation = LumaHook().create_generation(prompt)
    sim.set_state(generation.id, "completed")
    return LumaHook().get_generation(generation.id).to_dict()
