"""The supervisors' lobby (services/streams/lobby.py) on a real service: its entries, what it
announces, GET /lobby, and tokens for every room of a queue. Its socket: test_lobby_socket.py."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
import redis.asyncio as redis

from events.room import ParticipantJoined, Role
from events.store import EventStore
from projections.decider import RoomState, fold, initial_state
from services.auth import TokenVerifier
from services.errors import AuthError
from services.streams.lobby import Lobby
from services.streams.room_states import RoomStates
from tests.support import SALES_COACH, SECRET, open_call, send, token

pytestmark = pytest.mark.newest_redis


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
        # a room's token gives that room, whatever queues it lists: not the queues' lobby
        (token(Role.SUPERVISOR, room="r-sales", queues=["sales"]), 403),
        ("not-a-token", 401),
    ],
    ids=["agent", "customer-any-room", "room-scoped-supervisor", "garbage"],
)
async def test_lobby_is_for_supervisors_only(
    http: httpx.AsyncClient, bearer: str, status: int
) -> None:
    response = await http.get("/lobby", headers={"authorization": f"Bearer {bearer}"})

    assert response.status_code == status


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
