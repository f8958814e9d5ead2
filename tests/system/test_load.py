"""Real load on one worker (``earpiece serve`` as a child process): 300 rooms with an open page
each, 50 of them with a publishing session too. Commands keep answering, ``/healthz`` stays
200, every page is sent its room's changes, and the Redis connections the worker holds (read
from ``CLIENT LIST``) do not grow with the rooms."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as redis
import websockets
from websockets.asyncio.client import ClientConnection

from events.room import Role
from services.bench.participants import Participant, ToneTrack
from services.bench.rooms import worker_connections
from services.redis_server import RedisServer
from services.settings import Settings
from tests.support import token
from tests.system.processes import ServiceProcess

pytestmark = pytest.mark.newest_redis

ROOMS = 300
PUBLISHING = 50
MOST_CONNECTIONS = Settings().redis_connections + 4
"""What services/redis_clients.py says a worker with one partition holds at most."""


@pytest.fixture
def served(
    redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path
) -> Iterator[ServiceProcess]:
    """The service, with no limit on one address's openings: 300 people open their pages from
    as many addresses, here all from 127.0.0.1 (after redis_client, which empties Redis)."""
    service = ServiceProcess(redis_server.url, tmp_path, CONNECTIONS_PER_S="0")
    service.start()
    yield service
    service.stop()


class Page:
    def __init__(self, room_id: str, socket: ClientConnection) -> None:
        self.room_id = room_id
        self.socket = socket

    async def next_view(self) -> dict[str, Any]:
        while True:
            message = json.loads(await self.socket.recv())
            if message["type"] == "view":
                view: dict[str, Any] = message["view"]
                return view


@contextlib.asynccontextmanager
async def open_pages(url: str, rooms: list[str]) -> AsyncIterator[list[Page]]:
    async with contextlib.AsyncExitStack() as stack:
        pages = []
        for room_id in rooms:
            socket = await stack.enter_async_context(
                websockets.connect(f"{url.replace('http', 'ws', 1)}/rooms/{room_id}/live")
            )
            await socket.send(json.dumps({"type": "auth", "token": agent_of(room_id)}))
            page = Page(room_id, socket)
            async with asyncio.timeout(10):
                await page.next_view()
            pages.append(page)
        yield pages


def agent_of(room_id: str) -> str:
    return token(Role.AGENT, room=room_id, sub="agent")


async def test_three_hundred_rooms_with_pages_hold_a_constant_number_of_redis_connections(
    served: ServiceProcess, redis_client: redis.Redis
) -> None:
    rooms = [f"load-{n}" for n in range(ROOMS)]
    async with (
        httpx.AsyncClient(base_url=served.url, timeout=10) as http,
        open_pages(served.url, rooms[:10]) as first_pages,
    ):
        with_ten = await worker_connections(redis_client)
        async with open_pages(served.url, rooms[10:]) as other_pages:
            pages = first_pages + other_pages
            publishers = [Participant(http, room_id, agent_of(room_id)) for room_id in rooms]
            try:
                for publisher in publishers[:PUBLISHING]:
                    await publisher.publish(ToneTrack(440))
                for publisher in publishers[:PUBLISHING]:
                    async with asyncio.timeout(20):
                        while publisher.publisher.connectionState != "connected":  # type: ignore[union-attr]
                            await asyncio.sleep(0.05)

                joins = await asyncio.gather(
                    *(
                        http.post(
                            f"/rooms/{room_id}/commands",
                            json={"command": "join"},
                            headers={
                                "authorization": f"Bearer {token(Role.CUSTOMER, room=room_id)}"
                            },
                        )
                        for room_id in rooms
                    )
                )
                async with asyncio.timeout(30):
                    views = await asyncio.gather(*(page.next_view() for page in pages))
                healthz = await http.get("/healthz")
                with_all = await worker_connections(redis_client)
            finally:
                await asyncio.gather(*(p.close() for p in publishers[:PUBLISHING]))

    assert {answer.status_code for answer in joins} == {201}
    assert {view["customer"]["subject"] for view in views} == {"customer-1"}
    assert healthz.status_code == 200
    assert with_all["reader"] == with_ten["reader"] == 1  # every room in one blocking read
    assert sum(with_all.values()) <= MOST_CONNECTIONS
    assert with_all["requests"] <= Settings().redis_connections
