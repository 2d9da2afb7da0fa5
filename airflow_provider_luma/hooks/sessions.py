"""
The aiohttp sessions of the async transport: one per event loop, shared by every open transport on it
(a triggerer's thousands of waits share one connection pool), closed by the last one to leave.
"""

from __future__ import annotations

import asyncio
import weakref
from types import SimpleNamespace
from typing import Any

import aiohttp
import requests
from yarl import URL


class _SharedSession:
    """One HTTP session shared by every open async transport on one event loop, and how many use it."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.users = 0


# Keyed by the running loop: a triggerer's thousands of waits share one connection pool, and nothing
# outlives its loop (dag.test() runs each trigger under a loop of its own).
_SHARED_SESSIONS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _SharedSession] = weakref.WeakKeyDictionary()


async def _connected(session: Any, context: SimpleNamespace, params: Any) -> None:
    # From here on, bytes of the request may reach the server (the exchange's trace context says so).
    if isinstance(context.trace_request_ctx, SimpleNamespace):
        context.trace_request_ctx.sent = True


def _tracing() -> aiohttp.TraceConfig:
    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(_connected)
    trace.on_connection_reuseconn.append(_connected)
    return trace


def environment_proxy(url: str) -> str | None:
    """
    The proxy the environment names for ``url`` (``HTTP(S)_PROXY``, ``ALL_PROXY``, honouring
    ``NO_PROXY``), or ``None``: the worker's ``requests`` rule, the one both paths and downloads use.
    """
    return requests.utils.select_proxy(url, requests.utils.get_environ_proxies(url))


class EnvironmentProxies:
    """
    Each host's proxy (:func:`environment_proxy`) for one session, decided once per host.

    Not aiohttp's ``trust_env=True``, which reads the environment and ``~/.netrc`` twice on every
    request, each time in a worker thread: two thread hops and two file reads per call, a third of a
    long poll's CPU. The API calls carry their own ``Authorization`` header, which aiohttp refuses to
    combine with ``.netrc`` credentials anyway.
    """

    def __init__(self) -> None:
        self._chosen: dict[tuple[str, str | None, int | None], URL | None] = {}

    def for_url(self, url: URL) -> URL | None:
        """The proxy for ``url``, or ``None`` to connect directly."""
        key = (url.scheme, url.host, url.port)
        if key not in self._chosen:
            proxy = environment_proxy(str(url.origin()))
            self._chosen[key] = URL(proxy) if proxy else None
        return self._chosen[key]


#: Each session's environment proxies (a session cannot carry attributes of its own).
_PROXIES: weakref.WeakKeyDictionary[aiohttp.ClientSession, EnvironmentProxies] = weakref.WeakKeyDictionary()


def _new_session() -> aiohttp.ClientSession:
    # limit=0: concurrent long polls must never queue behind each other in the pool.
    # DummyCookieJar: the session is shared by every connection and key on the loop; it keeps no cookies.
    # Proxies: from the environment, as the worker's requests session takes them, read once (see
    # EnvironmentProxies) and passed on each request (proxy_for), not aiohttp's per-request trust_env.
    # The trace tells whether a failed exchange had a connection (so its request may have been sent).
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
        trace_configs=[_tracing()],
    )
    _PROXIES[session] = EnvironmentProxies()
    return session


def proxy_for(session: aiohttp.ClientSession, url: URL) -> URL | None:
    """The environment's proxy for ``url`` on a session of :func:`_new_session` (``None``: direct)."""
    proxies = _PROXIES.get(session)
    return proxies.for_url(url) if proxies is not None else None


def join_shared_session() -> aiohttp.ClientSession:
    """The running loop's shared session (created on first use), counted as used once more."""
    loop = asyncio.get_running_loop()
    shared = _SHARED_SESSIONS.get(loop)
    if shared is None or shared.session.closed:
        shared = _SHARED_SESSIONS[loop] = _SharedSession(_new_session())
    shared.users += 1
    return shared.session


async def leave_shared_session(session: aiohttp.ClientSession) -> None:
    """One user less of ``session``; the last one closes it."""
    loop = asyncio.get_running_loop()
    shared = _SHARED_SESSIONS.get(loop)
    if shared is not None and shared.session is session:
        shared.users -= 1
        if shared.users > 0:
            return
        del _SHARED_SESSIONS[loop]  # before closing: a hook entering meanwhile gets a new session
    await session.close()
