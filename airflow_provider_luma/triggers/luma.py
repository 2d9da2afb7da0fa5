"""LumaGenerationTrigger: waits in Airflow's triggerer for generations to reach a state."""

from __future__ import annotations

import traceback
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_luma import cancel, outcome
from airflow_provider_luma.errors import LumaError, LumaInputError
from airflow_provider_luma.hooks.luma import LumaHook
from airflow_provider_luma.models import ApiFamily, GenerationRef, GenerationState, normalize_generation_refs
from airflow_provider_luma.waiting import MAX_SECONDS, PACING_FLOORS, checked_number

#: Pacing settings a trigger may carry; unset ones come from the connection.
TUNING_KEYS = tuple(PACING_FLOORS)


class LumaGenerationTrigger(BaseTrigger):
    """
    Wait until every generation reaches ``target_state`` (or a later non-failed state): long polls on
    the ``luma-ai`` endpoints, polls every ``poll_interval`` seconds on the universal endpoint.

    Yields exactly one event (:func:`airflow_provider_luma.outcome.event_of`: ``{"v": 1, "status",
    "message", "generations"}``, storable, redacted, bounded), where status is ``success``, ``failed``
    (a generation failed), ``timeout`` (``deadline`` passed) or ``error`` (a permanent API error, such
    as a rejected key or an unknown id). Transient errors never end the wait before the deadline.
    Everything it needs is in its kwargs (refs, state, connection id, absolute deadline), so a trigger
    rebuilt after a triggerer restart resumes the same wait; one serialized by 0.2.0
    (``generation_ids`` and ``apis``) is read too.

    :param generation_ids: The generations to wait for: ids, or generation dicts (which say their
        family); or give ``refs``.
    :param target_state: ``queued``, ``dreaming`` or ``completed`` (default).
    :param luma_conn_id: The Luma connection.
    :param deadline: UNIX time after which the wait ends with ``timeout``; ``None``: no limit.
    :param apis: 0.2.0's form of the families: ``{"<id>": "video"}`` beside ``generation_ids``.
    :param refs: The generations as ``[{"id": ..., "api": ...}]`` (``api`` ``None`` or left out: what
        the id's form says, else the connection's ``api`` extra); what :meth:`serialize` writes.
    :param report_progress: Report every state on the way: long-poll for the state after the latest
        seen instead of ``target_state`` (at most one more call per state) and log each state with the
        seconds since the generation's creation. Default ``False``: one long poll for the target.
    :param cancel_on_kill: On Airflow 3.3+, cancel the generations not finished yet when a user marks
        the deferred task failed (``BaseTrigger.on_kill``; never on clear or mark-success, see
        :mod:`airflow_provider_luma.cancel`). Luma's own API only. Default ``False``.
    :param tuning: Optional pacing overrides: ``min_poll_interval``, ``poll_interval``,
        ``initial_backoff``, ``max_backoff`` (seconds).
    """

    def __init__(
        self,
        generation_ids: list[Any] | None = None,
        target_state: str = GenerationState.COMPLETED.value,
        luma_conn_id: str = LumaHook.default_conn_name,
        deadline: float | None = None,
        apis: dict[str, str] | None = None,
        report_progress: bool = False,
        *,
        refs: list[Mapping[str, Any]] | None = None,
        cancel_on_kill: bool = False,
        **tuning: float,
    ) -> None:
        super().__init__()
        unknown = set(tuning) - set(TUNING_KEYS)
        if unknown:
            raise LumaInputError(f"Unknown trigger settings {sorted(unknown)}: use {', '.join(TUNING_KEYS)}.")
        self.refs = _refs(generation_ids, apis, refs)
        self.generation_ids = [ref.id for ref in self.refs]
        self.target_state = GenerationState.waitable(target_state).value
        self.luma_conn_id = luma_conn_id
        if not isinstance(report_progress, bool):
            raise LumaInputError(f"{self._what('report_progress')} is {report_progress!r}: expected True or False.")
        self.report_progress = report_progress
        if not isinstance(cancel_on_kill, bool):
            raise LumaInputError(f"{self._what('cancel_on_kill')} is {cancel_on_kill!r}: expected True or False.")
        self.cancel_on_kill = cancel_on_kill
        self.deadline = None if deadline is None else checked_number(deadline, what=self._what("deadline"), minimum=0)
        self.tuning = {
            key: checked_number(value, what=self._what(key), minimum=PACING_FLOORS[key], maximum=MAX_SECONDS)
            for key, value in tuning.items()
            if value is not None
        }

    def _what(self, name: str) -> str:
        return f"{type(self).__name__} setting {name!r}"

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """
        Classpath and plain-JSON kwargs: refs (``[{"id", "api"}]``), state, connection id, deadline,
        tuning and ``report_progress`` (only when on); never a secret.
        """
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "refs": [{"id": ref.id, "api": ref.api.value if ref.api else None} for ref in self.refs],
                "target_state": self.target_state,
                "luma_conn_id": self.luma_conn_id,
                "deadline": self.deadline,
                **({"report_progress": True} if self.report_progress else {}),
                **({"cancel_on_kill": True} if self.cancel_on_kill else {}),
                **self.tuning,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """
        Wait, then yield the one event that says how the wait ended.

        Any exception but cancellation ends the wait with an ``error`` event (type and message, never
        the key): a crashed trigger would end a sensor with Airflow's bare "Trigger failure" and
        retry a generate task, which pays again where no task state survives a try.
        """
        hook: LumaHook | None = None
        try:
            hook = LumaHook(luma_conn_id=self.luma_conn_id)
            async with hook:
                settings = await hook.asettings()
                wait = hook.new_wait(
                    self.refs,
                    self.target_state,
                    deadline=self.deadline,
                    settings=settings,
                    pacing=replace(settings.pacing, **self.tuning) if self.tuning else settings.pacing,
                    logger=self.log,
                    report_progress=self.report_progress,
                )
                event = outcome.event_of(await hook.arun_wait(wait))
        except LumaError as error:
            event = outcome.error_event(error.message)
        except Exception as error:  # not BaseException: cancellation, GeneratorExit and exits must go through
            event = outcome.error_event(f"The Luma wait failed unexpectedly ({type(error).__name__}: {error}).")
            self.log.error(
                "%s\n%s", event["message"], outcome.message("".join(traceback.format_exception(error)), 20_000)
            )
        self.log.info("Luma wait ended: %s", event["message"])
        yield TriggerEvent(event)

    async def on_kill(self) -> None:
        """
        Airflow 3.3+ calls this when a user acts on the deferred task (mark failed, mark success,
        clear); with ``cancel_on_kill``, cancel the unfinished generations if the task is now
        ``failed``, and only then (see :mod:`airflow_provider_luma.cancel`).
        """
        if self.cancel_on_kill:
            hook = LumaHook(luma_conn_id=self.luma_conn_id)
            await cancel.acancel_if_marked_failed(getattr(self, "task_instance", None), hook, self.refs, self.log)


def _refs(
    generation_ids: list[Any] | None, apis: Mapping[str, Any] | None, refs: list[Mapping[str, Any]] | None
) -> list[GenerationRef]:
    """The generations of the trigger's kwargs, new form (``refs``) or 0.2.0's (``generation_ids`` + ``apis``)."""
    if (refs is None) == (generation_ids is None):
        raise LumaInputError("LumaGenerationTrigger needs exactly one of refs or generation_ids.")
    if refs is not None:
        if not isinstance(refs, list) or not all(isinstance(ref, Mapping) for ref in refs):
            raise LumaInputError(f"LumaGenerationTrigger refs must be a list of {{'id', 'api'}} dicts, not {refs!r}.")
        given = {str(ref.get("id")): ref.get("api") for ref in refs}
        found = normalize_generation_refs([ref.get("id") for ref in refs], parameter="refs")
    else:
        given = dict(apis or {})
        found = normalize_generation_refs(generation_ids, parameter="generation_ids")
    families = {
        key: ApiFamily.parse(value, parameter=f"the api of {key!r}")
        for key, value in given.items()
        if value is not None
    }
    return [GenerationRef(ref.id, families.get(ref.id, ref.api)) for ref in found]
