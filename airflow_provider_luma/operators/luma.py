"""LumaGenerateVideoOperator: generate a video (and wait for it); the download operator lives in :mod:`.download`."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.common.compat.sdk import (
    AirflowFailException,
    AirflowSkipException,
    BaseOperator,
    Context,
)

from airflow_provider_luma import cancel, outcome
from airflow_provider_luma.cancel import TRIGGER_FAILED_METHOD
from airflow_provider_luma.create_requests import CREATE_PARAMETERS, CreateRequest, build_create_request
from airflow_provider_luma.errors import LumaError, LumaGenerationFailedError, LumaInputError, LumaNotFoundError
from airflow_provider_luma.hooks.luma import LumaHook
from airflow_provider_luma.models import (
    ApiFamily,
    Generation,
    GenerationState,
    parse_state,
)
from airflow_provider_luma.operators import lineage
from airflow_provider_luma.operators.download import LumaDownloadVideoOperator, api_namespace
from airflow_provider_luma.operators.links import (
    GENERATE,
    GENERATION_ID_XCOM_KEY,
    VIDEO_URL_XCOM_KEY,
    LumaVideoLinks,
    video_links,
)
from airflow_provider_luma.operators.links import (
    LumaVideoLink as LumaVideoLink,  # where DAGs serialized before 0.3 name it
)
from airflow_provider_luma.operators.parse_checks import names_task
from airflow_provider_luma.operators.retries import (
    REUSE_STATE_KEY,
    forget_generation,
    not_retrying,
    pushed_generation_id,
    request_fingerprint,
)
from airflow_provider_luma.sensors.luma import DEFERRAL_TIMEOUT_MARGIN, is_literal
from airflow_provider_luma.triggers.luma import LumaGenerationTrigger
from airflow_provider_luma.waiting import Finished

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage

#: How long the generate operator waits for ``completed`` unless told otherwise.
DEFAULT_WAIT_TIMEOUT = timedelta(hours=1)
#: The operator's create parameters: the prompt and every parameter any model takes (one definition).
_CREATE_FIELDS = ("prompt", *CREATE_PARAMETERS)


def normalize_keyframes(keyframes: Any) -> Any:
    """
    Turn generations given as keyframes into the API's ``{"type": "generation", "id": ...}`` form.

    A keyframe may be a generation dict as the generate operator or the sensor return it (e.g.
    ``generate.output``) or a :class:`~airflow_provider_luma.models.Generation`; such a generation
    must be completed (only completed generations can be extended or interpolated). Anything else
    is returned as is, for :func:`~airflow_provider_luma.create_requests.build_create_request` to check.

    :param keyframes: ``{"frame0": ..., "frame1": ...}`` or ``None``.
    """
    if not isinstance(keyframes, Mapping):
        return keyframes
    return {slot: _normalize_frame(slot, frame) for slot, frame in keyframes.items()}


def _normalize_frame(slot: Any, frame: Any) -> Any:
    if isinstance(frame, Generation):
        frame = frame.to_dict()
    # A generation object has an "id" but no keyframe "type": it stands for itself.
    if not isinstance(frame, Mapping) or "type" in frame or "id" not in frame:
        return frame
    state = frame.get("state")
    if state is not None and parse_state(state) is not GenerationState.COMPLETED:
        raise LumaInputError(
            f"keyframes.{slot} is generation {frame['id']}, which is {state}: only a completed generation can be "
            "extended or interpolated; wait for it first (wait_for_completion=True or LumaGenerationSensor)."
        )
    return {"type": "generation", "id": frame["id"]}


class LumaGenerateVideoOperator(cancel.CancelOnKill, LumaVideoLinks, BaseOperator):
    """
    Generate a video with Luma's Dream Machine and, by default, wait until it is completed.

    The model decides the endpoint: ``luma/ray-2``, ``luma/ray-flash-2``, ``luma/ray-3.2`` and
    ``luma/ray-1-6`` (and any newer ``luma/...`` id, sent as is) use the service's universal endpoint;
    ``ray-2``, ``ray-flash-2``, ``ray-1-6`` or no model use the ``luma-ai`` endpoints and their long
    poll. Each model takes only its own parameters, checked when the DAG is parsed::

        # Ray 3.2 on the universal endpoint: HDR (5 s at 720p/1080p), or edit another video
        LumaGenerateVideoOperator(task_id="hdr", prompt="Neon rain", model="luma/ray-3.2", hdr=True, resolution="1080p")
        LumaGenerateVideoOperator(
            task_id="edit", prompt="Make it winter", model="luma/ray-3.2", edit_type="video_edit",
            source_video_url=hdr.output,
        )

    With Ray 2 and the ``luma-ai`` models, the mode follows from ``keyframes``::

        # text-to-video
        LumaGenerateVideoOperator(task_id="t2v", prompt="A red fox in fresh snow", aspect_ratio="16:9")

        # image-to-video: start from an image (frame0), optionally end on another (frame1)
        LumaGenerateVideoOperator(
            task_id="i2v",
            prompt="The fox walks away",
            keyframes={
                "frame0": {"type": "image", "url": "https://example.com/start.jpg"},
                "frame1": {"type": "image", "url": "https://example.com/end.jpg"},
            },
        )

        # extend a completed generation forwards (frame0) or backwards (frame1); a generation dict
        # such as another generate task's output is accepted in place of {"type": "generation", "id": ...}
        LumaGenerateVideoOperator(task_id="extend", prompt="It starts to snow", keyframes={"frame0": t2v.output})
        LumaGenerateVideoOperator(task_id="prequel", prompt="Dawn breaks", keyframes={"frame1": t2v.output})

        # interpolate between two completed generations
        LumaGenerateVideoOperator(
            task_id="bridge", prompt="Seamless transition", keyframes={"frame0": t2v.output, "frame1": extend.output}
        )

    The generation id goes to XCom (key ``generation_id``) as soon as the generation exists; the
    return value is the generation as a plain dict (``id``, ``state``, ``video_url``, ...), which
    :class:`~airflow_provider_luma.sensors.luma.LumaGenerationSensor` and
    :class:`LumaDownloadVideoOperator` accept.

    Each run submits a new, paid generation, but a **retry** does not pay twice: on Airflow 3.3+ the
    generation's id is kept in the task state store as soon as it exists, and a retry of the same task
    instance reuses it while it is ``queued``, ``dreaming`` or ``completed`` and the rendered request
    is unchanged (a ``failed`` one is replaced). Success clears the record, so clearing the task
    gives a new video. Should writing the record fail, the task fails without retries, naming the id.

    Airflow 2.11 to 3.2 keep no state between tries, so a retry could only submit anew. There, once
    the generation exists, a wait that times out or ends in an error, a crashed trigger and the
    deferral time-out fail the task **without retries** (``AirflowFailException``); the message names
    the generation, and ``LumaGenerationSensor(generation_id="<id>")`` can take the wait over. Only a
    ``failed`` generation is left to Airflow's retries, which submit a new one. On every version, a
    create whose answer is lost or unreadable fails without retries: the generation may exist.

    .. seealso::
        For more information on how to use this operator, see the provider's README.

    :param prompt: What the video shows; at most 2048 characters. (templated)
    :param model: ``luma/ray-2``, ``luma/ray-flash-2``, ``luma/ray-3.2``, ``luma/ray-1-6`` (universal
        endpoint) or ``ray-2`` (the default), ``ray-flash-2``, ``ray-1-6`` (``luma-ai`` endpoints). (templated)
    :param aspect_ratio: ``1:1``, ``16:9``, ``9:16``, ``4:3``, ``3:4``, ``21:9`` or ``9:21`` (Ray 3.2:
        not ``9:21``). (templated)
    :param resolution: ``540p``, ``720p``, ``1080p`` or ``4k``; Ray 3.2: ``360p`` to ``1080p``. (templated)
    :param duration: Seconds: 5 or 9 (``"5s"``/``"9s"`` also accepted); Ray 3.2: 5 or 10. (templated)
    :param loop: Whether the video should loop seamlessly. (templated)
    :param keyframes: Ray 2 and ``luma-ai`` models: ``{"frame0": ..., "frame1": ...}``, each
        ``{"type": "image", "url": ...}``, ``{"type": "generation", "id": ...}`` or a completed
        generation dict. (templated)
    :param callback_url: ``luma-ai`` models only: a URL the service POSTs the generation to on state
        changes. (templated)
    :param edit_type: Ray 3.2 only, sent as the API's ``type``: ``video`` (default), ``video_edit`` or
        ``video_reframe``. (templated)
    :param hdr: Ray 3.2 only: HDR video (5 s at 720p or 1080p). (templated)
    :param exr_export: Ray 3.2 only: also export EXR frames (needs ``hdr``). (templated)
    :param image_url: Ray 3.2 only: the first frame. (templated)
    :param last_image_url: Ray 3.2 only: the last frame. (templated)
    :param source_video_url: Ray 3.2 only, sent as the API's ``video_url``: the video to edit or
        reframe (required by those types); a completed generation dict stands for its video. (templated)
    :param luma_conn_id: The Luma connection.
    :param wait_for_completion: Wait until the generation is completed (default); ``False`` returns
        right after submitting, with the generation still queued.
    :param deferrable: Wait in the triggerer (default), holding no worker slot; ``False`` waits in
        the worker with long polls.
    :param wait_timeout: How long to wait for completion at most (a ``timedelta`` or seconds); the
        task then fails. Default one hour.
    :param report_progress: While waiting, report every state on the way (``queued``, ``dreaming``,
        ``completed``), each logged with the seconds since the generation's creation: each long poll
        holds for the state after the latest seen instead of ``completed``, at most one more call per
        state. Default ``False`` (one long poll for ``completed``, the fewest calls).
    :param cancel_on_kill: Cancel the generation (Luma's ``DELETE``) when a user marks the task failed
        while it waits: in the worker (``on_kill``), or while deferred on Airflow 3.3+ (the trigger's
        ``on_kill``); and when the wait reaches ``wait_timeout``, deferred or not (in the worker, as
        the time-out fails the task; on a try Airflow retries, the retry waits for it instead). Never
        on clear or mark-success, never once ``completed`` or ``failed``. Needs a connection to Luma's
        own API (the AI/ML API has no cancel). Default ``False``: a kill keeps the paid video.
    """

    template_fields: Sequence[str] = (*_CREATE_FIELDS, "luma_conn_id")
    template_fields_renderers: ClassVar[dict[str, str]] = {"keyframes": "json"}
    operator_extra_links = video_links(GENERATE, 1)
    ui_color = "#b69cf2"

    @names_task
    def __init__(
        self,
        *,
        prompt: str,
        model: str | None = None,
        aspect_ratio: str | None = None,
        resolution: str | None = None,
        duration: str | int | None = None,
        loop: bool | None = None,
        keyframes: Mapping[str, Any] | None = None,
        callback_url: str | None = None,
        edit_type: str | None = None,
        hdr: bool | None = None,
        exr_export: bool | None = None,
        image_url: str | None = None,
        last_image_url: str | None = None,
        source_video_url: Any = None,
        luma_conn_id: str = LumaHook.default_conn_name,
        wait_for_completion: bool = True,
        deferrable: bool = True,
        wait_timeout: timedelta | float = DEFAULT_WAIT_TIMEOUT,
        report_progress: bool = False,
        cancel_on_kill: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.cancel_on_kill = bool(cancel_on_kill)
        self.prompt = prompt
        self.aspect_ratio = aspect_ratio
        self.model = model
        self.resolution = resolution
        self.duration = duration
        self.loop = loop
        self.keyframes = keyframes
        self.callback_url = callback_url
        self.edit_type = edit_type
        self.hdr = hdr
        self.exr_export = exr_export
        self.image_url = image_url
        self.last_image_url = last_image_url
        self.source_video_url = source_video_url
        self.luma_conn_id = luma_conn_id
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.wait_timeout = _as_timedelta(wait_timeout)
        self.report_progress = bool(report_progress)
        # Check what is known now, at DAG parse time; templates and XComArgs are checked when rendered.
        self._create_request(literal_only=True)

    @cached_property
    def hook(self) -> LumaHook:
        """The Luma hook."""
        return LumaHook(luma_conn_id=self.luma_conn_id)

    def _create_request(self, *, literal_only: bool = False) -> CreateRequest:
        values = {name: getattr(self, name) for name in _CREATE_FIELDS}
        known = all(is_literal(value) for value in values.values())
        if literal_only:
            # A placeholder prompt and None for the rest let each literal value be checked on its own.
            values = {name: value if is_literal(value) else None for name, value in values.items()}
            # Only a template or XComArg prompt is unknown yet; a literal None is an error now.
            values["prompt"] = "placeholder" if not is_literal(self.prompt) else self.prompt
            if not is_literal(self.model):
                return CreateRequest(ApiFamily.LUMA_AI)  # which parameters are allowed is only known once rendered
        values["keyframes"] = normalize_keyframes(values["keyframes"])
        return build_create_request(**values, cross_checks=known or not literal_only)

    def execute(self, context: Context) -> dict[str, Any]:
        """Submit the generation (or reuse an earlier try's), then, unless told not to, wait for it."""
        body = self._create_request()
        cancel.require_cancel(self.hook, self.cancel_on_kill)  # before paying
        generation = self._reusable_generation(context, body) or self._submit(context, body)
        self.watch_for_kill(context, self.hook, [generation.ref])
        # A sync wait that reaches wait_timeout cancels with cancel_on_kill (a deferred one: resume_execution).
        at_deadline = self.cancelling_at_deadline(context, lambda: (self.hook, [generation.ref]))
        with self._no_second_payment(context, generation.id), at_deadline:
            if not self.wait_for_completion:
                result = self._result(generation, body)  # storable, checked: only then is the record forgotten
                forget_generation(context)
                return result
            return self._wait(context, generation)

    def _reusable_generation(self, context: Context, body: CreateRequest) -> Generation | None:
        """The generation an earlier try of this task instance submitted, if it is still usable."""
        store = context.get("task_state_store")
        ti = context["ti"]
        if store is None:
            if ti.try_number > 1:
                self.log.warning(
                    "This Airflow keeps no task state between tries (Airflow 3.3+ does): submitting a new "
                    "generation; one submitted by an earlier try, if any, is not reused."
                )
            return None
        record = store.get(REUSE_STATE_KEY)
        if not isinstance(record, Mapping) or not record.get("id"):
            return None
        previous_id, previous_try = str(record["id"]), record.get("try_number", "?")
        if record.get("fingerprint") != request_fingerprint(self.luma_conn_id, body):
            self.log.info(
                "The request changed since try %s (generation %s): submitting a new one.", previous_try, previous_id
            )
            return None
        try:
            generation = self.hook.get_generation({"id": previous_id, "api": record.get("api")})
        except LumaNotFoundError:
            self.log.info("Previous generation %s no longer exists: submitting a new one.", previous_id)
            return None
        if generation.is_failed:
            self.log.info("Previous generation %s failed: submitting a new one.", previous_id)
            return None
        self.log.info("Reusing generation %s from try %s (%s).", previous_id, previous_try, generation.state)
        self._push_generation(context, generation)
        return generation

    def _submit(self, context: Context, body: CreateRequest) -> Generation:
        """Submit a new (paid) generation; record and push its id before anything else can fail."""
        try:
            generation = self.hook.submit_generation(body)
        except LumaError as error:
            if error.maybe_created:
                # Its answer was lost: a retry could pay for a second generation. Let a person decide.
                raise AirflowFailException(
                    f"{error.message} Not retrying automatically, so as not to pay twice; clear the task to "
                    "submit again."
                ) from None
            raise
        store = context.get("task_state_store")
        if store is not None:
            record: dict[str, Any] = {
                "id": generation.id,
                "api": generation.api.value if generation.api else None,
                "fingerprint": request_fingerprint(self.luma_conn_id, body),
                "try_number": context["ti"].try_number,
            }
            # Stored before any wait, so a retry after a crash or a failed wait reconnects to it.
            try:
                store.set(REUSE_STATE_KEY, record)
            except Exception as error:
                # Unrecorded, the generation is unknown to a retry, which would pay for another one.
                self._push_generation(context, generation)
                raise AirflowFailException(
                    not_retrying(
                        f"Recording Luma generation {generation.id} in the task state store failed "
                        f"({type(error).__name__}: {error}).",
                        generation.id,
                        "a retry would not know it and would pay for a new one",
                    )
                ) from error
        self._push_generation(context, generation)
        return generation

    def _push_generation(self, context: Context, generation: Generation) -> None:
        # Pushed before any wait, so the id is known even if the wait fails or the worker dies.
        context["ti"].xcom_push(key=GENERATION_ID_XCOM_KEY, value=generation.id)

    def _wait(self, context: Context, generation: Generation) -> dict[str, Any]:
        """Wait for ``generation`` to complete: deferred to the triggerer, or here in the worker."""
        deadline = time.time() + self.wait_timeout.total_seconds()
        (ref,) = self.hook.refs([generation])
        wait = self.hook.new_wait([ref], GenerationState.COMPLETED.value, deadline=deadline)
        wait.report_progress = self.report_progress
        if not self.deferrable:
            # With report_progress the create answer is the first state reported; without, as before.
            known = wait.observe([generation]) if self.report_progress else None
            return self._finish(context, known or self.hook.run_wait(wait))
        finished = wait.observe([generation])
        if finished is not None:
            return self._finish(context, finished)
        self.log.info("Deferring until Luma generation %s is completed (at most %s).", generation.id, self.wait_timeout)
        self.defer(
            trigger=LumaGenerationTrigger(
                refs=[{"id": ref.id, "api": str(ref.api)}],
                target_state=GenerationState.COMPLETED.value,
                luma_conn_id=self.luma_conn_id,
                deadline=deadline,
                report_progress=self.report_progress,
                cancel_on_kill=self.cancel_on_kill,
            ),
            method_name="execute_complete",
            kwargs={"generation_id": generation.id},
            timeout=self.wait_timeout + DEFERRAL_TIMEOUT_MARGIN,
        )
        raise AssertionError("unreachable: defer() raises TaskDeferred")

    def execute_complete(
        self, context: Context, event: dict[str, Any] | None = None, generation_id: str | None = None
    ) -> dict[str, Any]:
        """
        Turn the trigger's event into the completed generation, or fail the task with the reason.

        :param event: The trigger's event.
        :param generation_id: The generation waited for (passed on by ``defer``; absent in tasks
            deferred by an older release of this provider).
        """
        with self._no_second_payment(context, generation_id or pushed_generation_id(context)):
            return self._finish(context, outcome.read_event(event))

    def resumed_generations(self, context: Context, next_kwargs: Mapping[str, Any]) -> tuple[LumaHook, list[Any]]:
        """The generation a resumed task waited for (what a deadline cancels): passed on by ``defer``, else its XCom."""
        generation_id = next_kwargs.get("generation_id") or pushed_generation_id(context)
        return self.hook, [generation_id] if generation_id else []

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """
        Resume after the deferral; a crashed trigger or the deferral time-out (which never reach
        :meth:`execute_complete`) follow the same rule as a failed wait: without a task state store,
        no retry (it would pay for a new generation).
        """
        if next_method != TRIGGER_FAILED_METHOD:
            return super().resume_execution(next_method, next_kwargs, context)
        with self._no_second_payment(context, pushed_generation_id(context)):
            return super().resume_execution(next_method, next_kwargs, context)

    @contextmanager
    def _no_second_payment(self, context: Context, generation_id: str | None) -> Iterator[None]:
        """
        Once the generation exists, fail without retries where no task state survives a try (Airflow
        2.11-3.2): a retry could not find it and would pay for a new one. With a store, the retry reuses it.
        """
        try:
            yield
        except (LumaGenerationFailedError, AirflowFailException, AirflowSkipException):
            raise  # a failed generation is replaced by a retry on purpose; the others already decide
        except Exception as error:
            if context.get("task_state_store") is not None:
                raise
            # TaskDeferralError says "Trigger failure" / "Trigger timeout": its name makes that readable.
            reason = outcome.message(
                error.message if isinstance(error, LumaError) else f"The wait failed ({type(error).__name__}: {error})."
            )
            raise AirflowFailException(
                not_retrying(
                    reason,
                    generation_id,
                    "this Airflow keeps no task state between tries (Airflow 3.3+ does), so a retry would pay "
                    "for a new one",
                )
            ) from error

    def _finish(self, context: Context, finished: Finished) -> dict[str, Any]:
        """The wait's ending as the task's result, or the failure :func:`.outcome.settle` raises."""
        (generation,) = outcome.settle(finished, role="generate")
        # Built and checked storable first: had anything failed, the retry must still find the generation.
        result = self._result(generation)
        if generation.video_url:
            context["ti"].xcom_push(key=VIDEO_URL_XCOM_KEY, value=outcome.storable_video_url(generation))
        self.remember_videos([generation])
        # Succeeded: a later run (a cleared task) must get a new video, not this one.
        forget_generation(context)
        self.log.info("Luma generation %s is completed: %s", generation.id, result.get("video_url") or "no video URL")
        return result

    def _result(self, generation: Generation, body: CreateRequest | None = None) -> dict[str, Any]:
        """The task's result: the generation dict and the key-free summary of the request (``request_summary``)."""
        body = body or self._create_request()
        summary = {lineage.REQUEST_SUMMARY_KEY: lineage.request_summary(body)}
        result = outcome.generation_result(generation, summary)
        self._lineage_result = result
        return result

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """
        OpenLineage of the finished task: the keyframes, frame images and source video (or source
        generations) as inputs, the generation as the output (namespace ``aimlapi://<host>``, name its
        id), and the ``luma`` run facet with the prompt, model and duration. Needs
        ``apache-airflow-providers-openlineage`` (the ``openlineage`` extra), which calls it.
        """
        result = getattr(self, "_lineage_result", None)
        if result is None:
            generation_id = task_instance.xcom_pull(task_ids=self.task_id, key=GENERATION_ID_XCOM_KEY)
            result = {"id": generation_id} if isinstance(generation_id, str) and generation_id else None
        try:
            request: CreateRequest | None = self._create_request()
        except LumaError:
            request = None
        inputs = {name: getattr(self, name) for name in lineage.INPUT_FIELDS}
        return lineage.generate_lineage(api_namespace(self.hook), request, inputs, result)


def _as_timedelta(value: timedelta | float) -> timedelta:
    if isinstance(value, bool) or not isinstance(value, (timedelta, int, float)):
        raise LumaInputError(f"wait_timeout must be a timedelta or seconds, not {value!r}.")
    result = value if isinstance(value, timedelta) else timedelta(seconds=value)
    if result <= timedelta(0):
        raise LumaInputError(f"wait_timeout must be positive, not {value!r}.")
    return result


__all__ = [
    "GENERATION_ID_XCOM_KEY",
    "REUSE_STATE_KEY",
    "LumaDownloadVideoOperator",
    "LumaGenerateVideoOperator",
    "LumaVideoLink",
    "normalize_keyframes",
    "request_fingerprint",
]
