"""Downloading finished videos from the CDN: streamed, checked, and moved into place only when whole."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from airflow.providers.common.compat.sdk import ObjectStoragePath
from tenacity import Retrying, retry_if_exception, stop_after_attempt

from airflow_provider_luma.errors import LumaConnectionError, LumaError, LumaInputError, LumaResponseError
from airflow_provider_luma.hooks.transport import RETRY_BACKOFF, error_for_response, is_transient
from airflow_provider_luma.models import Generation, GenerationState
from airflow_provider_luma.version import __version__

#: Bytes read from the CDN and written per step: the video is streamed, never held in memory.
VIDEO_CHUNK_SIZE = 1024 * 1024
#: Retries of one download after transient CDN errors (5xx, 429, dropped or short transfers).
VIDEO_MAX_RETRIES = 3
#: Connect and read time-outs (seconds) of one CDN request.
VIDEO_TIMEOUT = (10.0, 60.0)


class VideoDownload:
    """
    Downloads of one hook: the CDN is called with a plain request, never with the API key.

    :param conn_id: The Luma connection, for messages.
    :param logger: Where progress is logged (the hook's logger).
    :param timeout: Connect and read time-outs (seconds) of one CDN request.
    """

    def __init__(
        self, conn_id: str, logger: logging.Logger | Any, timeout: tuple[float, float] = VIDEO_TIMEOUT
    ) -> None:
        self.conn_id = conn_id
        self.log = logger
        self.timeout = timeout

    def download(
        self,
        generation: Generation,
        destination: Any,
        *,
        chunk_size: int = VIDEO_CHUNK_SIZE,
        into_folder: bool | None = None,
        max_retries: int = VIDEO_MAX_RETRIES,
    ) -> Any:
        """Download the video of a completed ``generation``; see :meth:`LumaHook.download_video`."""
        completed = completed_generation(generation)
        target = video_target(destination, completed.id, into_folder=into_folder)
        ensure_parent(target)
        temporary = target.with_name(f"{target.name}.part-{uuid.uuid4().hex}")
        host = urlsplit(completed.video_url or "").hostname
        self.log.info("Downloading the video of Luma generation %s from %s to %s.", completed.id, host, target)
        retrying = Retrying(
            stop=stop_after_attempt(max_retries + 1),
            wait=RETRY_BACKOFF,
            retry=retry_if_exception(is_transient),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    size = self._stream(completed, temporary, chunk_size)
            _move_into_place(temporary, target)
        except BaseException:
            _remove_quietly(temporary)
            raise
        self.log.info("Wrote the video of Luma generation %s (%d bytes) to %s.", completed.id, size, target)
        return target

    def _stream(self, generation: Generation, temporary: Any, chunk_size: int) -> int:
        # A plain request, not the API session: the CDN must never see the API key.
        what = f"downloading the video of generation {generation.id}"
        headers = {"User-Agent": f"airflow-provider-luma/{__version__}", "Accept-Encoding": "identity"}
        assert generation.video_url is not None
        try:
            file = temporary.open("wb")  # opened first: an unwritable destination fails before any download
        except OSError as error:
            raise LumaInputError(
                f"The video destination {temporary.parent} is not writable: {error.strerror or error}."
            ) from None
        try:
            with (
                file,
                requests.get(generation.video_url, stream=True, headers=headers, timeout=self.timeout) as answer,
            ):
                if answer.status_code >= 400:
                    failure = error_for_response(
                        answer.status_code, answer.text, answer.headers, what=what, conn_id=self.conn_id
                    )
                    if not failure.transient:
                        # A 403/404 from the CDN means an expired or wrong link, not a bad API key.
                        failure = LumaError(
                            f"The video host answered {answer.status_code} while {what}: the link may have expired; "
                            "fetch the generation again for a fresh one.",
                            http_status=answer.status_code,
                        )
                    raise failure
                expected = answer.headers.get("Content-Length")
                written = 0
                head = b""
                for chunk in answer.iter_content(chunk_size=chunk_size):
                    if len(head) < 8:
                        head += chunk[: 8 - len(head)]
                        if len(head) == 8 and head[4:8] != b"ftyp":
                            # An HTML error page served with 200 must not end up named .mp4.
                            raise LumaResponseError(f"The video host sent something that is not an MP4 while {what}.")
                    file.write(chunk)
                    written += len(chunk)
                _sync_to_disk(file)
        except requests.exceptions.RequestException as error:
            raise LumaConnectionError(
                f"The video host dropped the connection while {what} ({type(error).__name__})."
            ) from None
        if written == 0:
            raise LumaConnectionError(f"The video host sent an empty body while {what}.")
        if expected is not None and expected.isdigit() and written != int(expected):
            raise LumaConnectionError(f"The video host sent {written} of {expected} bytes while {what}.")
        return written


def check_video_destination(destination: Any, *, into_folder: bool | None = None) -> None:
    """Fail early, with a clear :class:`LumaInputError`, when videos cannot be written to ``destination``."""
    target = video_target(destination, "write-check", into_folder=into_folder)
    ensure_parent(target)
    # On Airflow 2 an ObjectStoragePath is also a pathlib.Path: test for it first.
    if not isinstance(target, ObjectStoragePath):
        try:
            with tempfile.NamedTemporaryFile(dir=target.parent, prefix=".luma-write-check-"):
                pass
        except OSError as error:
            raise LumaInputError(
                f"The video destination {destination} is not writable: {error.strerror or error}."
            ) from None


def resolve_generation(generation: Any, fetch: Callable[[str], Generation]) -> Generation:
    """A :class:`Generation` from a dict, a ``Generation`` or an id (fetched with ``fetch``)."""
    if isinstance(generation, str):
        return fetch(generation)
    if isinstance(generation, Generation):
        return generation
    if isinstance(generation, dict) or hasattr(generation, "keys"):
        return Generation.from_dict(generation)
    raise LumaError(
        f"Cannot download the video of {type(generation).__name__} {generation!r}: "
        "give a generation dict, a Generation or a generation id."
    )


def completed_generation(generation: Generation) -> Generation:
    """``generation`` if it has a video to download; a clear :class:`LumaError` otherwise."""
    if generation.is_failed:
        raise LumaError(
            f"Luma generation {generation.id} failed ({generation.failure_reason or 'no reason given'}): "
            "it has no video to download."
        )
    if not generation.has_reached(GenerationState.COMPLETED):
        raise LumaError(
            f"Luma generation {generation.id} is {generation.state or 'in an unknown state'}, not completed: wait "
            "for it (LumaGenerationSensor, or the generate operator with wait_for_completion=True) first."
        )
    if not generation.video_url:
        raise LumaError(f"Luma generation {generation.id} is completed but the API reported no video URL.")
    return generation


def video_target(destination: Any, generation_id: str, *, into_folder: bool | None) -> Any:
    """Where the video of ``generation_id`` goes: ``destination`` itself, or ``<folder>/<id>.mp4``."""
    if isinstance(destination, ObjectStoragePath):
        folder = into_folder if into_folder is not None else destination.is_dir()
        return destination / f"{generation_id}.mp4" if folder else destination
    if not isinstance(destination, (str, os.PathLike)) or not str(destination).strip():
        raise LumaInputError(
            f"destination must be a local path or an ObjectStoragePath, not {type(destination).__name__} "
            f"{destination!r}."
        )
    text = os.fspath(destination)
    path = Path(text).expanduser()
    folder = into_folder if into_folder is not None else (text.endswith(("/", os.sep)) or path.is_dir())
    return path / f"{generation_id}.mp4" if folder else path


def ensure_parent(target: Any) -> None:
    """Create the folder ``target`` goes into, or say clearly why it cannot be."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise LumaInputError(
            f"Cannot create the folder {target.parent} for the video: {getattr(error, 'strerror', None) or error}."
        ) from None


def _move_into_place(temporary: Any, target: Any) -> None:
    if not isinstance(temporary, ObjectStoragePath):
        os.replace(temporary, target)  # atomic on one file system: readers see the old or the new file
        folder = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(folder)  # the rename itself survives a crash
        finally:
            os.close(folder)
    else:
        temporary.rename(target)  # object stores: copy and delete; the final name is only ever whole


def _remove_quietly(temporary: Any) -> None:
    with contextlib.suppress(Exception):
        if temporary.exists():
            temporary.unlink()


def _sync_to_disk(file: Any) -> None:
    # A local file reaches the disk before it is renamed, so a crash never leaves an empty "finished"
    # video; object-store files have no descriptor and are only whole once closed.
    file.flush()
    try:
        descriptor = file.fileno()
    except (AttributeError, OSError, ValueError):
        return
    os.fsync(descriptor)
