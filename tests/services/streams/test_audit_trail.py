from __future__ import annotations

import asyncio

import msgspec
import pytest
import redis.asyncio as redis

from events.errors import InconsistentEntry, StoreUnavailable
from events.feed import FeedConsumer
from events.room import CueAcknowledged, CueSent, MonitorStarted, ParticipantJoined, Role
from events.store import EventStore
from projections.audit import chain, verify
from services.cli import audit_replay, audit_verify
from services.errors import UnknownRoom
from services.redis_server import RedisServer, free_loopback_port
from services.settings import Settings
from services.streams.audit_trail import AUDIT_GROUP, AuditTrail

AGENT = ParticipantJoined(subject="agent-1", role=Role.AGENT, name="Ana")
COACH = ParticipantJoined(subject="sup-1", role=Role.SUPERVISOR, name="Sam", can_whisper=True)


async def two_rooms(store: EventStore) -> None:
    await store.append("room-a", [AGENT, COACH], expected_version=0, actor="agent-1")
    await store.append("room-b", [AGENT], expected_version=0, actor="agent-1")
    await store.append(
        "room-a",
        [MonitorStarted(coach="sup-1"), CueSent(cue_id="c1", coach="sup-1", text="Smile")],
        expected_version=2,
        actor="sup-1",
    )
    await store.append(
        "room-a", [CueAcknowledged(cue_id="c1")], expected_version=4, actor="agent-1"
    )


async def test_audit_group_records_every_event_of_every_room_in_a_verified_chain(
    store: EventStore, redis_client: redis.Redis
) -> None:
    await two_rooms(store)
    trail = AuditTrail(store)
    member = FeedConsumer(redis_client, group=AUDIT_GROUP, consumer="c1", block_ms=50)
    await member.ensure_group()

    await member.consume_once(trail.handle)

    for room in ("room-a", "room-b"):
        records = await trail.records(room)
        assert records == chain(await store.read(room))
        assert verify(records).ok
    assert len(await trail.records("room-a")) == 5


async def test_redelivered_or_reordered_feed_entries_record_each_event_once(
    store: EventStore,
) -> None:
    await two_rooms(store)
    trail = AuditTrail(store)
    envelopes = await store.read("room-a")

    for envelope in [envelopes[3], envelopes[1], envelopes[3], envelopes[4], envelopes[0]]:
        await trail.handle(envelope)

    assert await trail.records("room-a") == chain(envelopes)


async def test_racing_audit_workers_write_one_chain(store: EventStore) -> None:
    await two_rooms(store)
    envelopes = await store.read("room-a")
    workers = [AuditTrail(store) for _ in range(8)]

    await asyncio.gather(*(w.handle(e) for w in workers for e in reversed(envelopes)))

    assert await workers[0].records("room-a") == chain(envelopes)


async def test_a_feed_entry_naming_a_version_the_stream_lacks_is_inconsistent(
    store: EventStore, redis_client: redis.Redis
) -> None:
    # Well formed, but the room's stream has no such version: handling it must not spin.
    await two_rooms(store)
    ghost = msgspec.structs.replace((await store.read("room-b"))[0], version=7)
    trail = AuditTrail(store)

    with pytest.raises(InconsistentEntry, match="room 'room-b' has no version 2"):
        await asyncio.wait_for(trail.handle(ghost), 5)
    assert [r.version for r in await trail.records("room-b")] == [1]


async def test_reading_the_audit_while_redis_is_away_is_store_unavailable(
    redis_server: RedisServer,
) -> None:
    client = redis.Redis(port=free_loopback_port(), socket_connect_timeout=1)
    trail = AuditTrail(EventStore(client))

    with pytest.raises(StoreUnavailable, match="reading the audit of room 'room-a'"):
        await trail.records("room-a")
    await client.aclose()


async def rewrite_stream(
    client: redis.Redis, key: str, entry_id: bytes, old: bytes, new: bytes
) -> None:
    """What someone with write access to Redis could do: rewrite one entry in place."""
    entries = await client.xrange(key)
    await client.delete(key)
    for each_id, fields in entries:
        if each_id == entry_id:
            fields = {name: value.replace(old, new) for name, value in fields.items()}
        await client.xadd(key, fields, id=each_id)


@pytest.fixture
async def audited(store: EventStore, redis_server: RedisServer) -> Settings:
    await two_rooms(store)
    await AuditTrail(store).catch_up("room-a", through_version=5)
    return Settings(redis_url=redis_server.url)


async def test_audit_verify_passes_an_intact_log(
    audited: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await audit_verify(audited, "room-a") == 0
    assert msgspec.json.decode(capsys.readouterr().out)["checked"] == 5


async def test_audit_verify_names_an_altered_audit_record(
    store: EventStore,
    redis_client: redis.Redis,
    audited: Settings,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await rewrite_stream(redis_client, store.keys.audit("room-a"), b"4-0", b"Smile", b"Frown")

    assert await audit_verify(audited, "room-a") == 1
    report = msgspec.json.decode(capsys.readouterr().out)
    assert (report["broken_at"], report["reason"]) == (
        4,
        "record 4: its hash does not match its contents",
    )


async def test_audit_verify_names_an_event_altered_in_the_room_stream(
    store: EventStore,
    redis_client: redis.Redis,
    audited: Settings,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await rewrite_stream(redis_client, store.keys.room("room-a"), b"4-0", b"Smile", b"Frown")

    assert await audit_verify(audited, "room-a") == 1
    report = msgspec.json.decode(capsys.readouterr().out)
    assert (report["broken_at"], report["reason"]) == (
        4,
        "record 4: differs from version 4 of the room's stream",
    )


async def test_audit_verify_fails_while_records_are_missing_and_names_them(
    store: EventStore, audited: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    await store.append("room-a", [MonitorStarted(coach="sup-2")], expected_version=5, actor="x")
    cue = CueSent(cue_id="c2", coach="sup-1", text="Hi")
    await store.append("room-a", [cue], expected_version=6, actor="x")

    assert await audit_verify(audited, "room-a") == 1
    report = msgspec.json.decode(capsys.readouterr().out)
    assert (report["ok"], report["checked"], report["broken_at"]) == (False, 5, 6)
    assert report["reason"] == (
        "record 6: missing; the audit has 5 records but the room's stream 7 events "
        "(versions 6-7 unrecorded)"
    )


async def test_audit_verify_of_a_room_with_no_events_is_an_error(audited: Settings) -> None:
    with pytest.raises(UnknownRoom, match="room 'room-z' has no events"):
        await audit_verify(audited, "room-z")


async def test_audit_replay_prints_the_room_as_of_a_version(
    audited: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await audit_replay(audited, "room-a", 4, None) == 0

    replayed = msgspec.json.decode(capsys.readouterr().out)
    assert replayed["state"]["version"] == 4
    assert [c["text"] for c in replayed["timeline"]["cues"]] == ["Smile"]
    assert replayed["timeline"]["cues"][0]["acknowledged"] is None  # acknowledged at version 5
