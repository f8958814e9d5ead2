"""The media plane's rooms on a real store: a room whose stream cannot be followed fails closed
(its coaches are silenced, its call goes on), and the worker goes on serving its other rooms."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

from events.room import Role
from events.store import EventStore
from events.stream_reader import StreamReader
from projections.commands import Actor, Join, PressTalk, ReleaseTalk, StartWhisper
from projections.routes import AudioRoute
from services.media.plane import MediaPlane, MediaRoom
from services.media.route_log import RouteOp
from services.settings import Settings
from services.streams.command_handler import CommandHandler
from services.streams.room_states import RoomStates

pytestmark = pytest.mark.newest_redis

CUSTOMER = Actor(subject="cust", role=Role.CUSTOMER, name="Carla", can_whisper=False)
AGENT = Actor(subject="agent", role=Role.AGENT, name="Ana", can_whisper=False)
COACH = Actor(subject="sup-1", role=Role.SUPERVISOR, name="Sam", can_whisper=True)

CALL = {AudioRoute("agent", "cust"), AudioRoute("cust", "agent")}
MONITORED = CALL | {AudioRoute("cust", "sup-1"), AudioRoute("agent", "sup-1")}
WHISPERED = MONITORED | {AudioRoute("sup-1", "agent")}


@pytest.fixture
async def plane(reader: StreamReader, redis_client: redis.Redis) -> AsyncIterator[MediaPlane]:
    plane = MediaPlane(Settings(jwt_secret="x" * 32), reader, redis_client, "worker-1")
    yield plane
    await plane.close()


async def whispering_room(plane: MediaPlane, commands: CommandHandler, room_id: str) -> MediaRoom:
    """A room whose coach is heard by the agent, with every participant's media in place."""
    room = await plane.host(room_id)
    for actor in (CUSTOMER, AGENT, COACH):
        await commands.handle(room_id, Join(), actor)
        room.reconciler.add_producer(actor.subject, actor.role)
        room.reconciler.add_consumer(actor.subject, actor.role)
    await commands.handle(room_id, StartWhisper(), COACH)
    await commands.handle(room_id, PressTalk(), COACH)
    await connections_become(room, WHISPERED)
    return room


async def connections_become(room: MediaRoom, expected: set[AudioRoute]) -> None:
    async with asyncio.timeout(5):
        while room.router.connections() != expected:
            await asyncio.sleep(0.005)


async def test_a_room_whose_stream_holds_an_unreadable_event_silences_its_coaches(
    plane: MediaPlane, store: EventStore, redis_client: redis.Redis
) -> None:
    # Say, an event of a newer schema written mid-upgrade: the state past it cannot be known.
    commands = CommandHandler(store, RoomStates(store))
    broken = await whispering_room(plane, commands, "room-1")
    healthy = await whispering_room(plane, commands, "room-2")
    version = await store.version("room-1")

    await redis_client.xadd(store.keys.room("room-1"), {"e": b"{not json"}, id=f"{version + 1}-0")

    await connections_become(broken, MONITORED)
    assert broken.reconciler.failure.startswith("MalformedEvent: malformed event")
    await commands.handle("room-2", ReleaseTalk(), COACH)
    await connections_become(healthy, MONITORED)  # the worker still follows its other rooms
    await broken.route_log.flush()
    removed = [c for c in await broken.route_log.read() if c.op is RouteOp.REMOVED]
    assert [(c.producer, c.consumer) for c in removed] == [("sup-1", "agent")]
    assert removed[0].detail.startswith("MalformedEvent")


async def test_a_new_connection_in_a_failed_room_gets_no_coach_route(
    plane: MediaPlane, store: EventStore, redis_client: redis.Redis
) -> None:
    commands = CommandHandler(store, RoomStates(store))
    room = await whispering_room(plane, commands, "room-1")
    version = await store.version("room-1")
    await redis_client.xadd(store.keys.room("room-1"), {"e": b"{not json"}, id=f"{version + 1}-0")
    await connections_become(room, MONITORED)

    room.reconciler.add_consumer("agent", Role.AGENT)  # the agent's page receives again

    assert room.router.connections() == MONITORED
