"""The Luma connection, read and checked once: host, key, and the extras that tune calls and waits."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import os
import re
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_provider_luma.connection_form import DEFAULT_HOST
from airflow_provider_luma.errors import LumaConfigurationError
from airflow_provider_luma.models import ApiFamily
from airflow_provider_luma.outcome import safe_url
from airflow_provider_luma.version import __version__
from airflow_provider_luma.waiting import MAX_SECONDS, PACING_FLOORS, WaitPacing, checked_number

if TYPE_CHECKING:
    from airflow.models import Connection

log = logging.getLogger(__name__)

#: How long the API holds a long poll at most; a read time-out must exceed it.
API_HOLD_SECONDS = 30.0
#: The names the service's documents give the long-poll parameter; ``none`` pins "no hold".
HOLD_PARAMETER_NAMES = ("state", "status", "none")
#: The least call budget a connection may set: one call in ten seconds.
MIN_CALLS_PER_SECOND = 0.1
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}
#: One entry of the ``video_hosts`` extra: a host name, or ``*.`` and a domain.
_VIDEO_HOST = re.compile(r"^(\*\.)?[a-z0-9-]+(\.[a-z0-9-]+)*$")


@dataclass(frozen=True)
class LumaSettings:
    """
    Everything a call needs from the Luma connection, read once per hook.

    :param conn_id: The connection id (for messages).
    :param base_url: Scheme, host and optional port/path prefix of the API.
    :param api_key: The API key (the connection's password).
    :param timeout: Read time-out of one call in seconds; above the server's 30 s hold.
    :param connect_timeout: Seconds to establish a connection.
    :param max_retries: Retries of one call after transient errors (429, 5xx, dropped connections).
    :param ids_per_request: Most ids sent in one multi-fetch call.
    :param min_poll_interval: Least seconds between two long polls of a wait (see :class:`WaitPacing`).
    :param poll_interval: Seconds between two polls of the universal endpoint, which holds no request.
    :param max_backoff: Cap in seconds of a wait's back-off after failed polls.
    :param comma_separated_ids: Send multi-fetch ids as ``generation_ids=A,B`` instead of the
        default ``generation_ids[]=A&generation_ids[]=B`` (both documented; for proxies that mangle ``[]``).
    :param api: The endpoint family of ids that do not say theirs (a bare UUID).
    :param long_poll_hold: How long the server holds a long poll at most (the service: 30 s); an answer
        much sooner, with nothing at the target, means the server did not read the hold parameter.
    :param single_hold_param: Pin the single fetch's long-poll parameter (``state``, ``status`` or
        ``none``); unset: found out by the hook.
    :param multi_hold_param: The same for the multi fetch.
    :param max_video_bytes: Largest video a download accepts, in bytes (default 2 GiB).
    :param allow_private_video_hosts: Download videos from loopback and private addresses too
        (always allowed when the connection's own host is loopback, as for the simulator).
    :param video_hosts: The only host names videos are downloaded from (``*.example.com`` also
        matches sub-domains); empty: any public host.
    :param max_calls_per_second: The process's call budget for this URL and key, in calls per second
        (see :mod:`~airflow_provider_luma.hooks.budget`); ``None``: no budget.
    :param max_call_burst: Calls beyond that rate that may go at once (with a rate only; default 0).
    """

    conn_id: str
    base_url: str
    api_key: str
    timeout: float = 60.0
    connect_timeout: float = 10.0
    max_retries: int = 5
    ids_per_request: int = 6
    min_poll_interval: float = 5.0
    poll_interval: float = 10.0
    max_backoff: float = 60.0
    comma_separated_ids: bool = False
    api: ApiFamily = ApiFamily.LUMA_AI
    long_poll_hold: float = API_HOLD_SECONDS
    single_hold_param: str | None = None
    multi_hold_param: str | None = None
    max_video_bytes: int = 2 * 1024**3
    allow_private_video_hosts: bool = False
    video_hosts: tuple[str, ...] = ()
    max_calls_per_second: float | None = None
    max_call_burst: int | None = None

    def __repr__(self) -> str:  # never show the key, even in a debugger or a traceback
        return f"LumaSettings(conn_id={self.conn_id!r}, base_url={self.base_url!r}, api_key='***')"

    @classmethod
    def from_connection(cls, conn: Connection, extras: Mapping[str, Any]) -> LumaSettings:
        """Read and check the connection; raise :class:`LumaConfigurationError` saying what to fix."""
        conn_id = conn.conn_id or "luma"
        api_key = (conn.password or "").strip()
        if not api_key:
            raise LumaConfigurationError(
                f"Connection {conn_id!r} has no API key: put your AI/ML API key in its password field."
            )
        base_url = _base_url(conn)
        allow_http = _flag(extras, conn_id, "allow_insecure_http")
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise LumaConfigurationError(f"Connection {conn_id!r} has an invalid host {safe_url(base_url)!r}.")
        if parts.query or parts.fragment or base_url.endswith(("?", "#")):
            # Never quoted whole: a query or fragment may hold a token.
            raise LumaConfigurationError(
                f"Connection {conn_id!r} has a query or fragment in its host {safe_url(base_url)!r}: give the base "
                "URL only."
            )
        if parts.scheme == "http" and not allow_http and not is_loopback(parts.hostname):
            raise LumaConfigurationError(
                f"Connection {conn_id!r} points at {safe_url(base_url)!r} over plain http, which would send the API "
                "key in clear text: use https, or set the extra allow_insecure_http to true if you really mean it."
            )
        api = extras.get("api") or ApiFamily.LUMA_AI.value
        try:
            family = ApiFamily(str(api).strip().lower())
        except ValueError:
            raise LumaConfigurationError(
                f"Extra 'api' of connection {conn_id!r} is {api!r}: use 'luma-ai' or 'video'."
            ) from None
        settings = cls(
            conn_id=conn_id,
            base_url=base_url,
            api_key=api_key,
            timeout=_seconds(extras, conn_id, "timeout", cls.timeout, 1.0),
            connect_timeout=_seconds(extras, conn_id, "connect_timeout", cls.connect_timeout, 0.1),
            max_retries=_whole(extras, conn_id, "max_retries", cls.max_retries, 0),
            ids_per_request=_whole(extras, conn_id, "ids_per_request", cls.ids_per_request, 1),
            min_poll_interval=_seconds(extras, conn_id, "min_poll_interval", cls.min_poll_interval),
            poll_interval=_seconds(extras, conn_id, "poll_interval", cls.poll_interval),
            max_backoff=_seconds(extras, conn_id, "max_backoff", cls.max_backoff),
            comma_separated_ids=_flag(extras, conn_id, "comma_separated_ids"),
            api=family,
            long_poll_hold=_seconds(extras, conn_id, "long_poll_hold", cls.long_poll_hold, 0.1),
            single_hold_param=_hold_name(extras, conn_id, "single_hold_param"),
            multi_hold_param=_hold_name(extras, conn_id, "multi_hold_param"),
            max_video_bytes=_whole(extras, conn_id, "max_video_bytes", cls.max_video_bytes, minimum=1),
            allow_private_video_hosts=_flag(extras, conn_id, "allow_private_video_hosts"),
            video_hosts=_video_hosts(extras, conn_id),
            max_calls_per_second=_number(extras, conn_id, "max_calls_per_second", minimum=MIN_CALLS_PER_SECOND),
            max_call_burst=_optional_whole(extras, conn_id, "max_call_burst", minimum=0),
        )
        if settings.max_call_burst is not None and settings.max_calls_per_second is None:
            log.warning(
                "Extra 'max_call_burst' of connection %r is set without 'max_calls_per_second': no budget applies.",
                conn_id,
            )
        if settings.timeout <= settings.long_poll_hold and not is_loopback(parts.hostname):
            log.warning(
                "Extra 'timeout' of connection %r is %s s, not above the API's %s s hold: long polls will time out "
                "and be retried. Use about 60.",
                conn_id,
                settings.timeout,
                settings.long_poll_hold,
            )
        return settings

    @property
    def pacing(self) -> WaitPacing:
        """How this connection's waits space their calls."""
        return WaitPacing(
            min_poll_interval=self.min_poll_interval, poll_interval=self.poll_interval, max_backoff=self.max_backoff
        )

    @cached_property
    def headers(self) -> Mapping[str, str]:
        """The headers of every API call (the only place the key is used); built once, read-only."""
        return MappingProxyType(
            {
                "Authorization": f"Bearer {self.api_key}",
                "Accept": "application/json",
                "User-Agent": f"airflow-provider-luma/{__version__}",
            }
        )

    def read_timeout(self, deadline: float | None) -> float:
        """The read time-out of one call: the configured one, cut short by the wait's deadline."""
        if deadline is None:
            return self.timeout
        return max(0.5, min(self.timeout, deadline - time.time()))


def _base_url(conn: Connection) -> str:
    host = (conn.host or "").strip().rstrip("/") or DEFAULT_HOST
    _refuse_ambiguous_host(host, conn.conn_id)
    if "://" not in host:
        if host.count(":") > 1 and not host.startswith("["):
            host = f"[{host}]"  # a bare IPv6 address
        scheme = (conn.schema or "").strip().lower()
        host = f"{scheme if scheme in ('http', 'https') else 'https'}://{host}"
    parts = urlsplit(host)
    try:
        has_port = parts.port is not None
    except ValueError:
        raise LumaConfigurationError(f"Connection {conn.conn_id!r} has an invalid host {safe_url(host)!r}.") from None
    if conn.port and not has_port and parts.hostname:
        hostname = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        host = f"{parts.scheme}://{hostname}:{conn.port}{parts.path}"
    return host


def _refuse_ambiguous_host(host: str, conn_id: str | None) -> None:
    """Refuse host texts that clients read differently, or that carry credentials; never echo them."""
    if "\\" in host:
        # urlsplit takes "http://evil\\@localhost" for localhost, urllib3 and browsers for "evil": the
        # plain-http guard would check one host and the key would go to the other.
        raise LumaConfigurationError(
            f"Connection {conn_id!r} has a backslash in its host, which HTTP clients read in different ways: remove it."
        )
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in host):
        raise LumaConfigurationError(f"Connection {conn_id!r} has a space or control character in its host.")
    authority = host.split("://", 1)[-1].split("/", 1)[0]
    if "@" in authority:
        # requests would send them as Basic auth instead of the bearer key; aiohttp refuses them.
        raise LumaConfigurationError(
            f"Connection {conn_id!r} has a user name or password in its host URL: remove them; the API key "
            "belongs in the connection's password field."
        )


def is_loopback(hostname: str) -> bool:
    """Whether ``hostname`` names this machine (``localhost`` or a loopback address)."""
    if hostname.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def _hold_name(extras: Mapping[str, Any], conn_id: str, name: str) -> str | None:
    value = extras.get(name)
    if value is None or value == "":
        return None
    text = str(value).strip().lower()
    if text not in HOLD_PARAMETER_NAMES:
        raise LumaConfigurationError(
            f"Extra {name!r} of connection {conn_id!r} is {value!r}: use one of {', '.join(HOLD_PARAMETER_NAMES)}."
        )
    return text


def _video_hosts(extras: Mapping[str, Any], conn_id: str) -> tuple[str, ...]:
    # A list of names, or one comma-separated string; "*.example.com" also matches sub-domains.
    value = extras.get("video_hosts")
    if value is None or value == "":
        return ()
    items = value.split(",") if isinstance(value, str) else value if isinstance(value, (list, tuple)) else [None]
    names = tuple(item.strip().lower().rstrip(".") if isinstance(item, str) else "" for item in items)
    if not all(_VIDEO_HOST.match(name) for name in names):
        raise LumaConfigurationError(
            f"Extra 'video_hosts' of connection {conn_id!r} is {value!r}: give a list of host names, "
            'e.g. ["cdn.example.com", "*.cdn.example.com"].'
        )
    return names


def _flag(extras: Mapping[str, Any], conn_id: str, name: str) -> bool:
    value = extras.get(name)
    if value is None or value == "":
        return False
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    if isinstance(value, bool):
        return value
    raise LumaConfigurationError(f"Extra {name!r} of connection {conn_id!r} is {value!r}: expected true or false.")


def _number(extras: Mapping[str, Any], conn_id: str, name: str, **limits: Any) -> float | None:
    value = extras.get(name)
    if value is None or value == "":
        return None
    what = f"Extra {name!r} of connection {conn_id!r}"
    return checked_number(value, what=what, error=LumaConfigurationError, **limits)


def _seconds(extras: Mapping[str, Any], conn_id: str, name: str, default: float, minimum: float | None = None) -> float:
    """A time extra: finite, at least ``minimum`` (default: its pacing floor), at most a day."""
    floor = PACING_FLOORS[name] if minimum is None else minimum
    number = _number(extras, conn_id, name, minimum=floor, maximum=MAX_SECONDS)
    return default if number is None else number


def _optional_whole(extras: Mapping[str, Any], conn_id: str, name: str, minimum: int) -> int | None:
    number = _number(extras, conn_id, name, minimum=minimum, whole=True)
    return None if number is None else int(number)


def _whole(extras: Mapping[str, Any], conn_id: str, name: str, default: int, minimum: int) -> int:
    number = _number(extras, conn_id, name, minimum=minimum, whole=True)
    return default if number is None else int(number)


#: Seconds a process keeps a connection's settings before reading the connection again.
SETTINGS_TTL = 60.0
#: Seconds within which a 401 does not read a connection read again (see :meth:`SettingsCache.forget`).
REREAD_AFTER = 1.0


class SettingsCache:
    """
    The settings of each connection, kept for :data:`SETTINGS_TTL` seconds per process: a triggerer's
    thousands of waits read the connection once (each read is a round trip to the supervisor, or
    the secrets backend), not once per wait.

    Concurrent async reads of one connection on one event loop make a single lookup. An environment
    connection (``AIRFLOW_CONN_<ID>``) is told apart by a digest of its value, so a changed variable
    is read at once. Holds no key in its keys; a 401 should :meth:`forget` the entry.

    :param ttl: Seconds an entry is kept.
    :param clock: Monotonic seconds (tests may replace it).
    """

    def __init__(self, ttl: float = SETTINGS_TTL, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._entries: dict[tuple[str, str | None], tuple[float, LumaSettings]] = {}
        self._reading: dict[tuple[Any, tuple[str, str | None]], asyncio.Future[LumaSettings]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SettingsCache(ttl={self.ttl!r}, entries={len(self._entries)})"

    @staticmethod
    def _key(conn_id: str) -> tuple[str, str | None]:
        value = os.environ.get(f"AIRFLOW_CONN_{conn_id.upper()}")
        return conn_id, (hashlib.sha256(value.encode()).hexdigest() if value is not None else None)

    def get(self, conn_id: str, read: Callable[[], LumaSettings]) -> LumaSettings:
        """The settings of ``conn_id``: kept ones while fresh, else ``read()`` (and kept)."""
        key = self._key(conn_id)
        entry = self._entries.get(key)
        if entry is not None and entry[0] > self.clock():
            return entry[1]
        settings = read()
        self._put(key, settings)
        return settings

    async def aget(self, conn_id: str, read: Callable[[], Awaitable[LumaSettings]]) -> LumaSettings:
        """Async twin of :meth:`get`: one ``read()`` at a time per connection and event loop."""
        key = self._key(conn_id)
        entry = self._entries.get(key)
        if entry is not None and entry[0] > self.clock():
            return entry[1]
        flight = (asyncio.get_running_loop(), key)
        reading = self._reading.get(flight)
        if reading is not None:
            try:
                return await asyncio.shield(reading)
            except asyncio.CancelledError:
                if reading.cancelled():  # the reader was cancelled, not this task: read anew
                    return await self.aget(conn_id, read)
                raise
        future: asyncio.Future[LumaSettings] = asyncio.get_running_loop().create_future()
        self._reading[flight] = future
        try:
            settings = await read()
        except Exception as error:  # the waiters get the same error; none of it is kept
            future.set_exception(error)
            future.exception()  # retrieved: no "never retrieved" warning when none waits
            raise
        except BaseException:  # cancelled: a waiter reads for itself
            future.cancel()
            raise
        finally:
            self._reading.pop(flight, None)
        self._put(key, settings)
        future.set_result(settings)
        return settings

    def _put(self, key: tuple[str, str | None], settings: LumaSettings) -> None:
        with self._lock:
            self._entries[key] = (self.clock() + self.ttl, settings)

    def forget(self, conn_id: str, rejected_key: str | None = None) -> None:
        """
        Drop what is kept of ``conn_id``; with ``rejected_key`` (after a 401: the key may have been
        rotated), only entries holding that key and read more than :data:`REREAD_AFTER` seconds
        ago: a thousand waits turned away at once make one fresh read, not a thousand.
        """
        with self._lock:
            now = self.clock()
            for key, (expires, settings) in list(self._entries.items()):
                if key[0] != conn_id:
                    continue
                if rejected_key is not None and (
                    settings.api_key != rejected_key or expires - self.ttl > now - REREAD_AFTER
                ):
                    continue
                del self._entries[key]

    def clear(self) -> None:
        """Drop everything (for tests)."""
        with self._lock:
            self._entries.clear()


#: The process's cache of connection settings.
SETTINGS_CACHE = SettingsCache()
