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


def _new_session() -> aiohttp.ClientSession:
    # limit=0: concurrent long polls must never queue behind each other in the pool.
    # DummyCookieJar: the session is shared by every connection and key on the loop; it keeps no cookies.
    # trust_env: HTTP(S)_PROXY / NO_PROXY apply as they do to the worker's requests session.
    # The trace tells whether a failed exchange had a connection (so its request may have been sent).
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=True,
        trace_configs=[_tracing()],
    )


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
