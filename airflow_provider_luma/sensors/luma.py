"""LumaGenerationSensor: wait for generations to reach a state, without holding a worker slot."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from functools import cached_property
from typing import Any

from airflow.providers.common.compat.sdk import BaseSensorOperator, Context, PokeReturnValue

from airflow_provider_luma import cancel, outcome
from airflow_provider_luma.errors import LumaInputError
from airflow_provider_luma.hooks.luma import LumaHook
from airflow_provider_luma.models import ApiFamily, GenerationRef, GenerationState, normalize_generation_refs
from airflow_provider_luma.operators.links import (
    MAX_VIDEO_LINKS,
    SENSOR,
    LumaVideoLinks,
    materialized,
    video_links,
)
from airflow_provider_luma.operators.parse_checks import names_task
from airflow_provider_luma.triggers.luma import LumaGenerationTrigger
from airflow_provider_luma.waiting import PACING_FLOORS, Finished, Wait

#: How much later than the trigger's own deadline Airflow's deferral time-out fires: a backstop only.
DEFERRAL_TIMEOUT_MARGIN = timedelta(minutes=2)
#: How long the check before deferring may hold the worker slot, in all (every call, however slowly
#: the server sends): one quick look, no retries; the trigger waits out whatever is slow (a hanging
#: API, a 429 asking for a minute).
FIRST_CHECK_SECONDS = 5.0


def is_literal(value: Any) -> bool:
    """Whether ``value`` is known at DAG parse time (not an XComArg, not a Jinja template)."""
    if isinstance(value, str):
        return "{{" not in value and "{%" not in value
    if isinstance(value, Mapping):
        return all(is_literal(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(is_literal(v) for v in value)
    return isinstance(value, (int, float, bool)) or value is None


class LumaGenerationSensor(cancel.CancelOnKill, LumaVideoLinks, BaseSensorOperator):
    """
    Wait until one or several Luma generations reach ``target_state``; fail the task if one fails.

    Deferrable by default, whatever ``[operators] default_deferrable`` says: the wait runs in the
    triggerer and no worker slot is held: long polls for ``luma-ai`` generations, a poll every
    ``poll_interval`` seconds (the connection's extra, or this sensor's ``poke_interval`` when given)
    for universal ones. It checks once before deferring. Returns
    (as XCom) the generation as a dict (``generation_id``) or a list of them (``generation_ids``),
    each with its ``video_url``.

    .. seealso::
        For more information on how to use this sensor, see the provider's README.

    :param generation_id: One generation: an id, a generation dict (e.g. ``generate.output``), or a
        template rendering to one. Give this or ``generation_ids``. (templated)
    :param generation_ids: Several generations: a list of ids or dicts, an ``XComArg`` (also of a mapped
        task), or a comma-separated string. (templated)
    :param target_state: ``queued``, ``dreaming`` or ``completed`` (default). A later non-failed
        state counts as reached; ``failed`` cannot be waited for.
    :param luma_conn_id: The Luma connection. (templated)
    :param api: The endpoint family of bare ids: ``luma-ai`` or ``video`` (the universal endpoint).
        Generation dicts and ids of the form ``<uuid>:luma/<model>`` say their own; default: the
        connection's ``api`` extra.
    :param deferrable: Wait in the triggerer (default). ``False`` pokes from the worker in ``poke``
        or ``reschedule`` mode, each poke one long poll (or one plain poll on the universal endpoint).
    :param report_progress: Report every state on the way (``queued``, ``dreaming``, ``completed``),
        each logged with the seconds since the generation's creation: each long poll holds for the
        state after the latest seen instead of ``target_state``, at most one more call per state.
        Default ``False`` (one long poll for the target, the fewest calls). On the universal endpoint
        only the log lines change.
    :param cancel_on_kill: Cancel the generations not finished yet (Luma's ``DELETE``) when a user marks
        the task failed: while poking (``on_kill``), or while deferred on Airflow 3.3+ (the trigger's
        ``on_kill``); and when the wait reaches ``timeout``, in every mode (in the worker, as the
        time-out fails or, with ``soft_fail``, skips the task). Never on clear or mark-success, never a
        ``completed`` or ``failed`` one. Needs a connection to Luma's own API. Default ``False``.
    :param soft_fail: Skip instead of failing when a generation fails, the wait times out or the API
        reports a permanent error.
    """

    template_fields: Sequence[str] = ("generation_id", "generation_ids", "luma_conn_id")
    ui_color = "#c9b8f5"
    luma_video_source = SENSOR
    operator_extra_links = video_links(SENSOR, MAX_VIDEO_LINKS)

    @names_task
    def __init__(
        self,
        *,
        generation_id: Any = None,
        generation_ids: Any = None,
        target_state: str = GenerationState.COMPLETED.value,
        luma_conn_id: str = LumaHook.default_conn_name,
        api: str | None = None,
        deferrable: bool = True,
        report_progress: bool = False,
        cancel_on_kill: bool = False,
        **kwargs: Any,
    ) -> None:
        # Only a poke_interval the user gave paces universal polls; Airflow's default (60 s) would not.
        self._given_poke_interval = "poke_interval" in kwargs
        super().__init__(**kwargs)
        if (generation_id is None) == (generation_ids is None):
            raise LumaInputError("give exactly one of generation_id or generation_ids.")
        self.generation_id = generation_id
        self.generation_ids = generation_ids
        # One "Luma video" link per generation, as far as the DAG file tells (links are fixed at parse time).
        self.expect_videos(self._given_ids, single=generation_ids is None)
        self.target_state = GenerationState.waitable(target_state).value
        self.luma_conn_id = luma_conn_id
        self.api = ApiFamily.parse(api).value if api is not None else None
        self.deferrable = deferrable
        self.report_progress = bool(report_progress)
        self.cancel_on_kill = bool(cancel_on_kill)
        # Poke mode: one wait for all pokes of a try, so that its rules (an id left out of answers
        # MISSING_ANSWERS_LIMIT times in a row) span pokes; keyed by (try number, ids).
        self._poke_wait: tuple[tuple[Any, ...], Wait] | None = None
        # Check literal ids now, at DAG parse time; templates and XComArgs are checked when rendered.
        if is_literal(self._given_ids):
            self._resolve_ids()

    @property
    def _given_ids(self) -> Any:
        return self.generation_id if self.generation_ids is None else self.generation_ids

    def _resolve_ids(self, resolve: bool = False) -> list[GenerationRef]:
        """The generations, as refs: once per entry point (``resolve``: their families decided by the connection)."""
        parameter = "generation_id" if self.generation_ids is None else "generation_ids"
        refs = normalize_generation_refs(materialized(self._given_ids), parameter=parameter, api=self.api)
        if self.generation_ids is None and len(refs) != 1:
            raise LumaInputError(f"generation_id must be one id, got {len(refs)}: use generation_ids for several.")
        return self.hook.refs(refs) if resolve else refs

    @cached_property
    def hook(self) -> LumaHook:
        """The Luma hook."""
        return LumaHook(luma_conn_id=self.luma_conn_id)

    def execute(self, context: Context) -> Any:
        """Check once; if not there yet, defer to :class:`LumaGenerationTrigger` (or poke when not deferrable)."""
        cancel.require_cancel(self.hook, self.cancel_on_kill)
        refs = self._resolve_ids(resolve=True)
        self.watch_for_kill(context, self.hook, refs)
        # At the deadline (Airflow's in poke and reschedule mode, the first check's), cancel_on_kill cancels.
        with self.cancelling_at_deadline(context, lambda: (self.hook, refs)):
            if not self.deferrable:
                return super().execute(context)
            return self._check_then_defer(refs)

    def _check_then_defer(self, refs: list[GenerationRef]) -> Any:
        """The deferrable sensor: one quick check, then defer to the trigger until the sensor's deadline."""
        deadline = time.time() + self.timeout
        wait = self.hook.new_wait(refs, self.target_state, deadline=deadline, report_progress=self.report_progress)
        # A quick look, bounded in all and not retried: a transient error or a slow API here is no
        # news, defer all the same; the trigger keeps asking until the sensor's own deadline.
        quick = min(deadline, time.time() + FIRST_CHECK_SECONDS)
        finished = self.hook.check_once(wait, hold=False, deadline=quick, max_retries=0)
        if finished is not None:
            return self._finish(finished)
        # Never below the pacing floor the trigger enforces (a sensor's poke_interval may be 1 s).
        interval = max(float(self.poke_interval), PACING_FLOORS["poll_interval"])
        tuning: dict[str, Any] = {"poll_interval": interval} if self._given_poke_interval else {}
        self.defer(
            trigger=LumaGenerationTrigger(
                refs=[{"id": ref.id, "api": str(ref.api)} for ref in refs],
                target_state=self.target_state,
                luma_conn_id=self.luma_conn_id,
                deadline=deadline,
                report_progress=self.report_progress,
                cancel_on_kill=self.cancel_on_kill,
                **tuning,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout) + DEFERRAL_TIMEOUT_MARGIN,
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """Turn the trigger's event (of this release's schema or 0.2.0's) into the task's result or failure."""
        return self._finish(outcome.read_event(event))

    def resumed_generations(self, context: Context, next_kwargs: Mapping[str, Any]) -> tuple[LumaHook, list[Any]]:
        """The generations a resumed sensor waited for (what a deadline cancels)."""
        return self.hook, self._resolve_ids(resolve=True)

    def poke(self, context: Context) -> PokeReturnValue:
        """
        One long poll, held by the server at most the connection's time-out; the wait's rules
        (:class:`~airflow_provider_luma.waiting.Poke`) say whether the poke asks again.
        """
        wait = self._wait_for_poke(context)  # Airflow enforces the sensor's timeout
        deadline = time.time() + min(self.hook.settings.timeout, float(self.timeout))
        # Reschedule mode: nothing of this poke reaches the next (a new sensor object; XCom is cleared).
        finished = self.hook.poke(wait, deadline=deadline, keeps_state=not self.reschedule)
        if finished is None:
            return PokeReturnValue(is_done=False)
        return PokeReturnValue(is_done=True, xcom_value=self._finish(finished))

    def _wait_for_poke(self, context: Context) -> Wait:
        """The wait of this poke: in poke mode the same one for every poke of a try."""
        ti = context.get("ti")
        refs = self._resolve_ids(resolve=True)
        key = (getattr(ti, "try_number", None), *(ref.id for ref in refs))
        if self._poke_wait is None or self._poke_wait[0] != key:
            wait = self.hook.new_wait(refs, self.target_state, report_progress=self.report_progress)
            self._poke_wait = (key, wait)
        return self._poke_wait[1]

    def _finish(self, finished: Finished) -> Any:
        generations = outcome.settle(finished, role="sensor", soft_fail=self.soft_fail)
        self.remember_videos(generations)
        return outcome.sensor_result(generations, one=self.generation_ids is None)
