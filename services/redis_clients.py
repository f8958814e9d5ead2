"""A worker's Redis connections: as many whatever the number of rooms.

Short requests (appends, reads, lobby updates, leases) share one bounded pool that waits for a
free connection, up to ``redis_wait_s``, and then answers 503 ``unavailable`` with a sentence
saying so, rather than failing at once or opening more. Each blocking read has connections of
its own, so that no number of commands can starve it and no blocked read holds a command's
connection. A worker with ``P`` partitions holds at most::

    redis_connections            the pool of short requests
    + P                          the stream reader: each partition's followed rooms in one
                                 XREAD BLOCK
    + P + P                      the audit and the lobby groups' members, one per partition
    + 1                          the lobby's Pub/Sub subscription

Every connection is named (``CLIENT SETNAME``) ``earpiece:<worker>:<purpose>``, so that
``CLIENT LIST`` tells which worker holds what.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as redis


class WaitingPool(redis.BlockingConnectionPool):
    """redis-py's blocking pool, saying what ran out when a wait times out, and keeping every
    connection it lends."""

    async def release(self, connection: Any) -> None:
        # A task cancelled while it waits for the pool's lock to give a connection back would
        # leave it lent for good; after enough of them every request waits and times out.
        await asyncio.shield(super().release(connection))

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        except redis.ConnectionError as exc:
            if not isinstance(exc.__cause__, asyncio.TimeoutError):
                raise
            raise redis.ConnectionError(
                f"all {self.max_connections} Redis connections stayed busy for {self.timeout} s"
            ) from exc


def request_client(url: str, *, name: str, connections: int, wait_s: float) -> redis.Redis:
    """The pool of short requests to Redis at ``url``, its connections named ``name``."""
    pool = WaitingPool.from_url(
        url,
        max_connections=connections,
        timeout=wait_s,
        # A connect timeout bounds each reconnect while Redis is away (redis-py sets none).
        socket_connect_timeout=5,
        client_name=name,
    )
    return redis.Redis.from_pool(pool)


def dedicated_client(client: redis.Redis, name: str, connections: int = 1) -> redis.Redis:
    """Connections of their own, named ``name``, for a blocking read from the Redis ``client``
    talks to; a caller that needs more than ``connections`` at once waits for one."""
    pool = client.connection_pool
    kwargs = {**pool.connection_kwargs, "client_name": name}
    own = redis.BlockingConnectionPool(
        connection_class=pool.connection_class,
        max_connections=connections,
        timeout=None,
        **kwargs,
    )
    return redis.Redis.from_pool(own)
