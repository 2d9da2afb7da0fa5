"""LumaHook: the Luma connection and every call to the API, sync (requests) and async (aiohttp)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import replace
from functools import cached_property
from typing import Any

from airflow.providers.common.compat.connection import get_async_connection, get_async_extra_dejson
from airflow.providers.common.compat.sdk import AirflowNotFoundException, BaseHook

from airflow_provider_luma.connection_form import connection_form_widgets, ui_field_behaviour
from airflow_provider_luma.create_requests import CreateRequest, build_create_request
from airflow_provider_luma.errors import (
    LumaConfigurationError,
)
from airflow_provider_luma.hooks import connection_test, download, waits
from airflow_provider_luma.hooks.answers import error_for_response, parse_json
from airflow_provider_luma.hooks.endpoints import (
    chunks,
    create_plan,
    fetch_many_plan,
    fetch_plan,
)
from airflow_provider_luma.hooks.settings import API_HOLD_SECONDS, DEFAULT_HOST, SETTINGS_CACHE, LumaSettings
from airflow_provider_luma.hooks.transport import AsyncTransport, SyncTransport, arun_plan, run_plan
from airflow_provider_luma.models import (
    ApiFamily,
    Generation,
    GenerationRef,
    GenerationState,
    normalize_generation_refs,
)
from airflow_provider_luma.waiting import Finished, Poll, Wait, WaitLoop, WaitPacing

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
    Interact with Luma AI's Dream Machine video generation through the AI/ML API.

    Speaks both of the service's endpoint families: ``luma-ai`` (the long-poll endpoints) and the
    universal video endpoint (``luma/ray-2``, ``luma/ray-3.2`` ...). A generation, a generation dict
    or an id of the ``<uuid>:luma/<model>`` form says which family it lives in; a bare id uses the
    connection's ``api`` extra.

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
        return LumaSettings.from_connection(conn, conn.extra_dejson)

    async def _aread_settings(self) -> LumaSettings:
        try:
            conn: Any = await get_async_connection(self.luma_conn_id, hook=type(self))
        except AirflowNotFoundException:
            raise LumaConfigurationError(self._missing_connection_message()) from None
        return LumaSettings.from_connection(conn, await get_async_extra_dejson(conn))

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
            # outside `async with`: a session per call
            return AsyncTransport(await self.asettings(), refresh=self._areread_after_401)
        return self._async_transport

    @property
    def _async_session(self) -> Any:
        """The shared aiohttp session while inside ``async with`` (``None`` outside)."""
        return self._async_transport._session if self._async_transport is not None else None

    def run(self, plan: Any) -> Any:
        """Drive a plan of calls (see :mod:`airflow_provider_luma.hooks.transport`) in this thread."""
        return run_plan(self._transport, plan)

    async def arun(self, plan: Any) -> Any:
        """Async twin of :meth:`run`."""
        return await arun_plan(await self._atransport(), plan)

    # -- async session -----------------------------------------------------------------------------

    async def __aenter__(self) -> LumaHook:
        if self._async_transport is not None:
            raise RuntimeError("This LumaHook is already open: use one `async with hook:` at a time.")
        transport = AsyncTransport(await self.asettings(), refresh=self._areread_after_401)
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
        model = generation.raw.get("model") if isinstance(generation.raw.get("model"), str) else None
        self.log.info(
            "Created Luma generation %s (%s, %s endpoint%s).",
            generation.id,
            generation.state,
            generation.api,
            f", {model}" if model else "",
        )

    # -- API: fetch ------------------------------------------------------------------------------

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
        ref, target = self._one(generation, state, api, self.settings)
        return self.run(fetch_plan(self.settings, ref.id, ref.api or ApiFamily.LUMA_AI, target, deadline))

    async def aget_generation(
        self, generation: Any, state: str | None = None, *, deadline: float | None = None, api: str | None = None
    ) -> Generation:
        """Async twin of :meth:`get_generation`."""
        settings = await self.asettings()
        ref, target = self._one(generation, state, api, settings)
        return await self.arun(fetch_plan(settings, ref.id, ref.api or ApiFamily.LUMA_AI, target, deadline))

    @staticmethod
    def _one(
        generation: Any, state: str | None, api: str | None, settings: LumaSettings
    ) -> tuple[GenerationRef, GenerationState | None]:
        (ref,) = normalize_generation_refs([generation], parameter="generation_id", api=api)
        return ref.resolved(settings.api), (GenerationState.waitable(state) if state is not None else None)

    def get_generations(
        self,
        generations: Iterable[Any],
        state: str | None = None,
        *,
        deadline: float | None = None,
        api: str | None = None,
    ) -> list[Generation]:
        """
        Fetch several generations: ``luma-ai`` ones through the multi-fetch endpoint, ``ids_per_request``
        ids per call; universal ones one call each.

        With ``state`` and more ``luma-ai`` ids than one call carries, only the first call is held (a
        long poll); the others answer at once, so this never takes longer than one server hold.

        :param generations: The ids or generation dicts.
        :param state: As for :meth:`get_generation`.
        :param deadline: UNIX time by which each call (with its retries) gives up.
        :param api: As for :meth:`get_generation`.
        """
        result: list[Generation] = []
        target = GenerationState.waitable(state) if state is not None else None
        for family, ids in self._by_family(generations, api, self.settings).items():
            result.extend(
                self.poll(Poll(ids, target or GenerationState.COMPLETED, deadline or 0, bool(target), family))
            )
        return result

    async def aget_generations(
        self,
        generations: Iterable[Any],
        state: str | None = None,
        *,
        deadline: float | None = None,
        api: str | None = None,
    ) -> list[Generation]:
        """Async twin of :meth:`get_generations`; the calls are made concurrently."""
        target = GenerationState.waitable(state) if state is not None else None
        families = self._by_family(generations, api, await self.asettings())
        answers = await _gather(
            self.apoll(Poll(ids, target or GenerationState.COMPLETED, deadline or 0, bool(target), family))
            for family, ids in families.items()
        )
        return [generation for answer in answers for generation in answer]

    @staticmethod
    def _by_family(generations: Any, api: str | None, settings: LumaSettings) -> dict[ApiFamily, list[str]]:
        families: dict[ApiFamily, list[str]] = {}
        for ref in normalize_generation_refs(generations, api=api):
            families.setdefault(ref.resolved(settings.api).api or ApiFamily.LUMA_AI, []).append(ref.id)
        return families

    def poll(self, step: Poll) -> list[Generation]:
        """One poll of a wait: the ids of one family, held when ``step.hold`` and the family can hold."""
        settings = self.settings
        deadline = step.deadline or None
        if step.api is ApiFamily.VIDEO:
            return [self.run(fetch_plan(settings, i, step.api, None, deadline)) for i in step.generation_ids]
        target = step.target if step.hold else None
        if len(step.generation_ids) == 1:
            return [self.run(fetch_plan(settings, step.generation_ids[0], step.api, target, deadline))]
        result: list[Generation] = []
        for index, chunk in enumerate(chunks(step.generation_ids, settings.ids_per_request)):
            # Only the first chunk is held: one call never holds for longer than one server hold.
            result.extend(self.run(fetch_many_plan(settings, chunk, target if index == 0 else None, deadline)))
        return result

    async def apoll(self, step: Poll) -> list[Generation]:
        """Async twin of :meth:`poll`; every call of the step is made concurrently (and every chunk held)."""
        settings = await self.asettings()
        deadline = step.deadline or None
        target = step.target if step.hold else None
        if step.api is ApiFamily.VIDEO:
            return await _gather(
                self.arun(fetch_plan(settings, i, step.api, None, deadline)) for i in step.generation_ids
            )
        if len(step.generation_ids) == 1:
            return [await self.arun(fetch_plan(settings, step.generation_ids[0], step.api, target, deadline))]
        plans = [
            fetch_many_plan(settings, c, target, deadline)
            for c in chunks(step.generation_ids, settings.ids_per_request)
        ]
        answers = await _gather(self.arun(plan) for plan in plans)
        return [generation for answer in answers for generation in answer]

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
        :param timeout: Seconds to wait at most; ``None`` waits as long as it takes.
        :param api: The family of bare ids; default: the connection's ``api`` extra.
        """
        return self.run_wait(self.new_wait(generations, state, timeout=timeout, api=api)).result()

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
        return (await self.arun_wait(wait)).result()

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
    ) -> Wait:
        """
        A :class:`~airflow_provider_luma.waiting.Wait` for these generations: one loop per endpoint
        family, paced as the connection says unless ``pacing`` is given.
        """
        settings = settings or self.settings
        if deadline is None and timeout is not None:
            deadline = time.time() + timeout
        target = GenerationState.waitable(state)
        refs = [ref.resolved(settings.api) for ref in normalize_generation_refs(generations, api=api)]
        loops = [
            WaitLoop(
                [ref.id for ref in refs if ref.api is family],
                target,
                deadline=deadline,
                pacing=pacing or settings.pacing,
                logger=logger or self.log,
                api=family,
            )
            for family in ApiFamily
            if any(ref.api is family for ref in refs)
        ]
        return Wait(loops, [ref.id for ref in refs])

    def run_wait(self, wait: Wait) -> Finished:
        """Drive a wait in this thread (one thread per endpoint family when it spans both) until it finishes."""
        return waits.run_wait(self.poll, wait)

    async def arun_wait(self, wait: Wait) -> Finished:
        """Drive a wait on the event loop until it finishes, on one HTTP session; families side by side."""
        if self._async_transport is None:
            async with self:
                return await waits.arun_wait(self.apoll, wait)
        return await waits.arun_wait(self.apoll, wait)

    def check_once(
        self, wait: Wait, *, hold: bool, deadline: float | None = None, max_retries: int | None = None
    ) -> Finished | None:
        """
        One poll per family, judged by the wait's own rules: how the wait ended, or ``None`` while it
        goes on. Universal generations first: they answer at once, a held long poll may not.

        :param wait: The wait (see :meth:`new_wait`).
        :param hold: Long-poll the ``luma-ai`` generations (a sensor's poke) or ask for their state now.
        :param deadline: UNIX time by which each call gives up; default: the wait's deadline.
        :param max_retries: Retries of each call instead of the connection's ``max_retries`` (``0``: a
            quick look that leaves transient errors to a later check).
        """
        if max_retries is not None and max_retries != self.settings.max_retries:
            hook = LumaHook(luma_conn_id=self.luma_conn_id)
            hook.settings = replace(self.settings, max_retries=max_retries)  # type: ignore[misc]
            return hook.check_once(wait, hold=hold, deadline=deadline)
        return waits.check_once(self.poll, wait, hold=hold, deadline=deadline)

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


async def _gather(calls: Iterable[Any]) -> list[Any]:
    """Run ``calls`` concurrently; when one fails (or the caller is cancelled), stop the others with it."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
