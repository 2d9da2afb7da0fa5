"""
The Redis side of the shared call budget: clients of an Airflow ``redis`` connection (read as
RedisHook reads it) with short time-outs and one quick retry, and the loop's script behind a fair
gate. redis-py is imported only when a connection names a Redis (the extra ``[redis]``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

#: Seconds to connect to Redis, and to wait for one answer, before it counts as unreachable.
REDIS_TIMEOUT = 2.0
#: Connections to Redis per process and event loop (the script runs in well under a millisecond).
REDIS_CONNECTIONS = 8
#: Extras of a ``redis`` connection that RedisHook passes to the client (``db`` apart).
SSL_EXTRAS = ("ssl", "ssl_cert_reqs", "ssl_ca_certs", "ssl_keyfile", "ssl_certfile", "ssl_check_hostname")


def redis_options(conn: Any, extras: dict[str, Any]) -> dict[str, Any]:
    """
    The redis-py client options of an Airflow ``redis`` connection, read as RedisHook reads them:
    host, port, login, password (``none``/``false``/empty: none), the extra ``db`` and the SSL extras.
    """
    password = conn.password if str(conn.password).lower() not in ("none", "false", "") else None
    options = {
        "host": conn.host or "localhost",
        "port": int(conn.port or 6379),
        "username": conn.login or None,
        "password": password,
        "db": int(extras.get("db") or 0),
    }
    if str(extras.get("ssl", "")).lower() in ("true", "1", "yes"):
        options.update({name: value for name, value in extras.items() if name in SSL_EXTRAS and name != "ssl"})
        options["ssl"] = True
    return options


class GatedScript:
    """
    The loop's script behind a first-come-first-served gate of :data:`REDIS_CONNECTIONS` calls.

    redis-py's blocking pool lets a newcomer take a freed connection before those already waiting,
    so with thousands of waits on one loop a waiter could starve past the pool's time-out (and take
    Redis for unreachable); with the gate the pool always has a connection free. A caller that
    waited at the gate while Redis failed gives up at once instead of trying a dead Redis in turn.

    :param client: A ``redis.asyncio`` client.
    :param script: The Lua script's text.
    :param outages: How often Redis has failed so far (a caller that saw it grow while waiting gives up).
    """

    def __init__(self, client: Any, script: str, outages: Callable[[], int]) -> None:
        self.script = client.register_script(script)
        self._outages_now = outages
        self.outages = outages()  # the outages before it was built
        self.gate = asyncio.Semaphore(REDIS_CONNECTIONS)
        # Its connections are closed when the loop ends (asyncio.run cancels what still runs), not
        # left to the garbage collector after the loop is gone.
        self._keeper = asyncio.get_running_loop().create_task(self._close_at_the_end(client))

    @staticmethod
    async def _close_at_the_end(client: Any) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await client.aclose()
            await client.connection_pool.disconnect()  # a pool given to the client is not closed with it

    def close(self) -> None:
        """Close its connections (on its own loop)."""
        self._keeper.cancel()

    async def __call__(self, keys: Sequence[str], args: Sequence[Any]) -> Any:
        outages = self._outages_now()
        async with self.gate:
            if self._outages_now() != outages:
                import redis

                raise redis.ConnectionError("Redis failed while this call waited for a connection")
            return await self.script(keys=keys, args=args)


def redis_errors() -> tuple[type[BaseException], ...]:
    """What redis-py raises when Redis cannot be used."""
    import redis

    return (redis.RedisError,)  # not OSError: BudgetTimeout is one


def _pool_options(options: dict[str, Any]) -> dict[str, Any]:
    from redis.backoff import NoBackoff

    return {
        **options,
        "max_connections": REDIS_CONNECTIONS,
        "timeout": REDIS_TIMEOUT,  # waiting for a free connection
        "socket_timeout": REDIS_TIMEOUT,
        "socket_connect_timeout": REDIS_TIMEOUT,
        # One quick retry (a pooled connection a restarted Redis dropped), not redis-py's seconds of back-off.
        "_backoff": NoBackoff(),
    }


def sync_client(options: dict[str, Any]) -> Any:
    """A ``redis.Redis`` client with :func:`redis_options`' ``options``, short time-outs and one quick retry."""
    import redis
    from redis.retry import Retry

    pool = _pool_options(options)
    if pool.pop("ssl", False):
        pool["connection_class"] = redis.SSLConnection
    return redis.Redis(connection_pool=redis.BlockingConnectionPool(retry=Retry(pool.pop("_backoff"), 1), **pool))


def async_client(options: dict[str, Any]) -> Any:
    """Async twin of :func:`sync_client` (``redis.asyncio``; a client per event loop)."""
    import redis.asyncio
    from redis.asyncio.retry import Retry

    pool = _pool_options(options)
    if pool.pop("ssl", False):
        pool["connection_class"] = redis.asyncio.SSLConnection
    retry = Retry(pool.pop("_backoff"), 1)
    return redis.asyncio.Redis(connection_pool=redis.asyncio.BlockingConnectionPool(retry=retry, **pool))
