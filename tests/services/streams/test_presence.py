"""Presence on a real Redis (services/streams/presence.py): a worker's lease holds the presences
of its sessions; once it lapses, whoever sweeps ends them, with everything the coach was doing."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as redis

from events.room import (
    LeaveReason,
    MonitorStopped,
    ParticipantLeft,
    Role,
    TalkReleased,
    WhisperStopped,
)
from events.store import EventStore
from projections.commands import (
    Actor,
    AttachSession,
    Join,
    PressTalk,
    StartWhisper,
)
from services.streams.command_handler import Accepted, CommandHandler
from services.streams.presence import Presence
from services.streams.room_states import RoomStates

CUSTOMER = Actor(subject="cust", role=Role.CUSTOMER, name="Carla", can_whisper=False)
AGENT = Actor(subject="agent", role=Role.AGENT, name="Ana", can_whisper=False)
COACH = Actor(subject="sup-1", role=Role.SUPERVISOR, name="Sam", can_whisper=True)
NEW_AGENT = Actor(subject="agent-2", role=Role.AGENT, name="Bo", can_whisper=False)


def presence_of(store: EventStore, worker_id: str, **options: Any) -> Presence:
    states = RoomStates(store)
    return Presence(
        store.client,
        store.keys,
        CommandHandler(store, states),
        states,
        worker_id=worker_id,
        **options,
    )


async def whispering_call(worker: Presence, room_id: str = "room-1") -> None:
    """A call whose three participants are held by ``worker``'s sessions, the coach talking."""
    await worker.hold(room_id)
    for actor in (CUSTOMER, AGENT, COACH):
        attach = AttachSession(worker=worker.worker_id)
        assert isinstance(await worker.commands.handle(room_id, attach, actor), Accepted)
    await worker.commands.handle(room_id, StartWhisper(), COACH)
    await worker.commands.handle(room_id, PressTalk(), COACH)


async def test_a_lapsed_workers_presences_are_ended_by_whoever_sweeps(store: EventStore) -> None:
    dead = presence_of(store, "w-dead", lease_s=0.2)
    await dead.start()
    await whispering_call(dead)
    survivor = presence_of(store, "w-alive")
    await survivor.start()
    await asyncio.sleep(0.3)  # the dead worker renews nothing: its lease lapses

    await survivor.sweep()

    state = await survivor.states.current("room-1")
    assert state.participants == {}
    ended = [e.event for e in await store.read("room-1", after_version=6)]
    assert [e for e in ended if not isinstance(e, ParticipantLeft)] == [
        TalkReleased(coach="sup-1"),
        WhisperStopped(coach="sup-1"),
        MonitorStopped(coach="sup-1"),
    ]
    assert {e.subject for e in ended if isinstance(e, ParticipantLeft)} == {
        "cust",
        "agent",
        "sup-1",
    }
    assert {e.reason for e in ended if isinstance(e, ParticipantLeft)} == {LeaveReason.WORKER_LOST}
    written_by = {e.actor for e in await store.read("room-1", after_version=6)}
    assert written_by == {"worker:w-alive"}
    seat = await survivor.commands.handle("room-1", Join(), NEW_AGENT)  # the seat is free
    assert isinstance(seat, Accepted)
    assert await store.client.hget(store.keys.workers(), "w-dead") is None


async def test_a_live_workers_presences_are_left_alone(store: EventStore) -> None:
    live = presence_of(store, "w-live", lease_s=5)
    await live.start()
    await whispering_call(live)
    other = presence_of(store, "w-other")
    await other.start()

    await other.sweep()

    state = await other.states.current("room-1")
    assert set(state.participants) == {"cust", "agent", "sup-1"}
    assert state.coaches["sup-1"].talking


async def test_an_http_join_that_no_session_follows_ends_after_its_grace(
    store: EventStore,
) -> None:
    worker = presence_of(store, "w-1", grace_s=0.2)
    worker.commands.on_join_without_session = worker.expect_session
    await worker.commands.handle("room-1", Join(), COACH)
    await worker.commands.handle("room-1", Join(), AGENT)
    await worker.hold("room-1")
    await worker.commands.handle("room-1", AttachSession(worker="w-1"), AGENT)  # media came
    await worker.sweep()
    assert set((await worker.states.current("room-1")).participants) == {"sup-1", "agent"}
    await asyncio.sleep(0.3)

    await worker.sweep()

    assert set((await worker.states.current("room-1")).participants) == {"agent"}
    [left] = [e.event for e in await store.read("room-1") if isinstance(e.event, ParticipantLeft)]
    assert left == ParticipantLeft(subject="sup-1", reason=LeaveReason.NO_SESSION)


async def test_a_worker_that_stops_ends_its_own_presences(store: EventStore) -> None:
    worker = presence_of(store, "w-1")
    await worker.start()
    await whispering_call(worker)

    await worker.stop()

    assert (await worker.states.current("room-1")).participants == {}
    reasons = {
        e.event.reason for e in await store.read("room-1") if isinstance(e.event, ParticipantLeft)
    }
    assert reasons == {LeaveReason.WORKER_STOPPED}
    assert not await store.client.exists(store.keys.worker_lease("w-1"))


async def test_a_worker_that_finds_its_lease_lapsed_takes_it_again_and_attaches_again(
    store: EventStore, redis_client: redis.Redis
) -> None:
    worker = presence_of(store, "w-1", lease_s=5, renew_s=0.05)
    await worker.start()
    attached = asyncio.Event()

    async def attach_again() -> None:
        attached.set()

    worker.on_lease_lost = attach_again
    running = asyncio.create_task(worker.run())
    try:
        await redis_client.delete(store.keys.worker_lease("w-1"))  # as if Redis was away long

        await asyncio.wait_for(attached.wait(), 5)
        assert await redis_client.exists(store.keys.worker_lease("w-1"))
    finally:
        running.cancel()


async def test_live_workers_say_where_they_are_and_how_many_rooms_they_host(
    store: EventStore,
) -> None:
    busy, idle, dead = (
        presence_of(store, worker, lease_s=0.3, url=f"http://{worker}:8000")
        for worker in ("w-busy", "w-idle", "w-dead")
    )
    busy.load = lambda: 3
    for worker in (busy, idle, dead):
        await worker.start()
    await asyncio.sleep(0.2)
    await busy._renew()
    await idle._renew()
    await asyncio.sleep(0.2)  # the dead one's lease lapses

    live = await busy.live_workers()

    assert {worker: (info.url, info.rooms) for worker, info in live.items()} == {
        "w-busy": ("http://w-busy:8000", 3),
        "w-idle": ("http://w-idle:8000", 0),
    }
    assert await busy.least_loaded() == "w-idle"
    assert await idle.least_loaded() == "w-idle"
