"""LumaHook: the Luma connection and every call to the API, sync (requests) and async (aiohttp)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Coroutine, Iterable, Sequence
from dataclasses import replace
from functools import cached_property
from typing import Any

from airflow.providers.common.compat.connection import get_async_connection, get_async_extra_dejson
from airflow.providers.common.compat.sdk import AirflowNotFoundException, BaseHook

from airflow_provider_luma import outcome
from airflow_provider_luma.connection_form import connection_form_widgets, ui_field_behaviour
from airflow_provider_luma.create_requests import CreateRequest, build_create_request
from airflow_provider_luma.errors import LumaConfigurationError
from airflow_provider_luma.hooks import connection_test, download, dream_machine, waits
from airflow_provider_luma.hooks.answers import error_for_response, parse_json
from airflow_provider_luma.hooks.endpoints import create_plan, fetch_plan, fetch_plans
from airflow_provider_luma.hooks.plans import Plan, aflattened, arun_plan, arun_plans, flattened, run_plan, run_plans
from airflow_provider_luma.hooks.settings import API_HOLD_SECONDS, DEFAULT_HOST, SETTINGS_CACHE, LumaSettings
from airflow_provider_luma.hooks.transport import AsyncTransport, SyncTransport
from airflow_provider_luma.models import Generation, GenerationRef, GenerationState, normalize_generation_refs
from airflow_provider_luma.waiting import Finished, Poll, Wait, WaitPacing

__all__ = [
    "API_HOLD_SECONDS",
    "DEFAULT_HOST",
    "LumaHook",
    "LumaSettings",
    "error_for_response",
    "parse_json",
]


class LumaHook(BaseHook):
    """
    Interact with Luma AI's Dream Machine video generation through the AI/ML API or Luma's own API.

    The connection's ``backend`` extra (by default chosen by its host: ``https://api.lumalabs.ai`` is
    ``luma``) says which. On the AI/ML API it speaks both of the service's endpoint families:
    ``luma-ai`` (the long-poll endpoints) and the universal video endpoint (``luma/ray-2``,
    ``luma/ray-3.2`` ...); a generation, a generation dict or an id of the ``<uuid>:luma/<model>``
    form says which family it lives in; a bare id uses the connection's ``api`` extra. On Luma's API
    (``dream-machine``) the same calls take the same model names and durations, mapped to Luma's, and
    generations can be cancelled (:meth:`cancel_generation`).

    Every method has an async twin (``a``-prefixed) for triggers and async tasks. Used as
    ``async with hook:``, the hook makes all its async calls on one HTTP session, shared with every
    other hook inside ``async with`` on the same event loop (a triggerer's waits share one
    connection pool) and closed when the last of them exits; without it, each async call opens and
    closes its own.

    :param luma_conn_id: The Airflow connection holding the API key (password) and, optionally,
        the host and tuning extras. Defaults to ``luma_default``.
    """

    conn_name_attr = "luma_conn_id"
    default_conn_name = "luma_default"
    conn_type = "luma"
    hook_name = "Luma AI"

    #: Kept for callers of the first release: the download's tuning now lives in :mod:`.download`.
    VIDEO_CHUNK_SIZE = download.VIDEO_CHUNK_SIZE
    VIDEO_MAX_RETRIES = download.VIDEO_MAX_RETRIES
    VIDEO_TIMEOUT = download.VIDEO_TIMEOUT

    def __init__(self, luma_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.luma_conn_id = luma_conn_id
        self._async_settings: LumaSettings | None = None
        self._async_transport: AsyncTransport | None = None

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """The connection form's standard fields (Airflow below 3.2; 3.2+ reads the provider info)."""
        return ui_field_behaviour()

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """The connection form's fields of the common extras (Airflow below 3.2; 3.2+ reads the provider info)."""
        return connection_form_widgets()

    # -- connection ------------------------------------------------------------------------------

    @cached_property
    def settings(self) -> LumaSettings:
        """The connection's settings (sync): read once per hook, and shared for a minute by the process's hooks."""
        return SETTINGS_CACHE.get(self.luma_conn_id, self._read_settings)

    async def asettings(self) -> LumaSettings:
        """The connection's settings, without blocking the event loop; one lookup for the process's waits."""
        if self._async_settings is None:
            self._async_settings = await SETTINGS_CACHE.aget(self.luma_conn_id, self._aread_settings)
        return self._async_settings

    def _read_settings(self) -> LumaSettings:
        try:
            conn: Any = self.get_connection(self.luma_conn_id)
        except AirflowNotFoundException:
            raise LumaConfigurationError(self._missing_connection_message()) from None
        settings = LumaSettings.from_connection(conn, conn.extra_dejson)
        outcome.remember_secret(settings.api_key)  # never in a message from now on
        return settings

    async def _aread_settings(self) -> LumaSettings:
        try:
            conn: Any = await get_async_connection(self.luma_conn_id, hook=type(self))
        except AirflowNotFoundException:
            raise LumaConfigurationError(self._missing_connection_message()) from None
        settings = LumaSettings.from_connection(conn, await get_async_extra_dejson(conn))
        outcome.remember_secret(settings.api_key)
        return settings

    def _reread_after_401(self) -> LumaSettings:
        """Read the connection past the cache (a 401: the key may have been rotated); the hook takes its key."""
        SETTINGS_CACHE.forget(self.luma_conn_id, rejected_key=self.settings.api_key)
        fresh = SETTINGS_CACHE.get(self.luma_conn_id, self._read_settings)
        self.__dict__["settings"] = replace(self.settings, api_key=fresh.api_key)
        return fresh

    async def _areread_after_401(self) -> LumaSettings:
        """Async twin of :meth:`_reread_after_401`."""
        settings = await self.asettings()
        SETTINGS_CACHE.forget(self.luma_conn_id, rejected_key=settings.api_key)
        fresh = await SETTINGS_CACHE.aget(self.luma_conn_id, self._aread_settings)
        self._async_settings = replace(settings, api_key=fresh.api_key)
        return fresh

    def _missing_connection_message(self) -> str:
        return (
            f"The Airflow connection {self.luma_conn_id!r} does not exist: add a connection of type 'luma' "
            f"with your API key as password (e.g. AIRFLOW_CONN_{self.luma_conn_id.upper()}="
            '\'{"conn_type": "luma", "password": "<key>"}\').'
        )

    @cached_property
    def _transport(self) -> SyncTransport:
        return SyncTransport(self.settings, refresh=self._reread_after_401)

    async def _atransport(self) -> AsyncTransport:
        if self._async_transport is None:
            return self._new_async_transport(await self.asettings())
        return self._async_transport

    def _new_async_transport(self, settings: LumaSettings) -> AsyncTransport:
        """A transport of ``settings``; outside ``async with``, each of its calls opens a session of its own."""
        return AsyncTransport(settings, refresh=self._areread_after_401)

    @property
    def _async_session(self) -> Any:
        """The shared aiohttp session while inside ``async with`` (``None`` outside)."""
        return self._async_transport._session if self._async_transport is not None else None

    def run(self, plan: Plan[Any]) -> Any:
        """Drive a plan of calls (see :mod:`airflow_provider_luma.hooks.plans`) in this thread."""
        return run_plan(self._transport, plan)

    async def arun(self, plan: Plan[Any]) -> Any:
        """Async twin of :meth:`run`."""
        return await arun_plan(await self._atransport(), plan)

    def run_all(self, plans: Sequence[Plan[Any]]) -> list[Any]:
        """Drive several plans at once (a thread each); their results in order."""
        return run_plans(self._transport, plans)

    async def arun_all(self, plans: Sequence[Plan[Any]]) -> list[Any]:
        """Async twin of :meth:`run_all` (a task each)."""
        return await arun_plans(await self._atransport(), plans)

    # -- async session -----------------------------------------------------------------------------

    async def __aenter__(self) -> LumaHook:
        if self._async_transport is not None:
            raise RuntimeError("This LumaHook is already open: use one `async with hook:` at a time.")
        transport = self._new_async_transport(await self.asettings())
        await transport.open()
        self._async_transport = transport
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        transport, self._async_transport = self._async_transport, None
        if transport is not None:
            await transport.close()

    # -- API: create -----------------------------------------------------------------------------

    def create_generation(self, prompt: str, **parameters: Any) -> Generation:
        """
        Submit a new generation (this costs money) and return it.

        The model decides the endpoint: ``luma/ray-2``, ``luma/ray-flash-2``, ``luma/ray-3.2`` and
        ``luma/ray-1-6`` (and any newer ``luma/...`` id) go to the universal endpoint; ``ray-2``,
        ``ray-flash-2``, ``ray-1-6`` or no model to the ``luma-ai`` endpoints.

        :param prompt: What the video shows; at most 2048 characters.
        :param parameters: ``model`` and the model's parameters: see
            :data:`~airflow_provider_luma.create_requests.CREATE_PARAMETERS` and the provider's docs.
        :raises LumaInputError: Before any call, for a parameter the model does not take or a bad value.
        """
        return self.submit_generation(build_create_request(prompt, **parameters))

    def submit_generation(self, request: CreateRequest) -> Generation:
        """Submit a request already checked by :func:`~airflow_provider_luma.create_requests.build_create_request`."""
        generation = self.run(create_plan(self.settings, request))
        self._log_created(generation)
        return generation

    async def acreate_generation(self, prompt: str, **parameters: Any) -> Generation:
        """Async twin of :meth:`create_generation` (same parameters)."""
        request = build_create_request(prompt, **parameters)
        generation = await self.arun(create_plan(await self.asettings(), request))
        self._log_created(generation)
        return generation

    def _log_created(self, generation: Generation) -> None:
        raw_model = generation.raw.get("model")
        model = outcome.storable_text(raw_model, 128) if isinstance(raw_model, str) else None
        self.log.info(
            "Created Luma generation %s (%s, %s endpoint%s).",
            generation.id,
            generation.state,
            generation.api,
            f", {model}" if model else "",
        )

    # -- API: fetch ------------------------------------------------------------------------------

    def refs(
        self, generations: Any, *, api: str | None = None, settings: LumaSettings | None = None
    ) -> list[GenerationRef]:
        """
        What a user passes as generations (ids, generation dicts, refs, a comma-separated string),
        as references whose family is decided: the one place each entry point normalizes its input.

        :param generations: One generation or several.
        :param api: The family of bare ids; default: the connection's ``api`` extra.
        :param settings: The connection's settings, when the caller has them (async code).
        """
        settings = settings or self.settings
        return [dream_machine.resolve(settings, ref) for ref in normalize_generation_refs(generations, api=api)]

    def get_generation(
        self, generation: Any, state: str | None = None, *, deadline: float | None = None, api: str | None = None
    ) -> Generation:
        """
        Fetch one generation. On the ``luma-ai`` endpoints, with ``state`` the server holds the call
        (up to ~30 s) until that state or a later one is reached; the universal endpoint answers at once.

        :param generation: The generation's id, or a generation dict (which says its endpoint family).
        :param state: ``queued``, ``dreaming`` or ``completed``; ``None`` answers at once.
        :param deadline: UNIX time by which the call (with its retries) gives up.
        :param api: The family of a bare id (``luma-ai`` or ``video``); default: the connection's ``api`` extra.
        """
        (ref,) = self.refs([generation], api=api)
        return self.run(fetch_plan(self.settings, ref, _target(state), deadline))

    async def aget_generation(
        self, generation: Any, state: str | None = None, *, deadline: float | None = None, api: str | None = None
    ) -> Generation:
        """Async twin of :meth:`get_generation`."""
        settings = await self.asettings()
        (ref,) = self.refs([generation], api=api, settings=settings)
        return await self.arun(fetch_plan(settings, ref, _target(state), deadline))

    def get_generations(
        self,
        generations: Iterable[Any],
        state: str | None = None,
        *,
        deadline: float | None = None,
        api: str | None = None,
    ) -> list[Generation]:
        """
        Fetch several generations, all calls at once: ``luma-ai`` ones through the multi-fetch endpoint,
        ``ids_per_request`` ids per call; universal ones one call each. With ``state``, every ``luma-ai``
        call is held (a long poll), so this takes about one server hold.

        :param generations: The ids or generation dicts.
        :param state: As for :meth:`get_generation`.
        :param deadline: UNIX time by which each call (with its retries) gives up.
        :param api: As for :meth:`get_generation`.
        """
        plans = fetch_plans(self.settings, self.refs(generations, api=api), _target(state), deadline)
        return flattened(self.run_all(plans))

    async def aget_generations(
        self,
        generations: Iterable[Any],
        state: str | None = None,
        *,
        deadline: float | None = None,
        api: str | None = None,
    ) -> list[Generation]:
        """Async twin of :meth:`get_generations`."""
        settings = await self.asettings()
        plans = fetch_plans(settings, self.refs(generations, api=api, settings=settings), _target(state), deadline)
        return flattened(await self.arun_all(plans))

    def poll(self, step: Poll) -> list[Generation]:
        """One poll of a wait: every call of it at once (see :func:`~.endpoints.fetch_plans`)."""
        plans = fetch_plans(self.settings, step.refs, step.target if step.hold else None, step.deadline, step.retries)
        return flattened(self.run_all(plans))

    def apoll(self, step: Poll) -> Coroutine[Any, Any, list[Generation]]:
        """
        Async twin of :meth:`poll`: ``await hook.apoll(step)``.

        Not ``async def``: once the settings are read it hands back the plan's own coroutine, so that a
        held poll keeps no frame of the hook's alive (thousands of them in a triggerer).
        """
        settings = self._async_settings
        if settings is None:
            return self._apoll_after_reading_settings(step)
        return self._apoll_with(settings, step)

    async def _apoll_after_reading_settings(self, step: Poll) -> list[Generation]:
        return await self._apoll_with(await self.asettings(), step)

    def _apoll_with(self, settings: LumaSettings, step: Poll) -> Coroutine[Any, Any, list[Generation]]:
        plans = fetch_plans(settings, step.refs, step.target if step.hold else None, step.deadline, step.retries)
        transport = self._async_transport or self._new_async_transport(settings)
        if len(plans) == 1:  # the usual poll
            return arun_plan(transport, plans[0])
        return aflattened(arun_plans(transport, plans))

    # -- API: cancel ------------------------------------------------------------------------------

    def cancel_generation(self, generation: Any, *, deadline: float | None = None) -> None:
        """
        Cancel a generation on Luma's own API: ``DELETE /generations/{id}``. Luma documents it as
        deleting the generation; whether that stops the render or its billing, it does not say.

        :param generation: The generation's id, or a generation dict.
        :param deadline: UNIX time by which the call (with its retries) gives up.
        :raises LumaInputError: On the AI/ML API, which has no cancel (nothing is sent).
        :raises LumaNotFoundError: When Luma has no such generation (already deleted, or never made).
        """
        (ref,) = self.refs([generation])
        self.run(dream_machine.cancel_plan(self.settings, ref, deadline))
        self.log.info("Cancelled Luma generation %s (deleted on Luma's API).", ref.id)

    async def acancel_generation(self, generation: Any, *, deadline: float | None = None) -> None:
        """Async twin of :meth:`cancel_generation`."""
        settings = await self.asettings()
        (ref,) = self.refs([generation], settings=settings)
        await self.arun(dream_machine.cancel_plan(settings, ref, deadline))
        self.log.info("Cancelled Luma generation %s (deleted on Luma's API).", ref.id)

    # -- API: wait -------------------------------------------------------------------------------

    def wait_for_generations(
        self,
        generations: Iterable[Any],
        state: str = "completed",
        *,
        timeout: float | None = None,
        api: str | None = None,
    ) -> list[Generation]:
        """
        Wait in this process until every generation reaches ``state`` (or a later non-failed state).

        Long-polls ``luma-ai`` generations and polls universal ones every ``poll_interval`` seconds;
        transient errors are retried until the deadline. Raises
        :class:`~airflow_provider_luma.errors.LumaGenerationFailedError` when one fails and
        :class:`~airflow_provider_luma.errors.LumaWaitTimeoutError` after ``timeout`` seconds.

        :param generations: The ids or generation dicts.
        :param state: ``queued``, ``dreaming`` or ``completed``.
        :param timeout: Seconds to wait at most (every call included); ``None`` waits as long as it takes.
        :param api: The family of bare ids; default: the connection's ``api`` extra.
        """
        wait = self.new_wait(generations, state, timeout=timeout, api=api)
        return outcome.settle(self.run_wait(wait), role="hook")

    def wait_for_generation(
        self, generation: Any, state: str = "completed", *, timeout: float | None = None, api: str | None = None
    ) -> Generation:
        """Wait for one generation; see :meth:`wait_for_generations`."""
        return self.wait_for_generations([generation], state, timeout=timeout, api=api)[0]

    async def await_for_generations(
        self,
        generations: Iterable[Any],
        state: str = "completed",
        *,
        timeout: float | None = None,
        api: str | None = None,
    ) -> list[Generation]:
        """Async twin of :meth:`wait_for_generations`."""
        wait = self.new_wait(generations, state, timeout=timeout, settings=await self.asettings(), api=api)
        return outcome.settle(await self.arun_wait(wait), role="hook")

    async def await_for_generation(
        self, generation: Any, state: str = "completed", *, timeout: float | None = None, api: str | None = None
    ) -> Generation:
        """Async twin of :meth:`wait_for_generation`."""
        return (await self.await_for_generations([generation], state, timeout=timeout, api=api))[0]

    def new_wait(
        self,
        generations: Iterable[Any],
        state: str,
        *,
        timeout: float | None = None,
        deadline: float | None = None,
        settings: LumaSettings | None = None,
        pacing: WaitPacing | None = None,
        logger: Any = None,
        api: str | None = None,
        report_progress: bool = False,
    ) -> Wait:
        """
        A :class:`~airflow_provider_luma.waiting.Wait` for these generations: one loop per endpoint
        family, paced as the connection says unless ``pacing`` is given.
        """
        settings = settings or self.settings
        if deadline is None and timeout is not None:
            deadline = time.time() + timeout
        return Wait.of(
            self.refs(generations, api=api, settings=settings),
            GenerationState.waitable(state),
            deadline=deadline,
            pacing=pacing or settings.pacing,
            logger=logger or self.log,
            report_progress=report_progress,
        )

    def run_wait(self, wait: Wait) -> Finished:
        """Drive a wait in this thread (one thread per endpoint family when it spans both) until it finishes."""
        return waits.run_wait(self.poll, wait)

    def arun_wait(self, wait: Wait) -> Coroutine[Any, Any, Finished]:
        """
        Drive a wait on the event loop until it finishes, on one HTTP session; families side by side:
        ``await hook.arun_wait(wait)``.

        Not ``async def``: inside ``async with`` it hands back the driver's own coroutine, so that a
        held wait keeps no frame of the hook's alive. Outside, the wait opens the hook's session for
        itself.
        """
        if self._async_transport is None:
            return self._arun_wait_in_session(wait)
        return waits.arun_wait(self.apoll, wait)

    async def _arun_wait_in_session(self, wait: Wait) -> Finished:
        opened_since = self._async_transport is not None  # between the call and the await
        async with contextlib.nullcontext() if opened_since else self:
            return await waits.arun_wait(self.apoll, wait)

    def check_once(
        self, wait: Wait, *, hold: bool, deadline: float | None = None, max_retries: int | None = None
    ) -> Finished | None:
        """
        One poll per family, judged by the wait's own rules: how the wait ended, or ``None`` while it
        goes on (see :meth:`~airflow_provider_luma.waiting.Wait.check`).

        :param wait: The wait (see :meth:`new_wait`).
        :param hold: Long-poll the ``luma-ai`` generations or ask for their state now.
        :param deadline: UNIX time by which each call gives up; default: the wait's deadline.
        :param max_retries: Retries of each call instead of the connection's ``max_retries`` (``0``: a
            quick look that leaves transient errors to a later check).
        """
        return waits.check_once(self.poll, wait, hold=hold, deadline=deadline, retries=max_retries)

    def poke(self, wait: Wait, *, deadline: float, keeps_state: bool) -> Finished | None:
        """
        One poke of a wait from a worker, by the wait's own rules (see
        :class:`~airflow_provider_luma.waiting.Poke`): how the wait ended, or ``None`` while it goes on.

        :param wait: The wait.
        :param deadline: UNIX time by which the poke (every call of it) is over.
        :param keeps_state: Whether the next poke sees this wait again (a sensor in ``poke`` mode).
        """
        return waits.run_poke(self.poll, wait, deadline=deadline, keeps_state=keeps_state)

    # -- connection test -------------------------------------------------------------------------

    def test_connection(self) -> tuple[bool, str]:
        """
        Check the key for free (the UI's **Test** button, ``airflow connections test``): the message
        names the endpoint families the key reaches, or what to fix. See
        :func:`~airflow_provider_luma.hooks.connection_test.check_connection`.
        """
        return connection_test.check_connection(self)

    # -- video download --------------------------------------------------------------------------

    def download_video(
        self,
        generation: Any,
        destination: Any,
        *,
        chunk_size: int = download.VIDEO_CHUNK_SIZE,
        into_folder: bool | None = None,
        max_retries: int = download.VIDEO_MAX_RETRIES,
    ) -> Any:
        """
        Download the video of a completed generation and return where it was written.

        The video is streamed from the CDN with a plain request (the API key is never sent there) into
        a temporary file next to the destination, checked against ``Content-Length``, and only then
        moved under its final name; a failed or interrupted download leaves nothing behind. Running it
        again overwrites the file atomically.

        :param generation: A generation dict (as the generate operator or the sensor return it), a
            :class:`~airflow_provider_luma.models.Generation`, or an id (then it is fetched first).
        :param destination: A local file path (``str`` or ``Path``), a folder (an existing one, or a
            path ending in ``/``: the video goes to ``<folder>/<generation id>.mp4``), or an
            ``ObjectStoragePath``. Missing parent folders are created.
        :param chunk_size: Bytes read and written per step.
        :param into_folder: ``True``: ``destination`` is a folder even if it does not exist yet;
            ``None`` (default): decide from the destination itself.
        :param max_retries: Retries after transient CDN errors.
        :return: The written file: a ``pathlib.Path``, or an ``ObjectStoragePath`` when one was given.
        """
        resolved = download.resolve_generation(generation, self.get_generation)
        return download.VideoDownload(
            self.luma_conn_id, self.log, self.VIDEO_TIMEOUT, settings=lambda: self.settings
        ).download(resolved, destination, chunk_size=chunk_size, into_folder=into_folder, max_retries=max_retries)

    def check_video_destination(self, destination: Any, *, into_folder: bool | None = None) -> None:
        """
        Fail early, with a clear :class:`~airflow_provider_luma.errors.LumaInputError`, when videos
        cannot be written to ``destination``.

        Creates the folder (or the file's parent folders) if missing. Local destinations are probed
        by creating and deleting a file; object storage is only checked when written to.

        :param destination: As for :meth:`download_video`.
        :param into_folder: As for :meth:`download_video`.
        """
        download.check_video_destination(destination, into_folder=into_folder)


def _target(state: str | None) -> GenerationState | None:
    return GenerationState.waitable(state) if state is not None else None
