"""
A total deadline for ``requests`` calls, which have only per-read time-outs: a server sending one
byte per read never trips those, in its headers or its body.

A :class:`Watchdog` (``with Watchdog(deadline) as dog:`` around a call) watches every socket the
call's connections use in this thread, and at the deadline shuts them down, so whatever read or
write is blocked ends with an error at once; ``dog.fired`` then tells the caller it was the deadline,
and ``dog.sent`` whether any byte of the request had been handed to the socket (before that, the
server cannot have acted on it). The sockets are known through :class:`GuardedAdapter`, a requests
adapter whose urllib3 connections report them (the connect, the TLS handshake, each send). One
daemon thread serves every watchdog of the process.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_current = threading.local()


class Watchdog:
    """
    Shuts down the sockets of this thread's calls once ``deadline`` (UNIX time) passes.

    :param deadline: When the call must be over.
    """

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        #: Whether the deadline passed while the call was on.
        self.fired = False
        #: Whether any byte of the request was handed to a socket.
        self.sent = False
        self._sockets: dict[int, socket.socket] = {}
        self._lock = threading.Lock()
        self._done = False
        self._outer: Watchdog | None = None

    def __enter__(self) -> Watchdog:
        self._outer = getattr(_current, "watchdog", None)
        _current.watchdog = self
        _SCHEDULER.add(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            self._done = True
            self._sockets.clear()
        _current.watchdog = self._outer

    @property
    def remaining(self) -> float:
        """Seconds left before the deadline (never below zero)."""
        return max(0.0, self.deadline - time.time())

    def watch(self, sock: socket.socket | None) -> None:
        """Shut ``sock`` down at the deadline (at once if it passed already)."""
        if sock is None:
            return
        with self._lock:
            if self._done:
                return
            if not self.fired:
                self._sockets[id(sock)] = sock
                return
        _shut(sock)

    def fire(self) -> None:
        """The deadline passed: shut every watched socket down."""
        with self._lock:
            if self._done:
                return
            self.fired = True
            sockets = list(self._sockets.values())
        for sock in sockets:
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    # The plain socket's shutdown, also for an SSL socket (whose own would drop its SSL object under a
    # reader in another thread): the blocked read then fails at once. OSError: already closed.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Scheduler:
    """One daemon thread firing watchdogs at their deadlines (a heap; finished ones are skipped)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Watchdog]] = []
        self._order = itertools.count()
        self._condition = threading.Condition()
        self._thread: threading.Thread | None = None

    def add(self, watchdog: Watchdog) -> None:
        with self._condition:
            heapq.heappush(self._heap, (watchdog.deadline, next(self._order), watchdog))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="luma-call-deadlines", daemon=True)
                self._thread.start()
            self._condition.notify()

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._heap:
                    self._condition.wait()
                deadline, _, watchdog = self._heap[0]
                delay = deadline - time.time()
                if delay > 0:
                    self._condition.wait(delay)
                    continue
                heapq.heappop(self._heap)
            watchdog.fire()


_SCHEDULER = _Scheduler()


def _watch(sock: socket.socket | None) -> None:
    watchdog = getattr(_current, "watchdog", None)
    if watchdog is not None:
        watchdog.watch(sock)


class _Reporting:
    """urllib3 connection methods that report their sockets to the thread's watchdog."""

    sock: socket.socket | None

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()  # type: ignore[misc]
        _watch(sock)  # the TCP socket: the TLS handshake on it is watched too
        return sock

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        _watch(self.sock)  # after TLS, the wrapped socket

    def send(self, data: Any) -> None:
        if self.sock is None:
            self.connect()  # as http.client would, but before the request counts as sent
        _watch(self.sock)  # a connection kept from an earlier call
        watchdog = getattr(_current, "watchdog", None)
        if watchdog is not None:
            watchdog.sent = True
        super().send(data)  # type: ignore[misc]


class _HTTPConnection(_Reporting, HTTPConnection):
    pass


class _HTTPSConnection(_Reporting, HTTPSConnection):
    pass


class _HTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_POOLS = {"http": _HTTPConnectionPool, "https": _HTTPSConnectionPool}


class GuardedAdapter(HTTPAdapter):
    """A requests adapter whose connections (direct or through an HTTP proxy) report to the thread's watchdog."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        """The pool manager, with reporting connection pools."""
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOLS)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        """The proxy's pool manager, with reporting pools too (a SOCKS proxy keeps its own: per-read time-outs only)."""
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = dict(_POOLS)
        return manager
