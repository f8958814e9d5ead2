"""The HTTP server's admission of connections, against a real uvicorn on loopback."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis
import websockets

from events.room import Role
from services.redis_server import RedisServer
from services.web.server import ACCEPT_QUEUE, WAITING_PER_ADDRESS
from tests.support import RunningService, running_service, token

pytestmark = pytest.mark.newest_redis


@pytest.fixture
async def guarded(
    redis_server: RedisServer, redis_client: redis.Redis
) -> AsyncIterator[RunningService]:
    async with running_service(
        redis_server.url, redis_client, head_timeout_s=0.5, max_connections=100
    ) as running:
        yield running


def port_of(service: RunningService) -> int:
    port = service.http.base_url.port
    assert port is not None
    return port


async def silent_connection(
    port: int, source: str = "127.0.0.2"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> float:
    started = time.monotonic()
    async with asyncio.timeout(seconds):
        while await reader.read(1024):
            pass
    return time.monotonic() - started


async def test_a_connection_that_sends_no_request_head_is_closed_after_the_head_timeout(
    guarded: RunningService,
) -> None:
    reader, writer = await silent_connection(port_of(guarded))
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished

    assert 0.3 < await closed_within(reader, 3) < 1.5
    writer.close()


async def test_a_body_sent_too_slowly_is_answered_408(guarded: RunningService) -> None:
    reader, writer = await silent_connection(port_of(guarded))
    bearer = token(Role.CUSTOMER)
    writer.write(
        b"POST /rooms/room-1/commands HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
        + f"Authorization: Bearer {bearer}\r\n\r\n".encode()
        + b'{"command"'
    )

    async with asyncio.timeout(5):
        answer = await reader.read(4096)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b'"error":"request_timeout"' in answer
    writer.close()


async def test_one_address_keeps_a_bounded_number_of_connections_waiting(
    guarded: RunningService,
) -> None:
    port = port_of(guarded)
    held = [await silent_connection(port) for _ in range(WAITING_PER_ADDRESS + 1)]

    oldest_reader, _ = held[0]
    assert await closed_within(oldest_reader, 0.4) < 0.4  # pushed out, before its timeout
    answer = await guarded.http.get("/healthz")  # another address is not held back
    assert answer.status_code == 200
    for _, writer in held:
        writer.close()


async def test_at_the_maximum_a_new_connection_pushes_out_the_oldest_waiting_one(
    guarded: RunningService,
) -> None:
    port = port_of(guarded)
    held = [
        await silent_connection(port, source=f"127.0.{n // 50}.{2 + n % 50}") for n in range(100)
    ]
    await asyncio.sleep(0.05)

    oldest_reader, _ = held[0]
    answer = await guarded.http.get("/healthz")
    assert answer.status_code == 200
    assert await closed_within(oldest_reader, 0.4) < 0.4
    for _, writer in held:
        writer.close()


async def test_an_address_opening_connections_beyond_its_rate_has_them_closed_at_once(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    # 10 a second, bursts of 20: of 30 opened at once, the last 10 are closed as accepted.
    async with running_service(
        redis_server.url, redis_client, head_timeout_s=5, connections_per_s=10
    ) as service:
        port = port_of(service)
        held = [await silent_connection(port, source="127.0.0.3") for _ in range(30)]
        closed = []
        for reader, _ in held:
            try:
                await closed_within(reader, 0.1)
                closed.append(True)
            except TimeoutError:
                closed.append(False)

        assert not any(closed[:20])
        assert sum(closed[20:]) >= 9  # one may have been refilled while they were opened
        answer = await service.http.get("/healthz")  # from another address: not held back
        assert answer.status_code == 200
        for _, writer in held:
            writer.close()


async def test_sockets_are_not_compressed(guarded: RunningService) -> None:
    # A compressed flood of one repeated command packs ~10,000 frames into a socket's buffers.
    live = f"ws://127.0.0.1:{port_of(guarded)}/rooms/room-1/live"
    async with websockets.connect(live) as socket:  # it offers permessage-deflate
        assert socket.response is not None
        assert "sec-websocket-extensions" not in socket.response.headers


def test_the_kernel_queues_more_connections_than_asyncio_accepts_at_once(
    guarded: RunningService,
) -> None:
    # A burst beyond the queue drops SYNs: a client then waits a second for its retransmit.
    listening = subprocess.run(
        ["ss", "-Hltn", f"sport = :{port_of(guarded)}"], capture_output=True, text=True, check=True
    ).stdout.split()

    assert listening[2] == str(ACCEPT_QUEUE)  # a listening socket's Send-Q is its backlog
