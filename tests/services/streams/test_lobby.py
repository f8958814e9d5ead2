"""Supervisors' lobby and their tokens for every room of their queues, on a real service."""

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

from events.room import ParticipantJoined, Role
from events.store import EventStore
from projections.decider import RoomState, fold, initial_state
from services.auth import TokenVerifier
from services.errors import AuthError
from services.streams.lobby import Lobby
from services.streams.room_states import RoomStates
from tests.support import SECRET, token

pytestmark = pytest.mark.newest_redis

SALES_COACH = token(Role.SUPERVISOR, sub="sup-1", room="*", queues=["sales"], whisper=True)


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


async def send(http: httpx.AsyncClient, room: str, bearer: str, command: str) -> httpx.Response:
    return await http.post(
        f"/rooms/{room}/commands",
        json={"command": command},
        headers={"authorization": f"Bearer {bearer}"},
    )


async def lobby_where(http: httpx.AsyncClient, bearer: str, condition: Any) -> list[Any]:
    """The lobby's rooms once ``condition`` holds (the lobby follows the feed)."""
    async with asyncio.timeout(10):
        while True:
            response = await http.get("/lobby", headers={"authorization": f"Bearer {bearer}"})
            assert response.status_code == 200, response.text
            rooms = response.json()["rooms"]
            if condition(rooms):
                return rooms
            await asyncio.sleep(0.05)


async def announcements(pubsub: Any, seconds: float) -> list[bytes]:
    """What was announced on ``pubsub``'s channels, up to ``seconds`` from now."""
    heard: list[bytes] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        message = await pubsub.get_message(timeout=left)
        if message is not None and message["type"] == "message":
            heard.append(message["data"])
    return heard


async def open_call(http: httpx.AsyncClient, room: str, queue: str) -> None:
    for role, name in ((Role.CUSTOMER, "cust"), (Role.AGENT, "agent")):
        bearer = token(role, room=room, sub=f"{name}-{room}", queue=queue)
        assert (await send(http, room, bearer, "join")).status_code == 201


async def test_lobby_lists_the_live_rooms_of_the_tokens_queues_only(
    http: httpx.AsyncClient,
) -> None:
    await open_call(http, "r-sales", "sales")
    await open_call(http, "r-support", "support")

    support_coach = token(Role.SUPERVISOR, sub="sup-2", room="*", queues=["support"])
    await lobby_where(http, support_coach, lambda rooms: rooms and rooms[0]["agent"])

    rooms = await lobby_where(http, SALES_COACH, lambda rooms: rooms and rooms[0]["agent"])

    [room] = rooms
    assert (room["room_id"], room["queue"]) == ("r-sales", "sales")
    assert (room["customer"], room["agent"]) == ("Cust-R-Sales", "Agent-R-Sales")
    assert (room["coaches"], room["coaching"]) == ([], [])


async def test_a_token_for_every_room_of_a_queue_coaches_there_and_nowhere_else(
    http: httpx.AsyncClient,
) -> None:
    await open_call(http, "r-sales", "sales")
    await open_call(http, "r-support", "support")

    joined = await send(http, "r-sales", SALES_COACH, "join")
    whispering = await send(http, "r-sales", SALES_COACH, "start_whisper")
    refused = await send(http, "r-support", SALES_COACH, "join")

    assert (joined.status_code, whispering.status_code) == (201, 201)
    assert refused.status_code == 403
    assert "not in the token's queues ['sales']" in refused.json()["detail"]
    rooms = await lobby_where(http, SALES_COACH, lambda rooms: rooms and rooms[0]["coaching"])
    assert rooms[0]["coaching"] == ["Sup-1"]


async def test_a_closed_room_leaves_the_lobby(http: httpx.AsyncClient) -> None:
    await open_call(http, "r-sales", "sales")
    await lobby_where(http, SALES_COACH, lambda rooms: len(rooms) == 1)

    agent = token(Role.AGENT, room="r-sales", sub="agent-r-sales", queue="sales")
    assert (await send(http, "r-sales", agent, "close_room")).status_code == 201

    assert await lobby_where(http, SALES_COACH, lambda rooms: rooms == []) == []


@pytest.mark.parametrize(
    ("bearer", "status"),
    [
        (token(Role.AGENT, room="r-sales", queue="sales"), 403),
        (token(Role.CUSTOMER, room="*", queues=["sales"]), 401),
        ("not-a-token", 401),
    ],
    ids=["agent", "customer-any-room", "garbage"],
)
async def test_lobby_is_for_supervisors_only(
    http: httpx.AsyncClient, bearer: str, status: int
) -> None:
    response = await http.get("/lobby", headers={"authorization": f"Bearer {bearer}"})

    assert response.status_code == status


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


async def test_only_what_supervisors_see_is_announced(
    http: httpx.AsyncClient, redis_client: redis.Redis
) -> None:
    store = EventStore(redis_client)
    coach = token(Role.SUPERVISOR, sub="sup-1", room="r-sales", whisper=True)

    async def after(*commands: str) -> list[bytes]:
        """What is announced for ``commands`` of the coach, once the lobby has handled them."""
        for command in commands:
            await send(http, "r-sales", coach, command)
        async with asyncio.timeout(5):
            version = await store.version("r-sales")
            while int(await redis_client.get(store.keys.lobby_version("r-sales")) or 0) < version:
                await asyncio.sleep(0.02)
        return await announcements(pubsub, seconds=0.3)

    await open_call(http, "r-sales", "sales")
    await lobby_where(http, SALES_COACH, lambda rooms: rooms and rooms[0]["agent"])
    async with redis_client.pubsub() as pubsub:
        await pubsub.subscribe(store.keys.lobby_changes(0))
        await pubsub.get_message(timeout=1)  # subscribed

        assert await after("join") == [b"sales"]  # a coach appears
        assert await after("start_monitor", "press_talk", "stop_monitor", "start_monitor") == []
        assert await after("start_whisper") == [b"sales"]  # now coaching
        assert await after("press_talk", "mute_coach") == []


async def test_a_redelivered_event_announces_nothing_again(
    store: EventStore, redis_client: redis.Redis
) -> None:
    lobby = Lobby(store, RoomStates(store))
    customer = ParticipantJoined(subject="cust", role=Role.CUSTOMER, name="C", queue="sales")
    await store.append("r-1", [customer], expected_version=0, actor="cust")
    [envelope] = await store.read("r-1")
    async with redis_client.pubsub() as pubsub:
        await pubsub.subscribe(store.keys.lobby_changes(0))
        await lobby.handle(envelope)
        await lobby.handle(envelope)  # at least once: a consumer died before its ack
        announced = await announcements(pubsub, seconds=0.5)

    assert announced == [b"sales"]
    assert [room.room_id for room in await lobby.rooms(["sales"])] == ["r-1"]


class StatesAsOf(RoomStates):
    """A room's state as an overtaken handler saw it: as of ``version``, not the newest."""

    def __init__(self, store: EventStore, version: int) -> None:
        super().__init__(store)
        self.version = version

    async def current(self, room_id: str) -> RoomState:
        return fold(initial_state(room_id), await self.store.read(room_id, count=self.version))


async def test_an_entry_is_never_written_from_an_older_state_than_the_listed_one(
    store: EventStore, redis_client: redis.Redis
) -> None:
    customer = ParticipantJoined(subject="cust", role=Role.CUSTOMER, name="C", queue="sales")
    agent = ParticipantJoined(subject="agent", role=Role.AGENT, name="A", queue="sales")
    await store.append("r-1", [customer, agent], expected_version=0, actor="cust")
    first, second = await store.read("r-1")
    await Lobby(store, RoomStates(store)).handle(second)  # lists the room at version 2
    async with redis_client.pubsub() as pubsub:
        await pubsub.subscribe(store.keys.lobby_changes(0))

        await Lobby(store, StatesAsOf(store, 1)).handle(first)  # overtaken: saw version 1
        announced = await announcements(pubsub, seconds=0.3)

    [room] = await Lobby(store, RoomStates(store)).rooms(["sales"])
    assert room.agent == "A"  # not the version-1 entry, which had no agent
    assert announced == []


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


async def queue_of(room_id: str) -> str:
    return {"r-sales": "sales"}.get(room_id, "")


@pytest.mark.parametrize(
    ("claims", "room", "outcome"),
    [
        ({"role": Role.SUPERVISOR, "queues": ["sales"]}, "r-sales", None),
        ({"role": Role.SUPERVISOR, "queues": ["sales"]}, "r-other", "not in the token's queues"),
        ({"role": Role.SUPERVISOR}, "r-sales", 'must list its "queues"'),
        ({"role": Role.AGENT, "queues": ["sales"]}, "r-sales", "only a supervisor's token"),
    ],
    ids=["in-queue", "other-queue", "no-queues", "agent"],
)
async def test_verifier_grants_every_room_only_to_supervisors_in_its_queues(
    claims: dict[str, Any], room: str, outcome: str | None
) -> None:
    verifier = TokenVerifier(SECRET, audience="earpiece", issuer="earpiece", queue_of=queue_of)
    role = claims.pop("role")
    bearer = token(role, room="*", **claims)

    if outcome is None:
        assert (await verifier.verify_async(bearer, room)).queues == ("sales",)
    else:
        with pytest.raises(AuthError, match=outcome):
            await verifier.verify_async(bearer, room)
    with pytest.raises(AuthError):  # without the room's queue, the sync path never grants it
        verifier.verify(bearer, room)
