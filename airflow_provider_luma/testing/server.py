"""Serving the simulator: aiohttp applications on loopback sockets, in the caller's event loop or a thread.

Nothing here knows the API; :class:`~.LumaSimulator` builds the applications and hands them over.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Awaitable, Callable

from aiohttp import web

__all__ = ["LoopThread", "Sockets"]


class Sockets:
    """
    Runs aiohttp applications, each on a socket of its own.

    :param host: The interface to bind.
    :param backlog: Listen backlog of each socket (large, for benchmarks).
    :param shutdown_timeout: Seconds :meth:`close` waits for requests in flight.
    """

    def __init__(self, host: str, backlog: int, shutdown_timeout: float) -> None:
        self.host, self.backlog, self.shutdown_timeout = host, backlog, shutdown_timeout
        self._runners: list[web.AppRunner] = []

    @property
    def running(self) -> bool:
        """Whether any application is being served."""
        return bool(self._runners)

    async def serve(self, app: web.Application, port: int) -> int:
        """Serve ``app`` on ``port`` (0: a free one); return the bound port."""
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=self.shutdown_timeout)
        await runner.setup()
        self._runners.append(runner)
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
        try:
            # SO_REUSEADDR lets a restart bind the same port despite TIME_WAIT sockets.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, port))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        site = web.SockSite(runner, sock, backlog=self.backlog)
        await site.start()
        return int(sock.getsockname()[1])

    async def close(self) -> None:
        """Stop serving every application."""
        runners, self._runners = self._runners, []
        for runner in runners:
            await runner.cleanup()


class LoopThread:
    """
    Runs ``astart`` in a new event loop in a daemon thread, then ``astop`` when :meth:`stop` is called.

    :param astart: Starts serving (its exception is raised by :meth:`start` in the caller's thread).
    :param astop: Stops serving.
    :param join_timeout: Seconds :meth:`stop` waits for the thread.
    """

    def __init__(
        self, astart: Callable[[], Awaitable[None]], astop: Callable[[], Awaitable[None]], join_timeout: float
    ) -> None:
        self._astart, self._astop, self._join_timeout = astart, astop, join_timeout
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def alive(self) -> bool:
        """Whether the thread was started and not yet stopped."""
        return self._thread is not None

    def start(self) -> None:
        """Start the thread; return once serving (or raise what ``astart`` raised)."""
        if self._thread is not None:
            raise RuntimeError("simulator already running")
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="luma-simulator", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            self._thread = None
            raise self._error

    def stop(self) -> None:
        """Stop serving and end the thread (idempotent)."""
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None:
            return
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # loop already gone
                loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=self._join_timeout)
        self._thread = None

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            await self._astart()
        except BaseException as exc:  # handed to start() in the caller's thread
            self._error = exc
            self._ready.set()
            return
        self._stop = asyncio.Event()
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self._astop()
