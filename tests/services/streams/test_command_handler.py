from __future__ import annotations

import asyncio

import redis.asyncio as redis

from events.room import MonitorStarted, ParticipantJoined, Role, WhisperStarted
from events.store import EventStore
from projections.commands import Actor, Join, SendCue, StartMonitor, StartWhisper
from projections.decider import Rejection
from services.streams.command_handler import Accepted, CommandHandler, Unchanged
from services.streams.room_states import RoomStates

AGENT = Actor(subject="agent-1", role=Role.AGENT, name="Ana", can_whisper=False)
COACH = Actor(subject="sup-1", role=Role.SUPERVISOR, name="Sam", can_whisper=True)
LISTENER = Actor(subject="sup-2", role=Role.SUPERVISOR, name="Lee", can_whisper=False)


def handler_for(store: EventStore) -> CommandHandler:
    return CommandHandler(store, RoomStates(store))


async def test_accepted_command_is_stored_with_actor_and_causation(store: EventStore) -> None:
    handler = handler_for(store)
    await handler.handle("room-1", Join(), COACH)

    outcome = await handler.handle(
        "room-1", StartWhisper(), COACH, idempotency_key="click-1", correlation_id="call-9"
    )

    assert outcome == Accepted(first_version=2, last_version=3)
    stored = await store.read("room-1", after_version=1)
    assert [e.event for e in stored] == [
        MonitorStarted(coach="sup-1"),
        WhisperStarted(coach="sup-1"),
    ]
    assert {(e.actor, e.causation_id, e.correlation_id) for e in stored} == {
        ("sup-1", "click-1", "call-9")
    }


async def test_command_that_changes_nothing_stores_nothing(store: EventStore) -> None:
    handler = handler_for(store)
    await handler.handle("room-1", Join(), COACH)
    await handler.handle("room-1", StartMonitor(), COACH)

    assert await handler.handle("room-1", StartMonitor(), COACH) == Unchanged(version=2)
    assert await store.version("room-1") == 2


async def test_rejected_command_stores_nothing_and_says_why(store: EventStore) -> None:
    handler = handler_for(store)
    await handler.handle("room-1", Join(), LISTENER)

    outcome = await handler.handle("room-1", StartWhisper(), LISTENER)

    assert isinstance(outcome, Rejection)
    assert "whisper claim" in outcome.reason
    assert await store.version("room-1") == 1


async def test_command_is_decided_again_when_another_writer_appended_first(
    store: EventStore,
) -> None:
    handler = handler_for(store)
    await handler.handle("room-1", Join(), COACH)
    await handler.states.current("room-1")  # warm: the handler believes version 1
    other = handler_for(store)  # another node
    await other.handle("room-1", Join(), AGENT)

    outcome = await handler.handle("room-1", SendCue(cue_id="c1", text="Slow down"), COACH)

    assert outcome == Accepted(first_version=3, last_version=3)


async def test_many_nodes_deciding_at_once_store_each_join_once(store: EventStore) -> None:
    supervisors = [
        Actor(subject=f"sup-{n}", role=Role.SUPERVISOR, name=f"S{n}", can_whisper=True)
        for n in range(20)
    ]

    outcomes = await asyncio.gather(
        *(handler_for(store).handle("room-1", Join(), actor) for actor in supervisors)
    )

    assert all(isinstance(outcome, Accepted) for outcome in outcomes)
    joined = [e.event for e in await store.read("room-1")]
    assert sorted(e.subject for e in joined if isinstance(e, ParticipantJoined)) == sorted(
        a.subject for a in supervisors
    )


async def test_only_one_of_racing_agents_joins(store: EventStore) -> None:
    rivals = [
        Actor(subject=f"agent-{n}", role=Role.AGENT, name="A", can_whisper=False) for n in range(5)
    ]

    outcomes = await asyncio.gather(
        *(handler_for(store).handle("room-1", Join(), actor) for actor in rivals)
    )

    assert sum(isinstance(o, Accepted) for o in outcomes) == 1
    assert all(isinstance(o, Rejection) for o in outcomes if not isinstance(o, Accepted))
    assert await store.version("room-1") == 1


async def lose_the_last_write(redis_client: redis.Redis, store: EventStore, room: str) -> None:
    """Leave the room's stream as a lost acknowledged write leaves it: one version short, as if
    Redis had come back from an AOF that missed the last append (the cache and the snapshot
    still remember it)."""
    key = store.keys.room(room)
    entries = await redis_client.xrange(key)
    await redis_client.delete(key)
    for entry_id, fields in entries[:-1]:
        await redis_client.xadd(key, fields, id=entry_id)


async def monitored_then_lost(store: EventStore, redis_client: redis.Redis) -> RoomStates:
    """A room whose coach started monitoring (version 2), read back as a page reads it, so that
    it is cached and snapshotted, and then lost from the stream."""
    states = RoomStates(store, snapshot_every=2)
    handler = CommandHandler(store, states)
    await handler.handle("room-1", Join(), COACH)
    await handler.handle("room-1", StartMonitor(), COACH)
    assert (await states.current("room-1")).version == 2
    assert (await store.load_snapshot("room-1")) is not None
    await lose_the_last_write(redis_client, store, "room-1")
    return states


async def test_a_command_after_a_lost_write_reloads_the_room_instead_of_conflicting(
    store: EventStore, redis_client: redis.Redis
) -> None:
    states = await monitored_then_lost(store, redis_client)

    outcome = await CommandHandler(store, states).handle("room-1", StartMonitor(), COACH)

    assert outcome == Accepted(first_version=2, last_version=2)
    assert [e.version for e in await store.read("room-1")] == [1, 2]
    assert (await states.current("room-1")).version == 2


async def test_a_restarted_node_after_a_lost_write_does_not_trust_a_snapshot_ahead_of_the_store(
    store: EventStore, redis_client: redis.Redis
) -> None:
    await monitored_then_lost(store, redis_client)
    restarted = CommandHandler(store, RoomStates(store, snapshot_every=2))

    outcome = await restarted.handle("room-1", StartMonitor(), COACH)

    assert outcome == Accepted(first_version=2, last_version=2)
