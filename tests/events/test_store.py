from __future__ import annotations

import asyncio
import contextlib

import pytest
import redis.asyncio as redis

from events.errors import (
    IdempotencyKeyReused,
    InvalidRoomId,
    MalformedEvent,
    WrongExpectedVersion,
)
from events.room import CueSent, MonitorStarted, ParticipantJoined, Role
from events.store import EventStore, Snapshot
from services.redis_server import RedisServer

JOIN_AGENT = ParticipantJoined(subject="agent-1", role=Role.AGENT, name="Ana")
JOIN_SUPERVISOR = ParticipantJoined(
    subject="sup-1", role=Role.SUPERVISOR, name="Sam", can_whisper=True
)


async def test_append_stores_events_as_consecutive_versions(store: EventStore) -> None:
    result = await store.append(
        "room-1",
        [JOIN_AGENT, JOIN_SUPERVISOR],
        expected_version=0,
        actor="agent-1",
        correlation_id="call-7",
    )

    assert (result.first_version, result.last_version, result.duplicate) == (1, 2, False)
    envelopes = await store.read("room-1")
    assert [(e.version, e.event) for e in envelopes] == [(1, JOIN_AGENT), (2, JOIN_SUPERVISOR)]
    assert {(e.room_id, e.actor, e.correlation_id) for e in envelopes} == {
        ("room-1", "agent-1", "call-7")
    }
    assert len({e.event_id for e in envelopes}) == 2
    assert await store.version("room-1") == 2


async def test_append_with_stale_expected_version_raises_conflict(store: EventStore) -> None:
    await store.append("room-1", [JOIN_AGENT], expected_version=0, actor="agent-1")

    with pytest.raises(WrongExpectedVersion, match="at version 1, not the expected 0") as info:
        await store.append("room-1", [JOIN_SUPERVISOR], expected_version=0, actor="sup-1")

    assert (info.value.expected, info.value.actual) == (0, 1)
    assert [e.event for e in await store.read("room-1")] == [JOIN_AGENT]


async def test_concurrent_appenders_with_one_expected_version_exactly_one_wins(
    store: EventStore,
) -> None:
    async def attempt(n: int) -> bool:
        try:
            await store.append(
                "room-1", [MonitorStarted(coach=f"sup-{n}")], expected_version=0, actor="x"
            )
        except WrongExpectedVersion:
            return False
        return True

    outcomes = await asyncio.gather(*(attempt(n) for n in range(50)))

    assert outcomes.count(True) == 1
    assert [e.version for e in await store.read("room-1")] == [1]


async def test_appenders_retrying_on_conflict_leave_no_gap_or_duplicate(
    store: EventStore, redis_client: redis.Redis
) -> None:
    async def appender(n: int) -> None:
        for i in range(10):
            while True:
                version = await store.version("room-1")
                try:
                    await store.append(
                        "room-1",
                        [CueSent(cue_id=f"{n}-{i}", coach="s", text="t")],
                        expected_version=version,
                        actor=f"w{n}",
                    )
                    break
                except WrongExpectedVersion:
                    continue

    await asyncio.gather(*(appender(n) for n in range(20)))

    envelopes = await store.read("room-1")
    assert [e.version for e in envelopes] == list(range(1, 201))
    cue_ids = [e.event.cue_id for e in envelopes if isinstance(e.event, CueSent)]
    assert sorted(cue_ids) == sorted(f"{n}-{i}" for n in range(20) for i in range(10))
    feed = await redis_client.xrange(store.keys.feed(0))
    assert [int(fields[b"version"]) for _id, fields in feed] == list(range(1, 201))


async def test_retry_with_same_idempotency_key_returns_first_result_and_writes_nothing(
    store: EventStore,
) -> None:
    first = await store.append(
        "room-1", [JOIN_AGENT], expected_version=0, actor="agent-1", idempotency_key="k1"
    )
    retry = await store.append(
        "room-1", [JOIN_AGENT], expected_version=0, actor="agent-1", idempotency_key="k1"
    )

    assert (first.first_version, first.last_version, first.duplicate) == (1, 1, False)
    assert (retry.first_version, retry.last_version, retry.duplicate) == (1, 1, True)
    assert len(await store.read("room-1")) == 1


async def test_idempotency_key_reused_for_other_events_is_refused(store: EventStore) -> None:
    await store.append(
        "room-1", [JOIN_AGENT], expected_version=0, actor="agent-1", idempotency_key="k1"
    )

    with pytest.raises(IdempotencyKeyReused, match="'k1' of room 'room-1'"):
        await store.append(
            "room-1", [JOIN_SUPERVISOR], expected_version=1, actor="sup-1", idempotency_key="k1"
        )
    assert await store.version("room-1") == 1


async def test_read_after_version_returns_the_tail(store: EventStore) -> None:
    events = [MonitorStarted(coach=f"sup-{n}") for n in range(5)]
    await store.append("room-1", events, expected_version=0, actor="x")

    tail = await store.read("room-1", after_version=3)

    assert [(e.version, e.event) for e in tail] == [(4, events[3]), (5, events[4])]
    assert [e.version async for e in store.read_all("room-1", page=2)] == [1, 2, 3, 4, 5]


async def test_snapshot_round_trips(store: EventStore) -> None:
    assert await store.load_snapshot("room-1") is None

    await store.save_snapshot("room-1", Snapshot(version=7, schema=1, state=b"\x01\x02"))

    assert await store.load_snapshot("room-1") == Snapshot(version=7, schema=1, state=b"\x01\x02")


@pytest.mark.parametrize("room_id", ["", "room}{x", "a b", "x" * 129, ".", ".."])
async def test_room_ids_that_cannot_name_a_stream_are_refused(
    store: EventStore, room_id: str
) -> None:
    with pytest.raises(InvalidRoomId, match="invalid room id"):
        await store.append(room_id, [JOIN_AGENT], expected_version=0, actor="a")


async def test_reading_a_corrupted_entry_names_the_room_and_entry(
    store: EventStore, redis_client: redis.Redis
) -> None:
    await redis_client.xadd(store.keys.room("room-1"), {"e": b"{not json"}, id="1-0")

    with pytest.raises(MalformedEvent, match="not JSON"):
        await store.read("room-1")


async def test_acknowledged_appends_survive_kill_9_of_redis(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Own server: it is killed. appendfsync always: an acknowledged append is on disk.
    server = RedisServer(tmp_path_factory.mktemp("durable"), binary=redis_server.binary)
    server.start()
    acknowledged: dict[str, int] = {}
    enough_acknowledged = asyncio.Event()
    try:
        client = redis.Redis.from_url(server.url)
        store = EventStore(client)

        async def appender(room: str) -> None:
            version = 0
            with contextlib.suppress(Exception):  # the crash ends every appender
                while True:
                    await store.append(
                        room, [MonitorStarted(coach="s")], expected_version=version, actor="a"
                    )
                    version += 1
                    acknowledged[room] = version
                    if sum(acknowledged.values()) >= 400:
                        enough_acknowledged.set()

        appenders = [asyncio.create_task(appender(f"room-{n}")) for n in range(8)]
        await asyncio.wait_for(enough_acknowledged.wait(), 30)
        server.kill()
        await asyncio.gather(*appenders)
        await client.aclose()

        server.start()
        client = redis.Redis.from_url(server.url)
        store = EventStore(client)
        for room, version in acknowledged.items():
            assert await store.version(room) >= version
            assert [e.version for e in await store.read(room)][:version] == list(
                range(1, version + 1)
            )
        await client.aclose()
    finally:
        server.stop()
