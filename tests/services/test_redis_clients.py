"""The worker's Redis connections on a real redis-server: a bounded pool that waits, says what
ran out, and keeps every connection it lends."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as redis

from services.redis_clients import WaitingPool, dedicated_client, request_client
from services.redis_server import RedisServer


async def test_a_request_waits_for_a_free_connection_then_says_the_pool_ran_out(
    redis_server: RedisServer,
) -> None:
    client = request_client(redis_server.url, name="earpiece:t:requests", connections=1, wait_s=0.2)
    holding = asyncio.create_task(client.execute_command("BLPOP", "nothing", 1))
    await asyncio.sleep(0.05)

    with pytest.raises(
        redis.ConnectionError, match=r"all 1 Redis connections stayed busy for 0.2 s"
    ):
        await client.ping()
    await holding
    assert await client.ping()  # freed, the connection serves the next request
    await client.aclose()


async def test_a_task_cancelled_while_giving_its_connection_back_still_gives_it_back(
    redis_server: RedisServer,
) -> None:
    client = request_client(redis_server.url, name="earpiece:t:requests", connections=1, wait_s=1)
    pool = client.connection_pool
    assert isinstance(pool, WaitingPool)
    command = asyncio.create_task(client.execute_command("BLPOP", "nothing", 0.2))
    await asyncio.sleep(0.05)
    async with pool._condition:  # the pool is busy as the command ends: its release must wait
        await asyncio.sleep(0.3)
        command.cancel()  # ... and is cancelled meanwhile, as a closing room's reads are
    await asyncio.gather(command, return_exceptions=True)
    await asyncio.sleep(0.05)

    assert not pool._in_use_connections
    assert await client.ping()
    await client.aclose()


async def test_connections_are_named_for_client_list(redis_server: RedisServer) -> None:
    client = request_client(redis_server.url, name="earpiece:w1:requests", connections=2, wait_s=1)
    reads = dedicated_client(client, "earpiece:w1:reader")
    await client.ping()
    await reads.ping()

    names = {c["name"] for c in await client.client_list()}

    assert {"earpiece:w1:requests", "earpiece:w1:reader"} <= names
    await reads.aclose()
    await client.aclose()
