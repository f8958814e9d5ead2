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

from events.store import RedisClient


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


def request_client(
    url: str, *, name: str, connections: int, wait_s: float, cluster: bool = False
) -> RedisClient:
    """The pool of short requests to Redis at ``url`` (one node of a Redis Cluster, with
    ``cluster``), its connections named ``name``."""
    if cluster:
        # redis-py's cluster pools (``connections`` per node) do not wait for a free
        # connection: past them a request fails at once, and is answered 503.
        return redis.RedisCluster.from_url(
            url, max_connections=connections, socket_connect_timeout=5, client_name=name
        )
    pool = WaitingPool.from_url(
        url,
        max_connections=connections,
        timeout=wait_s,
        # A connect timeout bounds each reconnect while Redis is away (redis-py sets none).
        socket_connect_timeout=5,
        client_name=name,
    )
    return redis.Redis.from_pool(pool)


def dedicated_client(client: RedisClient, name: str, connections: int = 1) -> RedisClient:
    """Connections of their own, named ``name``, for a blocking read from the Redis ``client``
    talks to (per node, on a cluster); a caller that needs more than ``connections`` at once
    waits for one."""
    if isinstance(client, redis.RedisCluster):
        node = client.get_default_node()
        return redis.RedisCluster(
            host=node.host,
            port=node.port,
            max_connections=connections,
            socket_connect_timeout=5,
            client_name=name,
        )
    pool = client.connection_pool
    kwargs = {**pool.connection_kwargs, "client_name": name}
    own = redis.BlockingConnectionPool(
        connection_class=pool.connection_class,
        max_connections=connections,
        timeout=None,
        **kwargs,
    )
    return redis.Redis.from_pool(own)
