"""The room actor on a real store: events in, router connections and route log out."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

from events.room import Role
from events.store import EventStore
from projections.commands import Actor, Join, PressTalk, StartMonitor, StartWhisper
from projections.routes import AudioRoute
from services.media.route_log import RouteLog, RouteOp
from services.media.route_reconciler import RouteReconciler
from services.media.router import Router
from services.streams.command_handler import CommandHandler
from services.streams.room_states import RoomStates

CUSTOMER = Actor(subject="cust", role=Role.CUSTOMER, name="Carla", can_whisper=False)
AGENT = Actor(subject="agent", role=Role.AGENT, name="Ana", can_whisper=False)
COACH = Actor(subject="sup-1", role=Role.SUPERVISOR, name="Sam", can_whisper=True)


class Room:
    def __init__(self, store: EventStore, redis_client: redis.Redis) -> None:
        self.commands = CommandHandler(store, RoomStates(store))
        self.router = Router("room-1")
        self.log = RouteLog(redis_client, store.keys, "room-1")
        self.reconciler = RouteReconciler("room-1", store, self.router, self.log)

    async def send(self, actor: Actor, command: object) -> None:
        await self.commands.handle("room-1", command, actor)  # type: ignore[arg-type]

    async def connections_become(self, expected: set[AudioRoute]) -> None:
        async with asyncio.timeout(5):
            while self.router.connections() != expected:
                await asyncio.sleep(0.005)


@pytest.fixture
async def room(store: EventStore, redis_client: redis.Redis) -> AsyncIterator[Room]:
    room = Room(store, redis_client)
    for actor in (CUSTOMER, AGENT, COACH):
        await room.send(actor, Join())
        room.reconciler.add_producer(actor.subject, actor.role)
        room.reconciler.add_consumer(actor.subject, actor.role)
    following = asyncio.create_task(room.reconciler.run())
    yield room
    following.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await following


def route(producer: str, consumer: str) -> AudioRoute:
    return AudioRoute(producer=producer, consumer=consumer)


CALL = {route("agent", "cust"), route("cust", "agent")}
MONITORED = CALL | {route("cust", "sup-1"), route("agent", "sup-1")}


async def test_actor_routes_follow_the_rooms_events(room: Room) -> None:
    await room.connections_become(CALL)

    await room.send(COACH, StartMonitor())
    await room.connections_become(MONITORED)
    await room.send(COACH, StartWhisper())
    await room.send(COACH, PressTalk())
    await room.connections_become(MONITORED | {route("sup-1", "agent")})


async def test_route_log_records_each_applied_and_removed_route_with_its_version(
    room: Room,
) -> None:
    await room.send(COACH, StartWhisper())
    await room.send(COACH, PressTalk())
    await room.connections_become(MONITORED | {route("sup-1", "agent")})
    room.reconciler.remove_producer("sup-1")
    await room.log.flush()

    changes = [(c.op, c.producer, c.consumer) for c in await room.log.read()]

    assert (RouteOp.APPLIED, "sup-1", "agent") in changes
    assert changes[-1] == (RouteOp.REMOVED, "sup-1", "agent")
    applied = [c for c in await room.log.read() if c.producer == "sup-1"]
    assert applied[0].version == 6  # 3 joins, monitor + whisper started, talk pressed
    assert all(c.producer != "sup-1" or c.consumer != "cust" for c in await room.log.read())


async def test_actor_never_routes_a_coach_to_the_customer_even_if_asked(room: Room) -> None:
    await room.send(COACH, StartWhisper())
    await room.send(COACH, PressTalk())
    await room.connections_become(MONITORED | {route("sup-1", "agent")})

    customer = room.router.consumers["cust"]
    assert {p.subject for p in customer.feeding.values()} == {"agent"}
