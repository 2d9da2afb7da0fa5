"""Downloading finished videos from the CDN: streamed, checked, and moved into place only when whole."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from airflow.providers.common.compat.sdk import ObjectStoragePath
from tenacity import Retrying, retry_if_exception, stop_after_attempt, stop_after_delay

from airflow_provider_luma.errors import LumaConnectionError, LumaError, LumaInputError, LumaResponseError
from airflow_provider_luma.hooks import video_url
from airflow_provider_luma.hooks.answers import MAX_ERROR_BODY_BYTES, answer_text, error_for_response, read_capped
from airflow_provider_luma.hooks.deadlines import GuardedAdapter, Watchdog
from airflow_provider_luma.hooks.sessions import environment_proxy
from airflow_provider_luma.hooks.settings import LumaSettings
from airflow_provider_luma.hooks.transport import RETRY_BACKOFF, is_transient
from airflow_provider_luma.hooks.video_url import (
    MAX_REDIRECTS,
    LumaVideoUrlRefusedError,
    Resolver,
    Target,
    VideoHostPolicy,
)
from airflow_provider_luma.models import Generation, GenerationState
from airflow_provider_luma.version import __version__

#: Bytes read from the CDN and written per step: the video is streamed, never held in memory.
VIDEO_CHUNK_SIZE = 1024 * 1024
#: Retries of one download after transient CDN errors (5xx, 429, dropped or short transfers).
VIDEO_MAX_RETRIES = 3
#: Connect and read time-outs (seconds) of one CDN request.
VIDEO_TIMEOUT = (10.0, 60.0)
#: A download (every attempt and redirect) takes at most this long, plus the time to read
#: ``max_video_bytes`` at :data:`VIDEO_MIN_RATE`: see :func:`download_limit`.
VIDEO_TIME_FLOOR = 10.0
#: The slowest transfer a download of ``max_video_bytes`` is given time for, in bytes per second.
VIDEO_MIN_RATE = 512 * 1024


def download_limit(max_video_bytes: int) -> float:
    """
    Seconds a download of one video may take in all: :data:`VIDEO_TIME_FLOOR` plus ``max_video_bytes``
    at :data:`VIDEO_MIN_RATE` (the default 2 GiB: about 68 minutes; 100 MB: about 3 minutes).
    """
    return VIDEO_TIME_FLOOR + max_video_bytes / VIDEO_MIN_RATE


class VideoDownload:
    """
    Downloads of one hook: the CDN is called with a plain request, never with the API key.

    The video URL comes from an API answer, so it is checked before any connection, and again on
    each redirect, by :class:`~airflow_provider_luma.hooks.video_url.VideoHostPolicy` (https only,
    never a link-local address such as the cloud metadata service, no loopback or private address
    unless the connection allows it); the request then goes to the address that was checked. Behind
    a proxy from the environment, the proxy resolves names: the URL is checked, the proxy trusted.

    :param conn_id: The Luma connection, for messages.
    :param logger: Where progress is logged (the hook's logger).
    :param timeout: Connect and read time-outs (seconds) of one CDN request.
    :param settings: Gives the connection's settings (video host rules, ``max_video_bytes``) when a
        download first needs them.
    :param resolver: Resolves video host names; default: :data:`.video_url.default_resolver`.
    """

    def __init__(
        self,
        conn_id: str,
        logger: logging.Logger | Any,
        timeout: tuple[float, float] = VIDEO_TIMEOUT,
        *,
        settings: Callable[[], LumaSettings],
        resolver: Resolver | None = None,
    ) -> None:
        self.conn_id = conn_id
        self.log = logger
        self.timeout = timeout
        self._settings = settings
        self.resolver = resolver

    @property
    def settings(self) -> LumaSettings:
        """The connection's settings, read only when a download needs them (a dict needs no connection before)."""
        return self._settings()

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
        limit = download_limit(self.settings.max_video_bytes)
        deadline = time.time() + limit
        retrying = Retrying(
            stop=stop_after_attempt(max_retries + 1) | stop_after_delay(limit),
            wait=RETRY_BACKOFF,
            retry=retry_if_exception(is_transient),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    size = self._stream(completed, temporary, chunk_size, deadline)
            _move_into_place(temporary, target)
        except BaseException:
            _remove_quietly(temporary)
            raise
        self.log.info("Wrote the video of Luma generation %s (%d bytes) to %s.", completed.id, size, target)
        return target

    def _stream(self, generation: Generation, temporary: Any, chunk_size: int, deadline: float) -> int:
        what = f"downloading the video of generation {generation.id}"
        policy = VideoHostPolicy.for_settings(self.settings, self.resolver or video_url.default_resolver)
        url = generation.video_url
        assert url is not None
        try:
            file = temporary.open("wb")  # opened first: an unwritable destination fails before any download
        except OSError as error:
            raise LumaInputError(
                f"The video destination {temporary.parent} is not writable: {error.strerror or error}."
            ) from None
        with file:
            for _ in range(MAX_REDIRECTS + 1):
                hop = policy.check(url, proxied=_proxied(url), what=what)  # before any connection
                # The whole download ends by its deadline, however slowly the host sends (see .deadlines).
                with Watchdog(deadline) as watchdog:
                    timeout = (min(self.timeout[0], watchdog.remaining), min(self.timeout[1], watchdog.remaining))
                    try:
                        with _session(hop) as session, _get(session, hop, timeout) as answer:
                            if answer.is_redirect:  # followed here, so that each hop is checked
                                url = urljoin(url, answer.headers["Location"])
                                continue
                            written = self._save(answer, file, chunk_size, what, deadline)
                    except Exception as error:
                        if watchdog.fired or isinstance(error, TimeoutError):
                            limit = download_limit(self.settings.max_video_bytes)
                            raise LumaConnectionError(
                                f"The video host took longer than the download's limit of {limit:.0f} s (scaled to "
                                f"max_video_bytes) while {what}."
                            ) from None
                        if not isinstance(error, requests.exceptions.RequestException):
                            raise
                        raise LumaConnectionError(
                            f"The video host dropped the connection while {what} ({type(error).__name__})."
                        ) from None
                _sync_to_disk(file)
                return written
        raise LumaVideoUrlRefusedError(f"The video host redirected more than {MAX_REDIRECTS} times while {what}.")

    def _save(self, answer: requests.Response, file: Any, chunk_size: int, what: str, deadline: float) -> int:
        if answer.status_code >= 400:
            body = read_capped(answer, MAX_ERROR_BODY_BYTES)  # an error page is cut, never read whole
            text = answer_text(answer.status_code, body, MAX_ERROR_BODY_BYTES, what=what)
            failure = error_for_response(answer.status_code, text, answer.headers, what=what, conn_id=self.conn_id)
            if not failure.transient:
                # A 403/404 from the CDN means an expired or wrong link, not a bad API key.
                failure = LumaError(
                    f"The video host answered {answer.status_code} while {what}: the link may have expired; "
                    "fetch the generation again for a fresh one.",
                    http_status=answer.status_code,
                )
            raise failure
        limit = self.settings.max_video_bytes
        expected = answer.headers.get("Content-Length", "")
        if expected.isdigit() and int(expected) > limit:
            raise _too_large(what, f"{int(expected)} bytes by its Content-Length", limit)
        written = 0
        head = b""
        for chunk in answer.iter_content(chunk_size=chunk_size):
            if len(head) < 8:
                head += chunk[: 8 - len(head)]
                if len(head) == 8 and head[4:8] != b"ftyp":
                    # An HTML error page served with 200 must not end up named .mp4.
                    raise _not_an_mp4(what)
            written += len(chunk)
            if written > limit:
                raise _too_large(what, f"more than {limit} bytes", limit)
            file.write(chunk)
            if time.time() >= deadline:
                raise TimeoutError(what)
        if written == 0:
            raise LumaConnectionError(f"The video host sent an empty body while {what}.")
        if expected.isdigit() and written != int(expected):
            raise LumaConnectionError(f"The video host sent {written} of {expected} bytes while {what}.")
        if written < 8:  # too short to hold an MP4's first box
            raise _not_an_mp4(what)
        return written


def _proxied(url: str) -> bool:
    return environment_proxy(url) is not None


class _PinnedAdapter(GuardedAdapter):
    """Connects to the checked address of a URL rewritten to it; TLS (SNI, certificate) still names the host."""

    def __init__(self, hostname: str) -> None:
        self._hostname = hostname  # before super(): it builds the pool manager
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        """The pool manager, with the host name for SNI and the certificate check."""
        kwargs.update(server_hostname=self._hostname, assert_hostname=self._hostname)
        super().init_poolmanager(*args, **kwargs)


def _session(hop: Target) -> requests.Session:
    # A plain session, not the API's: the CDN must never see the API key.
    session = requests.Session()
    session.mount("http://", GuardedAdapter())
    session.mount("https://", _PinnedAdapter(hop.hostname) if hop.address is not None else GuardedAdapter())
    return session


def _get(session: requests.Session, hop: Target, timeout: tuple[float, float]) -> requests.Response:
    headers = {"User-Agent": f"airflow-provider-luma/{__version__}", "Accept-Encoding": "identity"}
    proxies: dict[str, Any] = {}
    if hop.address is not None:
        headers["Host"] = urlsplit(hop.url).netloc  # the URL now names the address
        proxies = {"http": None, "https": None}  # the checked address is reached directly
    return session.get(
        hop.pinned_url, stream=True, headers=headers, timeout=timeout, allow_redirects=False, proxies=proxies
    )


def _not_an_mp4(what: str) -> LumaResponseError:
    return LumaResponseError(f"The video host sent something that is not an MP4 while {what}.")


def _too_large(what: str, size: str, limit: int) -> LumaError:
    # Not transient: the same video will be as large on the next try.
    return LumaError(
        f"The video host sent {size} while {what}, above the connection's max_video_bytes ({limit}): "
        "raise that extra if the video is really that large."
    )


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
        fetched = fetch(generation)
        asked = generation.strip()
        # An answer naming another generation (a broken or hostile server) must not be saved under this id.
        if fetched.id != asked and fetched.id.split(":", 1)[0] != asked.split(":", 1)[0]:
            raise LumaResponseError(f"The Luma API answered a fetch of generation {asked} with {fetched.id}.")
        return fetched
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


def video_file_name(generation_id: str) -> str:
    """
    The file name of a generation's video in a folder: the id with anything but letters, digits,
    ``.``, ``_`` and ``-`` made ``_``, and no leading dot (``<uuid>:luma/ray-2`` → ``<uuid>_luma_ray-2.mp4``).
    An id comes from an answer or an upstream task, so it must never name a path.
    """
    stem = re.sub(r"^\.+", "_", re.sub(r"[^A-Za-z0-9._-]", "_", generation_id))
    return f"{stem[:200] or 'generation'}.mp4"


def video_target(destination: Any, generation_id: str, *, into_folder: bool | None) -> Any:
    """Where the video of ``generation_id`` goes: ``destination`` itself, or ``<folder>/<safe id>.mp4``."""
    name = video_file_name(generation_id)
    if isinstance(destination, ObjectStoragePath):
        folder = into_folder if into_folder is not None else destination.is_dir()
        if not folder:
            return destination
        stored = destination / name
        if stored.name != name:  # a store that reads the name as a path: refuse rather than write elsewhere
            raise _outside(generation_id, destination)
        return stored
    if not isinstance(destination, (str, os.PathLike)) or not str(destination).strip():
        raise LumaInputError(
            f"destination must be a local path or an ObjectStoragePath, not {type(destination).__name__} "
            f"{destination!r}."
        )
    text = os.fspath(destination)
    path = Path(text).expanduser()
    folder = into_folder if into_folder is not None else (text.endswith(("/", os.sep)) or path.is_dir())
    if not folder:
        return path
    target = path / name
    # Belt and braces: the file must land in the folder itself (the name is not followed, as a link
    # already under it is replaced by the rename, never written through).
    folder_path = path.resolve()
    if Path(os.path.normpath(folder_path / name)).parent != folder_path:
        raise _outside(generation_id, destination)
    return target


def _outside(generation_id: str, destination: Any) -> LumaInputError:
    return LumaInputError(f"The video of generation {generation_id!r} would be written outside {destination}.")


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
