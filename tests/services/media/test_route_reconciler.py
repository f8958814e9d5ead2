"""The route reconciler on a real store: events in, router connections and route log out."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

from events.room import Role
from events.stream_reader import StreamReader
from projections.commands import Actor, Join, PressTalk, StartMonitor, StartWhisper
from projections.routes import AudioRoute
from services.media import route_reconciler
from services.media.route_log import RouteLog, RouteOp
from services.media.route_reconciler import RouteReconciler
from services.media.router import FORBIDDEN_ROUTES, Router
from services.streams.command_handler import CommandHandler
from services.streams.room_states import RoomStates
from tests.services.media.guards import remove_slot_kinds, stub_out_refusal

CUSTOMER = Actor(subject="cust", role=Role.CUSTOMER, name="Carla", can_whisper=False)
AGENT = Actor(subject="agent", role=Role.AGENT, name="Ana", can_whisper=False)
COACH = Actor(subject="sup-1", role=Role.SUPERVISOR, name="Sam", can_whisper=True)


class Room:
    def __init__(self, reader: StreamReader, redis_client: redis.Redis) -> None:
        store = reader.store
        self.commands = CommandHandler(store, RoomStates(store))
        self.router = Router("room-1")
        self.log = RouteLog(redis_client, store.keys, "room-1")
        self.reconciler = RouteReconciler("room-1", reader, self.router, self.log)

    async def send(self, actor: Actor, command: object) -> None:
        await self.commands.handle("room-1", command, actor)  # type: ignore[arg-type]

    async def connections_become(self, expected: set[AudioRoute]) -> None:
        async with asyncio.timeout(5):
            while self.router.connections() != expected:
                await asyncio.sleep(0.005)

    async def connections_include(self, wanted: AudioRoute) -> None:
        async with asyncio.timeout(5):
            while wanted not in self.router.connections():
                await asyncio.sleep(0.005)


@pytest.fixture
async def room(reader: StreamReader, redis_client: redis.Redis) -> AsyncIterator[Room]:
    room = Room(reader, redis_client)
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

    assert all(c.producer != "sup-1" or c.consumer != "cust" for c in await room.log.read()), (
        "sup-1 → cust was asked for"
    )
    assert (RouteOp.APPLIED, "sup-1", "agent") in changes
    assert changes[-1] == (RouteOp.REMOVED, "sup-1", "agent")
    applied = [c for c in await room.log.read() if c.producer == "sup-1"]
    assert applied[0].version == 6  # 3 joins, monitor + whisper started, talk pressed


def ask_for_the_coach_on_the_customer(patch: pytest.MonkeyPatch) -> None:
    """Guard (a) removed: the routes the reconciler looks up also ask for sup-1 → cust."""
    decided = route_reconciler.routes
    patch.setattr(
        route_reconciler, "routes", lambda state: decided(state) | {route("sup-1", "cust")}
    )


def leave_only_the_refusal(room: Room, patch: pytest.MonkeyPatch) -> None:
    """Guards (a) and (c) removed: sup-1 → cust is asked for, and the customer has a slot for it."""
    ask_for_the_coach_on_the_customer(patch)
    remove_slot_kinds(patch)
    room.reconciler.add_consumer(CUSTOMER.subject, CUSTOMER.role)  # rebuilt with a coach slot


async def test_route_log_check_fails_once_the_decider_asks_for_the_coach_on_the_customer(
    room: Room, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Guard (a) as the audit sees it: a route asked for is logged, refused or not.
    ask_for_the_coach_on_the_customer(monkeypatch)

    with pytest.raises(AssertionError, match="sup-1 → cust was asked for"):
        await test_route_log_records_each_applied_and_removed_route_with_its_version(room)

    changes = [(c.op, c.producer, c.consumer) for c in await room.log.read()]
    assert (RouteOp.REFUSED, "sup-1", "cust") in changes


async def assert_coach_asked_onto_the_customer_is_refused(room: Room) -> None:
    refusals = FORBIDDEN_ROUTES._value.get()
    await room.send(COACH, StartWhisper())
    await room.send(COACH, PressTalk())
    # Applied by the same reconcile that also tried sup-1 → cust: no wait for the outcome itself.
    await room.connections_include(route("sup-1", "agent"))
    await room.log.flush()

    to_customer = [
        c for c in await room.log.read() if (c.producer, c.consumer) == ("sup-1", "cust")
    ]
    customer = room.router.consumers["cust"]

    assert to_customer
    assert {c.op for c in to_customer} == {RouteOp.REFUSED}
    assert all("refused sup-1 → cust: a supervisor's voice" in c.detail for c in to_customer)
    assert FORBIDDEN_ROUTES._value.get() > refusals
    assert {p.subject for p in customer.feeding.values()} == {"agent"}
    await room.connections_become(MONITORED | {route("sup-1", "agent")})


async def test_actor_never_routes_a_coach_to_the_customer_even_if_asked(
    room: Room, monkeypatch: pytest.MonkeyPatch
) -> None:
    leave_only_the_refusal(room, monkeypatch)

    await assert_coach_asked_onto_the_customer_is_refused(room)


async def test_actor_routes_a_coach_to_the_customer_when_asked_once_refusal_is_stubbed_out(
    room: Room, monkeypatch: pytest.MonkeyPatch
) -> None:
    leave_only_the_refusal(room, monkeypatch)
    stub_out_refusal(monkeypatch)

    with pytest.raises(AssertionError, match="APPLIED"):
        await assert_coach_asked_onto_the_customer_is_refused(room)

    customer = room.router.consumers["cust"]
    assert {p.subject for p in customer.feeding.values()} == {"agent", "sup-1"}
