from __future__ import annotations

import msgspec
import pytest
import redis.asyncio as redis

from events.room import ParticipantJoined, Role, TalkPressed, TalkReleased, WhisperStarted
from events.store import EventStore, Snapshot
from projections.decider import fold, initial_state
from services.streams.room_states import STATE_SCHEMA, RoomStates

COACH = ParticipantJoined(subject="sup-1", role=Role.SUPERVISOR, name="Sam", can_whisper=True)


async def write_room(store: EventStore, events: int) -> None:
    await store.append(
        "room-1", [COACH, WhisperStarted(coach="sup-1")], expected_version=0, actor="s"
    )
    version = 2
    while version < events:
        batch = [
            TalkPressed(coach="sup-1") if v % 2 else TalkReleased(coach="sup-1")
            for v in range(version + 1, min(version + 200, events) + 1)
        ]
        await store.append("room-1", batch, expected_version=version, actor="sup-1")
        version += len(batch)


async def test_snapshot_plus_tail_equals_full_replay(store: EventStore) -> None:
    await write_room(store, 1001)
    writer = RoomStates(store, snapshot_every=400)
    assert (await writer.current("room-1")).version == 1001
    snapshot = await store.load_snapshot("room-1")
    assert snapshot is not None
    assert snapshot.version == 1001
    await write_room_tail(store, after=1001, through=1051)

    recovered = await RoomStates(store).current("room-1")

    assert recovered == await RoomStates(store).replay("room-1")
    assert recovered == fold(initial_state("room-1"), await store.read("room-1"))
    assert recovered.version == 1051
    assert recovered.coaches["sup-1"].talking is True


async def write_room_tail(store: EventStore, *, after: int, through: int) -> None:
    events = [
        TalkPressed(coach="sup-1") if v % 2 else TalkReleased(coach="sup-1")
        for v in range(after + 1, through + 1)
    ]
    await store.append("room-1", events, expected_version=after, actor="sup-1")


async def test_snapshot_is_written_once_snapshot_every_events_have_passed(
    store: EventStore,
) -> None:
    states = RoomStates(store, snapshot_every=100)
    await write_room(store, 99)
    await states.current("room-1")
    assert await store.load_snapshot("room-1") is None

    await write_room_tail(store, after=99, through=100)
    await states.current("room-1")

    snapshot = await store.load_snapshot("room-1")
    assert snapshot is not None
    assert snapshot.version == 100


@pytest.mark.parametrize(
    "snapshot",
    [
        Snapshot(version=50, schema=STATE_SCHEMA, state=b"\xc1 not msgpack"),
        Snapshot(version=50, schema=STATE_SCHEMA + 1, state=msgspec.msgpack.encode({"x": 1})),
    ],
    ids=["unreadable", "other-schema"],
)
async def test_unusable_snapshot_is_ignored_for_a_full_replay(
    store: EventStore, snapshot: Snapshot
) -> None:
    await write_room(store, 60)
    await store.save_snapshot("room-1", snapshot)

    state = await RoomStates(store).current("room-1")

    assert state == await RoomStates(store).replay("room-1")
    assert state.version == 60


async def test_warm_room_reads_only_the_new_tail(
    store: EventStore, redis_client: redis.Redis
) -> None:
    states = RoomStates(store)
    await write_room(store, 10)
    await states.current("room-1")
    await write_room_tail(store, after=10, through=12)
    await redis_client.xtrim(store.keys.room("room-1"), minid="11-0")  # cached part gone

    state = await states.current("room-1")

    assert state.version == 12
    assert state.coaches["sup-1"].talking is False
