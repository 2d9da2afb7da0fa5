"""LumaGenerationSensor: wait for generations to reach a state, without holding a worker slot."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from functools import cached_property
from typing import Any

from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    BaseSensorOperator,
    Context,
    PokeReturnValue,
)

from airflow_provider_luma.errors import LumaError, LumaInputError
from airflow_provider_luma.hooks.luma import LumaHook
from airflow_provider_luma.models import (
    ApiFamily,
    Generation,
    GenerationRef,
    GenerationState,
    normalize_generation_refs,
)
from airflow_provider_luma.operators.links import (
    MAX_VIDEO_LINKS,
    SENSOR,
    LumaVideoLinks,
    materialized,
    video_links,
)
from airflow_provider_luma.operators.parse_checks import names_task
from airflow_provider_luma.triggers.luma import LumaGenerationTrigger
from airflow_provider_luma.waiting import MISSING_ANSWERS_LIMIT, PACING_FLOORS, Wait

#: How much later than the trigger's own deadline Airflow's deferral time-out fires: a backstop only.
DEFERRAL_TIMEOUT_MARGIN = timedelta(minutes=2)
#: How long the check before deferring may hold the worker slot: one quick look, no retries; the
#: trigger waits out whatever is slow (a hanging API, a 429 asking for a minute).
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


class LumaGenerationSensor(LumaVideoLinks, BaseSensorOperator):
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
        # Poke mode: one wait for all pokes of a try, so that its rules (an id left out of answers
        # MISSING_ANSWERS_LIMIT times in a row) span pokes; keyed by (try number, ids).
        self._poke_wait: tuple[tuple[Any, ...], Wait] | None = None
        # Check literal ids now, at DAG parse time; templates and XComArgs are checked when rendered.
        if is_literal(self._given_ids):
            self._resolve_ids()

    @property
    def _given_ids(self) -> Any:
        return self.generation_id if self.generation_ids is None else self.generation_ids

    def _resolve_ids(self) -> list[GenerationRef]:
        parameter = "generation_id" if self.generation_ids is None else "generation_ids"
        refs = normalize_generation_refs(materialized(self._given_ids), parameter=parameter, api=self.api)
        if self.generation_ids is None and len(refs) != 1:
            raise LumaInputError(f"generation_id must be one id, got {len(refs)}: use generation_ids for several.")
        return refs

    @cached_property
    def hook(self) -> LumaHook:
        """The Luma hook."""
        return LumaHook(luma_conn_id=self.luma_conn_id)

    def execute(self, context: Context) -> Any:
        """Check once; if not there yet, defer to :class:`LumaGenerationTrigger` (or poke when not deferrable)."""
        refs = self._resolve_ids()
        if not self.deferrable:
            return super().execute(context)
        deadline = time.time() + self.timeout
        settings = self.hook.settings
        wait = self.hook.new_wait(refs, self.target_state, deadline=deadline)
        wait.report_progress = self.report_progress
        # A quick look, bounded and not retried: a transient error or a slow API here is no news,
        # defer all the same; the trigger keeps asking until the sensor's own deadline.
        quick = min(deadline, time.time() + FIRST_CHECK_SECONDS)
        finished = self.hook.check_once(wait, hold=False, deadline=quick, max_retries=0)
        if finished is not None:
            return self._finish(finished.to_event())
        resolved = [ref.resolved(settings.api) for ref in refs]
        # Never below the pacing floor the trigger enforces (a sensor's poke_interval may be 1 s).
        interval = max(float(self.poke_interval), PACING_FLOORS["poll_interval"])
        tuning = {"poll_interval": interval} if self._given_poke_interval else {}
        self.defer(
            trigger=LumaGenerationTrigger(
                generation_ids=[ref.id for ref in resolved],
                target_state=self.target_state,
                luma_conn_id=self.luma_conn_id,
                deadline=deadline,
                apis={ref.id: str(ref.api) for ref in resolved},
                report_progress=self.report_progress,
                **tuning,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout) + DEFERRAL_TIMEOUT_MARGIN,
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """Turn the trigger's event into the task's result or failure."""
        return self._finish(event)

    def poke(self, context: Context) -> PokeReturnValue:
        """
        One long poll, held by the server at most the connection's time-out; with ``report_progress``
        a poke whose wait has seen nothing yet first asks where things stand (answered at once).
        """
        wait = self._wait_for_poke(context)  # Airflow enforces the sensor's timeout
        deadline = time.time() + min(self.hook.settings.timeout, float(self.timeout))
        fresh = self.report_progress and not any(loop.latest for loop in wait.loops)
        finished = self.hook.check_once(wait, hold=True, deadline=deadline)
        if fresh and finished is None and not wait.left_out_ids and time.time() < deadline:
            # A wait that had seen nothing asked where things stand (answered at once): now hold
            # this poke for the next state, as a long poll should.
            finished = self.hook.check_once(wait, hold=True, deadline=deadline)
        if self.reschedule:
            # Nothing of this poke reaches the next (a new sensor object; XCom is cleared at each
            # start), so ids an answer left out are asked for again now, as a wait would.
            for _ in range(MISSING_ANSWERS_LIMIT - 1):
                if finished is not None or not wait.left_out_ids or time.time() >= deadline:
                    break
                time.sleep(self.hook.settings.min_poll_interval)
                finished = self.hook.check_once(wait, hold=False, deadline=deadline)
        if finished is None:
            return PokeReturnValue(is_done=False)
        return PokeReturnValue(is_done=True, xcom_value=self._finish(finished.to_event()))

    def _wait_for_poke(self, context: Context) -> Wait:
        """The wait of this poke: in poke mode the same one for every poke of a try."""
        refs = self._resolve_ids()
        ti = context.get("ti")
        key = (getattr(ti, "try_number", None), *(ref.id for ref in refs))
        if self._poke_wait is None or self._poke_wait[0] != key:
            wait = self.hook.new_wait(refs, self.target_state)
            wait.report_progress = self.report_progress
            self._poke_wait = (key, wait)
        return self._poke_wait[1]

    def _finish(self, event: Mapping[str, Any] | None) -> Any:
        if not event or "status" not in event:
            raise AirflowException(f"{self.task_id}: the Luma trigger sent no usable event ({event!r}).")
        status, message = event["status"], event.get("message") or "no message"
        if status == "success":
            generations = [Generation.from_dict(g).to_dict() for g in event.get("generations", [])]
            self.remember_videos(generations)
            return generations[0] if self.generation_ids is None else generations
        if self.soft_fail:
            raise AirflowSkipException(f"Skipping (soft_fail): {message}")
        if status == "failed":
            # A failed generation stays failed: retrying this sensor cannot help.
            raise AirflowFailException(message)
        if status == "timeout":
            raise AirflowSensorTimeout(message)
        raise LumaError(message)
