"""The Luma connection, read and checked once: host, key, and the extras that tune calls and waits."""

from __future__ import annotations

import asyncio
import difflib
import hashlib
import ipaddress
import logging
import math
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

from airflow_provider_luma.errors import LumaConfigurationError
from airflow_provider_luma.models import ApiFamily
from airflow_provider_luma.outcome import safe_url
from airflow_provider_luma.settings_table import API_HOLD_SECONDS, DEFAULT_HOST, DEFAULTS, SETTING, SETTINGS, Setting
from airflow_provider_luma.version import __version__
from airflow_provider_luma.waiting import WaitPacing, checked_number

if TYPE_CHECKING:
    from airflow.models import Connection

log = logging.getLogger(__name__)

__all__ = ["API_HOLD_SECONDS", "DEFAULT_HOST", "SETTINGS_CACHE", "LumaSettings", "SettingsCache", "is_loopback"]

#: The names the service's documents give the long-poll parameter; ``none`` pins "no hold".
HOLD_PARAMETER_NAMES = SETTING["single_hold_param"].choices
#: The least call budget a connection may set: one call in ten seconds.
MIN_CALLS_PER_SECOND = SETTING["max_calls_per_second"].minimum
_DEFAULT_API = ApiFamily(DEFAULTS["api"])
_DEFAULT_PORTS = {"http": 80, "https": 443}
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}
#: One entry of the ``video_hosts`` extra: a host name, or ``*.`` and a domain.
_VIDEO_HOST = re.compile(r"^(\*\.)?[a-z0-9-]+(\.[a-z0-9-]+)*$")
#: What separates the names of a ``video_hosts`` text: commas, blanks, new lines.
_HOST_SEPARATORS = re.compile(r"[,\s]+")


def _with_every_setting(cls: type) -> type:
    """
    Give the class a field (its default from the table) for every setting it does not declare, so a
    new extra is one entry of :data:`~airflow_provider_luma.settings_table.SETTINGS`; code that reads it
    by name may declare it (typed) like the others.
    """
    for setting in SETTINGS:
        if setting.name not in cls.__annotations__:
            cls.__annotations__[setting.name] = "Any"
            setattr(cls, setting.name, setting.default)
    lines = "\n".join(f"    :param {setting.name}: {setting.help}" for setting in SETTINGS)
    cls.__doc__ = f"{cls.__doc__}\n{lines}\n"
    return cls


@dataclass(frozen=True)
@_with_every_setting
class LumaSettings:
    """
    Everything a call needs from the Luma connection, read once per hook. Each extra of the connection
    is an attribute of the same name (declared in :mod:`airflow_provider_luma.settings_table`).

    :param conn_id: The connection id (for messages).
    :param base_url: Scheme, host and optional port/path prefix of the API.
    :param api_key: The API key (the connection's password).
    """

    conn_id: str
    base_url: str
    api_key: str
    timeout: float = DEFAULTS["timeout"]
    connect_timeout: float = DEFAULTS["connect_timeout"]
    max_retries: int = DEFAULTS["max_retries"]
    ids_per_request: int = DEFAULTS["ids_per_request"]
    min_poll_interval: float = DEFAULTS["min_poll_interval"]
    poll_interval: float = DEFAULTS["poll_interval"]
    max_backoff: float = DEFAULTS["max_backoff"]
    comma_separated_ids: bool = DEFAULTS["comma_separated_ids"]
    api: ApiFamily = _DEFAULT_API
    long_poll_hold: float = DEFAULTS["long_poll_hold"]
    single_hold_param: str | None = DEFAULTS["single_hold_param"]
    multi_hold_param: str | None = DEFAULTS["multi_hold_param"]
    allow_insecure_http: bool = DEFAULTS["allow_insecure_http"]
    max_video_bytes: int = DEFAULTS["max_video_bytes"]
    allow_private_video_hosts: bool = DEFAULTS["allow_private_video_hosts"]
    video_hosts: tuple[str, ...] = DEFAULTS["video_hosts"]
    max_calls_per_second: float | None = DEFAULTS["max_calls_per_second"]
    max_call_burst: int | None = DEFAULTS["max_call_burst"]
    budget_redis_conn_id: str | None = DEFAULTS["budget_redis_conn_id"]

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
        values = read_extras(extras, conn_id)
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise LumaConfigurationError(f"Connection {conn_id!r} has an invalid host {safe_url(base_url)!r}.")
        if parts.query or parts.fragment or base_url.endswith(("?", "#")):
            # Never quoted whole: a query or fragment may hold a token.
            raise LumaConfigurationError(
                f"Connection {conn_id!r} has a query or fragment in its host {safe_url(base_url)!r}: give the base "
                "URL only."
            )
        if parts.scheme == "http" and not values["allow_insecure_http"] and not is_loopback(parts.hostname):
            raise LumaConfigurationError(
                f"Connection {conn_id!r} points at {safe_url(base_url)!r} over plain http, which would send the API "
                "key in clear text: use https, or set the extra allow_insecure_http to true if you really mean it."
            )
        settings = cls(conn_id=conn_id, base_url=base_url, api_key=api_key, **values)
        for name in ("max_call_burst", "budget_redis_conn_id"):
            if getattr(settings, name) is not None and settings.max_calls_per_second is None:
                log.warning(
                    "Extra %r of connection %r is set without 'max_calls_per_second': no budget applies.", name, conn_id
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
    # A separate port joins a host without one, unless it is the scheme's own (443 for https: the port
    # Airflow 3's Test button needs stored): one base URL, so one call budget, either way.
    if conn.port and not has_port and parts.hostname and conn.port != _DEFAULT_PORTS.get(parts.scheme):
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


def read_extras(extras: Mapping[str, Any], conn_id: str) -> dict[str, Any]:
    """
    Every setting of :data:`~airflow_provider_luma.settings_table.SETTINGS`, read from the connection's
    extra and checked (unset, ``null`` or ``""``: its default); raise :class:`LumaConfigurationError`
    naming the extra and the fix. Extras the table does not know get one warning per connection.
    """
    _warn_unknown(extras, conn_id)
    return {setting.name: read_setting(setting, _raw(extras, setting.name), conn_id) for setting in SETTINGS}


#: The prefix Airflow's older forms give extras (``extra__luma__timeout``); Airflow 2.11's Test button
#: still sends each form field under both names.
_LEGACY_PREFIX = "extra__luma__"


def _raw(extras: Mapping[str, Any], name: str) -> Any:
    value = extras.get(name)
    return extras.get(_LEGACY_PREFIX + name) if value is None or value == "" else value


def read_setting(setting: Setting, value: Any, conn_id: str) -> Any:
    """The value of one setting of connection ``conn_id`` (``value`` as the extra holds it)."""
    if value is None or value == "":
        value = setting.default  # read like a set value: the type is the same (an ApiFamily, an int...)
        if value is None:
            return None
    what = f"Extra {setting.name!r} of connection {conn_id!r}"
    return _PARSERS[setting.kind](setting, value, what)


def _number(setting: Setting, value: Any, what: str) -> float:
    return checked_number(
        value,
        what=what,
        minimum=setting.minimum if setting.minimum is not None else -math.inf,
        maximum=setting.maximum,
        error=LumaConfigurationError,
    )


def _whole(setting: Setting, value: Any, what: str) -> int:
    minimum = setting.minimum if setting.minimum is not None else -math.inf
    number = checked_number(
        value, what=what, minimum=minimum, maximum=setting.maximum, whole=True, error=LumaConfigurationError
    )
    return int(number)


def _flag(setting: Setting, value: Any, what: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    raise LumaConfigurationError(f"{what} is {value!r}: expected true or false.")


def _choice(setting: Setting, value: Any, what: str) -> str:
    text = str(value).strip().lower()
    if text not in setting.choices:
        raise LumaConfigurationError(f"{what} is {value!r}: use one of {', '.join(setting.choices)}.")
    return text


def _family(setting: Setting, value: Any, what: str) -> ApiFamily:
    return ApiFamily(_choice(setting, value, what))


def _hosts(setting: Setting, value: Any, what: str) -> tuple[str, ...]:
    """
    Host names from a list, or from text separated by commas, blanks or lines (what the forms send);
    brackets and quotes around names are dropped: Airflow 2.11's form shows a stored list as
    ``['a', 'b']`` and saves that text back. No host name holds any of these characters.
    """
    refused = LumaConfigurationError(
        f'{what} is {value!r}: give a list of host names, e.g. ["cdn.example.com", "*.cdn.example.com"].'
    )
    if isinstance(value, str):
        items = [value]
    elif isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        items = list(value)
    else:
        raise refused
    parts = (part for item in items for part in _HOST_SEPARATORS.split(item))
    names = [name for name in (part.strip("[]'\"").lower().rstrip(".") for part in parts) if name]
    if not all(_VIDEO_HOST.match(name) for name in names):
        raise refused
    return tuple(names)


def _conn_id(setting: Setting, value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise LumaConfigurationError(f"{what} is {value!r}: expected the id of a connection.")
    return value.strip()


#: The parser of each kind of setting (:data:`~airflow_provider_luma.settings_table.Kind`).
_PARSERS: dict[str, Callable[[Setting, Any, str], Any]] = {
    "seconds": _number,
    "number": _number,
    "whole": _whole,
    "flag": _flag,
    "choice": _choice,
    "family": _family,
    "hosts": _hosts,
    "conn_id": _conn_id,
}

#: The connections (with the unknown extras they held) already warned about in this process.
_WARNED_UNKNOWN: set[tuple[str, tuple[str, ...]]] = set()


def _warn_unknown(extras: Mapping[str, Any], conn_id: str) -> None:
    """One warning per connection and process for extras no setting reads (a typo is silently ignored else)."""
    unknown = tuple(sorted(str(name) for name in extras if str(name).removeprefix(_LEGACY_PREFIX) not in SETTING))
    if not unknown or (conn_id, unknown) in _WARNED_UNKNOWN:
        return
    _WARNED_UNKNOWN.add((conn_id, unknown))
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, list(SETTING), n=1)
        hints.append(f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name))
    log.warning(
        "Connection %r has extras the Luma provider does not read, ignored: %s. The extras it reads: %s.",
        conn_id,
        ", ".join(hints),
        ", ".join(sorted(SETTING)),
    )


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
