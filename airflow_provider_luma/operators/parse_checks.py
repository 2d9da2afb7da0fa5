"""Parse-time errors that name the DAG's task: ``task 'generate': aspect_ratio='16:10' is not supported …``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from airflow_provider_luma.errors import LumaInputError

F = TypeVar("F", bound=Callable[..., None])


def names_task(init: F) -> F:
    """
    Decorate an operator's ``__init__`` so that a :class:`~airflow_provider_luma.errors.LumaInputError`
    it raises (a parameter refused when the DAG is parsed) starts with the task's id.

    Airflow reports such an error only as the DAG file's import error (``airflow dags
    list-import-errors``, the UI's "Import errors"), far from the task it is about; ``airflow dags
    test`` then says only that the DAG "could not be found".
    """

    @functools.wraps(init)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            init(self, *args, **kwargs)
        except LumaInputError as error:
            task_id = getattr(self, "task_id", None) or kwargs.get("task_id")
            prefix = f"task {task_id!r}: "
            if task_id is None or error.message.startswith(prefix):
                raise  # a subclass's __init__ wraps its parent's: named once
            # The same error, renamed: its type and traceback stay those of the check that refused.
            error.message = prefix + error.message
            error.args = (error.message, *error.args[1:])
            raise

    return wrapper  # type: ignore[return-value]
