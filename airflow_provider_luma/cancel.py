"""
``cancel_on_kill``: cancel a Luma generation when a user marks its task failed or its wait reaches its
deadline, never otherwise.

Airflow calls the same hook for very different things, and says which only through the task
instance's state once it has acted:

* In the worker, ``BaseOperator.on_kill`` runs on SIGTERM (Airflow 3.3.2:
  ``airflow/sdk/execution_time/task_runner.py:1549``; 2.11.2: ``airflow/models/taskinstance.py:3120``),
  which comes when a user marks the running task failed or success or clears it (the task
  instance's state changed under it), and also when the worker itself shuts down; and on
  ``execution_timeout`` (3.3.2 ``task_runner.py:2189``, 2.11.2 ``taskinstance.py:773``).
* While deferred, ``BaseTrigger.on_kill`` (Airflow 3.3+ only: 3.3.2
  ``airflow/jobs/triggerer_job_runner.py:1655-1658``) runs when the trigger is cancelled with the
  user-action message (``triggerer_job_runner.py:1398-1413``): on mark-failed, mark-success **and**
  clear alike; never on a trigger time-out (checked first, ``:1649-1653``), a triggerer restart or
  redistribution; and it cancels the trigger again about every second while ``on_kill`` runs (see
  :func:`acancel_if_marked_failed`). Airflow 2.11 and 3.0 never call a trigger's ``on_kill``: a
  deferred task's generation is not cancelled there.

So the cancel asks the task instance's current state (:func:`killed_by_mark_failed`): only ``failed``
cancels. Mark-success (``success``), clear (``None``/``restarting``: the next try reuses the
generation), a worker shutdown or an ``execution_timeout`` (still ``running``) never do, nor a
generation already ``completed`` or ``failed`` (it is fetched first). When the state cannot be read,
nothing is cancelled: a kill must never silently delete a user's paid video.

**At the deadline** (:meth:`CancelOnKill.cancelling_at_deadline`): the task cancels too, in the worker,
where the wait's time-out becomes the task's error (:func:`ended_at_deadline`), the same code for
every mode and Airflow version: the provider's own wait ending ``timeout`` (the sensor's ``timeout``,
the generate operator's ``wait_timeout``; a sync wait, the check before deferring, or the trigger's
``timeout`` event in ``execute_complete``), Airflow's sensor time-out in ``poke`` and ``reschedule``
mode (raised after a poke in ``BaseSensorOperator.execute``: 3.3.2 ``airflow/sdk/bases/sensor.py:234-243``,
2.11.2 ``airflow/sensors/base.py:316-326``), and the deferral time-out Airflow fires when no trigger
delivered an event (:data:`DEFERRAL_TIMEOUT_ERRORS`). With ``soft_fail`` too (the task is skipped,
the generation cancelled all the same). The error the task ends with stays what it was.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from airflow.configuration import conf
from airflow.providers.common.compat.sdk import AirflowFailException, AirflowSensorTimeout, AirflowSkipException

from airflow_provider_luma import outcome
from airflow_provider_luma.errors import LumaConfigurationError, LumaError, LumaNotFoundError, LumaWaitTimeoutError
from airflow_provider_luma.hooks.dream_machine import cancel_unfinished_plan
from airflow_provider_luma.hooks.luma import LumaHook
from airflow_provider_luma.models import GenerationRef

log = logging.getLogger(__name__)

#: The task instance states after which a kill cancels: the user marked the task failed.
CANCELLING_STATES = frozenset({"failed"})
#: Seconds the cancel (its fetch and its DELETE) may take; Airflow bounds a trigger's ``on_kill`` at 30 s.
CANCEL_SECONDS = 20.0
#: Seconds a trigger's whole ``on_kill`` cancel may take (the state read, then :data:`CANCEL_SECONDS`),
#: at most: less when Airflow's ``[triggerer] on_kill_timeout`` (30 s by default) is shorter.
ON_KILL_SECONDS = 25.0
#: The errors a wait that reached its deadline ends the task with, or that the task's error was raised
#: from: the provider's own (:func:`~airflow_provider_luma.outcome.settle`) and Airflow's sensor time-out.
DEADLINE_ERRORS: tuple[type[BaseException], ...] = (LumaWaitTimeoutError, AirflowSensorTimeout)
#: How Airflow's sensor time-out message starts: also that of the skip which replaces it under
#: ``soft_fail``, raised from nothing (2.11.2 ``airflow/sensors/base.py:319``, 3.3.2
#: ``airflow/sdk/bases/sensor.py:237``).
AIRFLOW_SENSOR_TIMEOUT_TEXT = "Sensor has timed out"
#: The ``error`` a deferral time-out resumes the task with (``next_method`` ``__fail__``): Airflow 3's
#: ``TriggerFailureReason.TRIGGER_TIMEOUT`` (3.3.2 ``airflow/sdk/bases/operator.py:124``), Airflow
#: 2.11's scheduler's (2.11.2 ``airflow/jobs/scheduler_job_runner.py:2087``).
DEFERRAL_TIMEOUT_ERRORS = frozenset({"Trigger timeout", "Trigger/execution timeout"})
#: The errors Airflow never retries a task after (3.3.2 ``airflow/sdk/execution_time/task_runner.py:1636``,
#: 2.11.2 ``airflow/models/taskinstance.py:320``; a skip is no failure).
FINAL_ERRORS: tuple[type[BaseException], ...] = (AirflowFailException, AirflowSensorTimeout, AirflowSkipException)
#: Links of ``raise ... from ...`` followed back from the task's error.
MAX_CAUSES = 8
#: The ``next_method`` Airflow resumes a deferred task with when its trigger crashed or its deferral timed out.
TRIGGER_FAILED_METHOD = "__fail__"

#: What a deadline cancels, asked only when it comes: ``(hook, generations)``.
Target = Callable[[], tuple[LumaHook, Iterable[Any]]]


def require_cancel(hook: LumaHook, cancel_on_kill: bool) -> None:
    """
    Refuse ``cancel_on_kill=True`` on a connection that cannot cancel, before anything is paid for.

    :raises LumaConfigurationError: On the AI/ML API.
    """
    if cancel_on_kill and not hook.settings.on_luma:
        raise LumaConfigurationError(
            f"cancel_on_kill=True, but connection {hook.luma_conn_id!r} reaches the AI/ML API, which has no cancel: "
            "use a connection to Luma's own API (extra backend 'luma'), or leave cancel_on_kill off."
        )


def _state(states: Any, ti: Any) -> str | None:
    """The state of ``ti`` in Airflow 3's ``{run_id: {task_id or task_id_mapindex: state}}``."""
    map_index = getattr(ti, "map_index", -1)
    key = ti.task_id if map_index is None or map_index < 0 else f"{ti.task_id}_{map_index}"
    state = (states or {}).get(ti.run_id, {}).get(key)
    return None if state is None else str(getattr(state, "value", state))


def task_state(ti: Any) -> tuple[bool, str | None]:
    """
    The current state of ``ti`` as Airflow's metadata now says it: ``(read, state)``; ``read`` is
    false when it could not be asked (then nothing is cancelled).
    """
    if ti is None:
        return False, None
    try:
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance  # Airflow 3
    except ImportError:
        try:
            ti.refresh_from_db()  # Airflow 2: the worker reads the metadata DB itself
        except Exception as error:
            log.warning("Could not read the task's state (%s): not cancelling.", type(error).__name__)
            return False, None
        return True, None if ti.state is None else str(getattr(ti.state, "value", ti.state))
    try:
        states = RuntimeTaskInstance.get_task_states(
            dag_id=ti.dag_id, task_ids=[ti.task_id], run_ids=[ti.run_id], map_index=getattr(ti, "map_index", None)
        )
    except Exception as error:
        log.warning("Could not read the task's state (%s): not cancelling.", type(error).__name__)
        return False, None
    return True, _state(states, ti)


def killed_by_mark_failed(ti: Any) -> bool:
    """Whether ``ti`` was killed because a user marked it failed (not cleared, not marked success)."""
    return _judged(*task_state(ti))


async def akilled_by_mark_failed(ti: Any) -> bool:
    """Async twin of :func:`killed_by_mark_failed` (in the triggerer: the lookup must not block its loop)."""
    return _judged(*await asyncio.to_thread(task_state, ti))


def _judged(read: bool, state: str | None) -> bool:
    if read and state in CANCELLING_STATES:
        return True
    if read:
        log.info(
            "The task is now %s (cleared, marked success, or still running: a later try may reuse the generation): "
            "not cancelling.",
            state,
        )
    return False


def cancel_unfinished(hook: LumaHook, refs: Iterable[Any]) -> list[str]:
    """
    Cancel each generation of ``refs`` that is not finished yet (``completed`` and ``failed`` are
    left alone, see :func:`~airflow_provider_luma.hooks.dream_machine.cancel_unfinished_plan`); the
    ids cancelled. Errors are logged, never raised: ``on_kill`` must not fail.
    """
    cancelled = []
    for ref in hook.refs(list(refs)):
        try:
            if hook.run(cancel_unfinished_plan(hook.settings, ref, time.time() + CANCEL_SECONDS)):
                cancelled.append(ref.id)
        except LumaError as error:
            _not_cancelled(ref, error)
    return cancelled


async def acancel_unfinished(hook: LumaHook, refs: Iterable[GenerationRef]) -> list[str]:
    """Async twin of :func:`cancel_unfinished`."""
    settings = await hook.asettings()
    cancelled = []
    for ref in hook.refs(list(refs), settings=settings):
        try:
            if await hook.arun(cancel_unfinished_plan(settings, ref, time.time() + CANCEL_SECONDS)):
                cancelled.append(ref.id)
        except LumaError as error:
            _not_cancelled(ref, error)
    return cancelled


async def acancel_if_marked_failed(ti: Any, hook: LumaHook, refs: Iterable[GenerationRef], logger: Any) -> None:
    """
    The triggerer half of ``cancel_on_kill`` (the trigger's ``on_kill``): when ``ti`` was marked failed,
    cancel the unfinished generations of ``refs`` and tell ``logger`` which.

    It runs to its end (at most :func:`on_kill_seconds`) although Airflow cancels its caller again
    meanwhile. Airflow 3.3.2's trigger runner cancels a cancelled trigger's task again on each pass of
    its loop, about every second, until the trigger has ended, ``on_kill`` included: the supervisor
    keeps the trigger in ``to_cancel`` (``airflow/jobs/triggerer_job_runner.py:599-602``) and
    ``cancel_triggers`` cancels the task each time (``:1249-1253``, ``:1408-1411``). So ``on_kill`` has
    about a second, not ``on_kill_timeout``, and a state read or DELETE slower than that was cut off.
    The work runs as a task of its own, which those cancels do not reach, and this waits for it through
    them. It ends before Airflow's own ``on_kill_timeout``, so that time-out never has to fire.
    On Python 3.11, ``asyncio.wait_for`` stops waiting at the third cancel and the work goes on alone.
    On 3.12 and later, the trigger stays open until the work ends. A line logged after the trigger has
    ended goes to the triggerer's own log: Airflow closes the trigger's log then (``:584-592``).
    """
    caller = asyncio.current_task()
    assert caller is not None, "awaited outside a task"
    work = asyncio.ensure_future(_acancel_if_marked_failed(ti, hook, refs, logger, on_kill_seconds()))
    _OUTLASTING.add(work)  # the event loop keeps only weak references to tasks
    work.add_done_callback(_OUTLASTING.discard)
    while not work.done():
        try:
            await asyncio.shield(work)
        except asyncio.CancelledError:
            if work.cancelled():  # the event loop is closing: the work was cancelled too
                raise
            caller.uncancel()  # Airflow's repeated cancel: the work goes on, and so does this wait for it
    work.result()


def on_kill_seconds() -> float:
    """
    :data:`ON_KILL_SECONDS`, or a second less than Airflow's ``[triggerer] on_kill_timeout`` when that
    is shorter, so that the cancel ends before Airflow stops waiting for it (at least 1 s).
    """
    try:
        airflows = conf.getfloat("triggerer", "on_kill_timeout", fallback=30.0)
    except ValueError:
        airflows = 30.0
    return max(1.0, min(ON_KILL_SECONDS, airflows - 1.0))


#: The tasks of :func:`acancel_if_marked_failed` still running.
_OUTLASTING: set[asyncio.Task[None]] = set()


async def _acancel_if_marked_failed(
    ti: Any, hook: LumaHook, refs: Iterable[GenerationRef], logger: Any, seconds: float
) -> None:
    # Nothing is raised: once wait_for has stopped waiting (Python 3.11), nobody would see it.
    try:
        async with asyncio.timeout(seconds):
            if not await akilled_by_mark_failed(ti):
                return
            cancelled = await acancel_unfinished(hook, refs)
    except TimeoutError:
        logger.warning("The cancel of the task's Luma generations did not end within %.0f s.", seconds)
        return
    except Exception:
        logger.warning("The cancel of the task's Luma generations failed.", exc_info=True)
        return
    told_cancelled(logger, "Task marked failed", cancelled)


def told_cancelled(logger: Any, why: str, cancelled: list[str]) -> None:
    """The one INFO line of a cancel: ``"<why>: cancelled Luma generation(s) <ids or none>."``."""
    logger.info("%s: cancelled Luma generation(s) %s.", why, ", ".join(cancelled) or "none")


def ended_at_deadline(error: BaseException) -> bool:
    """
    Whether ``error``, the task's error, says its wait reached its deadline: it is (or was raised from,
    as Airflow's ``soft_fail`` skip and the operator's no-retry failure are) one of :data:`DEADLINE_ERRORS`,
    or it is Airflow's own ``soft_fail`` skip at the sensor's time-out (:data:`AIRFLOW_SENSOR_TIMEOUT_TEXT`).
    """
    if isinstance(error, AirflowSkipException) and str(error).startswith(AIRFLOW_SENSOR_TIMEOUT_TEXT):
        return True
    cause: BaseException | None = error
    for _ in range(MAX_CAUSES):
        if cause is None:
            break
        if isinstance(cause, DEADLINE_ERRORS):
            return True
        cause = cause.__cause__
    return False


def retried(error: BaseException, ti: Any) -> bool:
    """
    Whether Airflow retries the task after ``error``: not after :data:`FINAL_ERRORS`, else while
    ``max_tries != 0 and try_number <= max_tries`` (3.3.2
    ``airflow/api_fastapi/execution_api/routes/task_instances.py:1292-1301``, 2.11.2
    ``TaskInstance.is_eligible_to_retry``). A task instance that does not say is not retried. A retry
    policy (Airflow 3.3) may still fail the task: then nothing is cancelled, as without ``cancel_on_kill``.
    """
    if isinstance(error, FINAL_ERRORS):
        return False
    try_number, max_tries = getattr(ti, "try_number", None), getattr(ti, "max_tries", None)
    if not isinstance(try_number, int) or not isinstance(max_tries, int):
        return False
    return max_tries != 0 and try_number <= max_tries


def _not_cancelled(ref: GenerationRef, error: LumaError) -> None:
    if isinstance(error, LumaNotFoundError):
        log.info("Luma generation %s no longer exists: nothing to cancel.", ref.id)
    else:
        log.warning("Cancelling Luma generation %s failed: %s", ref.id, error.message)


class CancelOnKill:
    """
    The worker half of ``cancel_on_kill``: :meth:`watch_for_kill` once the generations exist;
    Airflow's ``on_kill`` then cancels them if the task was marked failed. And at the deadline:
    :meth:`cancelling_at_deadline` around ``execute`` (each operator) and :meth:`resume_execution`.
    """

    cancel_on_kill: bool = False
    _kill_target: tuple[Any, LumaHook, list[GenerationRef]] | None = None

    def watch_for_kill(self, context: Any, hook: LumaHook, refs: Iterable[GenerationRef]) -> None:
        """From now on a kill of this task may cancel ``refs`` through ``hook`` (with ``cancel_on_kill`` only)."""
        if self.cancel_on_kill:
            self._kill_target = (context.get("ti"), hook, list(refs))

    def on_kill(self) -> None:
        """With ``cancel_on_kill``: when the task was marked failed, cancel its unfinished generations."""
        if self._kill_target is None:
            return
        ti, hook, refs = self._kill_target
        if killed_by_mark_failed(ti):
            cancelled = cancel_unfinished(hook, refs)
            told_cancelled(log, "Task marked failed", cancelled)

    @contextmanager
    def cancelling_at_deadline(self, context: Any, target: Target, *, reached: bool = False) -> Iterator[None]:
        """
        With ``cancel_on_kill``: when the block ends the task because its wait reached its deadline
        (:func:`ended_at_deadline`, or ``reached``), and for good (:func:`retried`: a retry waits for
        the same generations), cancel the unfinished generations of ``target()`` (``(hook,
        generations)``, asked only then), and let the same error go on. Nothing of the cancel is
        raised: its errors are logged.
        """
        try:
            yield
        except BaseException as error:
            if self.cancel_on_kill and (reached or ended_at_deadline(error)):
                ti: Any = context.get("ti") if isinstance(context, Mapping) else None
                if retried(error, ti):
                    log.info(
                        "The wait reached its deadline, but Airflow retries the task (try %s of %s follows, waiting "
                        "for the same generation): not cancelling.",
                        ti.try_number + 1,
                        ti.max_tries + 1,
                    )
                else:
                    _cancel_at_deadline(target)
            raise

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Any) -> Any:
        """
        Airflow's entry point after a deferral (``execute_complete`` with the trigger's event, or the
        deferral time-out): the deadline cancels here as in ``execute`` (:meth:`cancelling_at_deadline`).
        """
        reached = next_method == TRIGGER_FAILED_METHOD and (next_kwargs or {}).get("error") in DEFERRAL_TIMEOUT_ERRORS

        def target() -> tuple[LumaHook, list[Any]]:
            return self.resumed_generations(context, next_kwargs or {})

        with self.cancelling_at_deadline(context, target, reached=reached):
            return super().resume_execution(next_method, next_kwargs, context)  # type: ignore[misc]

    def resumed_generations(self, context: Any, next_kwargs: Mapping[str, Any]) -> tuple[LumaHook, list[Any]]:
        """The hook and the generations of a task resumed after its deferral (each operator says)."""
        raise NotImplementedError


def _cancel_at_deadline(target: Target) -> None:
    """Cancel what ``target()`` names, unless finished; one INFO line says what; errors are logged, never raised."""
    try:
        hook, generations = target()
        cancelled = cancel_unfinished(hook, generations)
    except Exception as error:
        log.warning(
            "Cancelling the Luma generation(s) at the wait's deadline failed (%s): %s",
            type(error).__name__,
            outcome.message(str(error)),
        )
        return
    told_cancelled(log, "The wait reached its deadline", cancelled)
