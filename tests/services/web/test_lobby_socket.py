"""The lobby over its WebSocket (services/web/lobby_socket.py): pushed on every change to the
token's queues, for supervisors only, through a cut subscription, until the token expires."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio as redis
import websockets
from websockets.asyncio.client import ClientConnection

from events.room import Role
from tests.support import SALES_COACH, open_call, send, token

pytestmark = pytest.mark.newest_redis


@contextlib.asynccontextmanager
async def lobby_socket(http: httpx.AsyncClient, bearer: str) -> AsyncIterator[ClientConnection]:
    url = str(http.base_url).replace("http", "ws", 1) + "/lobby/live"
    async with websockets.connect(url) as socket:
        await socket.send(json.dumps({"type": "auth", "token": bearer}))
        yield socket


async def pushed_where(
    socket: ClientConnection, condition: Any, queues: tuple[str, ...] = ("sales",)
) -> list[Any]:
    """The rooms of the first lobby message for which ``condition`` holds; every message on
    the way lists rooms of the token's ``queues`` only.

    Within 5 s: well before a socket's periodic read (15 s), so only a push can meet it.
    """
    async with asyncio.timeout(5):
        while True:
            message = json.loads(await socket.recv())
            assert message["type"] == "lobby", message
            assert {room["queue"] for room in message["rooms"]} <= set(queues), message
            if condition(message["rooms"]):
                return list(message["rooms"])


async def test_the_lobby_socket_pushes_each_change_to_the_tokens_queues(
    http: httpx.AsyncClient,
) -> None:
    async with lobby_socket(http, SALES_COACH) as sales:
        assert await pushed_where(sales, lambda rooms: True) == []

        await open_call(http, "r-support", "support")
        await open_call(http, "r-sales", "sales")
        [room] = await pushed_where(sales, lambda rooms: rooms and rooms[0]["agent"])
        assert (room["room_id"], room["customer"], room["agent"]) == (
            "r-sales",
            "Cust-R-Sales",
            "Agent-R-Sales",
        )

        assert (await send(http, "r-sales", SALES_COACH, "join")).status_code == 201
        assert (await send(http, "r-sales", SALES_COACH, "start_whisper")).status_code == 201
        [room] = await pushed_where(sales, lambda rooms: rooms[0]["coaching"])
        assert room["coaching"] == ["Sup-1"]

        agent = token(Role.AGENT, room="r-sales", sub="agent-r-sales", queue="sales")
        assert (await send(http, "r-sales", agent, "close_room")).status_code == 201
        assert await pushed_where(sales, lambda rooms: rooms == []) == []


@pytest.mark.parametrize(
    ("bearer", "code"),
    [
        (token(Role.AGENT, room="r-sales", queue="sales"), 4403),
        (token(Role.CUSTOMER, room="*", queues=["sales"]), 4401),
        ("not-a-token", 4401),
    ],
    ids=["agent", "customer-any-room", "garbage"],
)
async def test_the_lobby_socket_is_for_supervisors_only(
    http: httpx.AsyncClient, bearer: str, code: int
) -> None:
    async with lobby_socket(http, bearer) as socket:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(socket.recv(), 10)

    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == code


async def test_the_lobby_socket_answers_stray_messages_and_stays_open(
    http: httpx.AsyncClient,
) -> None:
    async with lobby_socket(http, SALES_COACH) as sales:
        await pushed_where(sales, lambda rooms: True)
        await sales.send('{"type": "command"}')
        text = json.loads(await asyncio.wait_for(sales.recv(), 5))
        await sales.send(b"\x00binary")
        binary = json.loads(await asyncio.wait_for(sales.recv(), 5))
        await open_call(http, "r-sales", "sales")

        assert (text["error"], text["detail"]) == (
            "invalid_message",
            "the lobby takes no messages after auth",
        )
        assert (binary["error"], binary["detail"]) == (
            "invalid_message",
            "send JSON in text frames, not binary ones",
        )
        assert await pushed_where(sales, lambda rooms: rooms and rooms[0]["agent"])


async def test_the_lobby_is_pushed_after_its_subscription_was_cut(
    http: httpx.AsyncClient, redis_client: redis.Redis
) -> None:
    async with lobby_socket(http, SALES_COACH) as sales:
        await pushed_where(sales, lambda rooms: True)
        assert await redis_client.client_kill_filter(_type="pubsub") >= 1  # the watchers'

        await open_call(http, "r-sales", "sales")  # while it subscribes again

        assert await pushed_where(sales, lambda rooms: rooms and rooms[0]["agent"])


async def test_a_lobby_socket_closes_when_its_token_expires(http: httpx.AsyncClient) -> None:
    expiring = token(
        Role.SUPERVISOR, sub="sup-1", room="*", queues=["sales"], exp=int(time.time()) + 2
    )
    async with lobby_socket(http, expiring) as socket:
        assert await pushed_where(socket, lambda rooms: True) == []
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(socket.recv(), 10)

    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4401
    assert "expired" in closed.value.rcvd.reason
