from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest
import redis.asyncio as redis

from events.envelope import Envelope
from events.errors import InconsistentEntry, StoreUnavailable
from events.feed import FeedConsumer, run_group, trim_feed
from events.room import MonitorStarted
from events.store import EventStore
from services.redis_server import RedisServer


async def append_monitors(store: EventStore, room: str, count: int) -> None:
    events = [MonitorStarted(coach=f"sup-{n}") for n in range(count)]
    await store.append(room, events, expected_version=0, actor="x")


def consumer(client: redis.Redis, name: str, **options: int) -> FeedConsumer:
    return FeedConsumer(client, group="audit", consumer=name, block_ms=50, **options)


async def test_consumer_handles_every_room_in_commit_order(
    store: EventStore, redis_client: redis.Redis
) -> None:
    await append_monitors(store, "room-a", 3)
    await append_monitors(store, "room-b", 2)
    seen: list[tuple[str, int]] = []

    async def handler(envelope: Envelope) -> None:
        seen.append((envelope.room_id, envelope.version))

    member = consumer(redis_client, "c1")
    await member.ensure_group()
    await member.consume_once(handler)

    assert seen == [("room-a", 1), ("room-a", 2), ("room-a", 3), ("room-b", 1), ("room-b", 2)]
    assert (await redis_client.xpending(member.feed, "audit"))["pending"] == 0


async def test_entries_of_a_consumer_killed_mid_batch_are_claimed_by_another(
    store: EventStore, redis_client: redis.Redis
) -> None:
    await append_monitors(store, "room-1", 10)
    handled_by_first: list[int] = []
    first_stuck = asyncio.Event()

    async def hangs_on_the_fourth(envelope: Envelope) -> None:
        if envelope.version == 4:
            first_stuck.set()
            await asyncio.Event().wait()  # never returns: the process is about to die
        handled_by_first.append(envelope.version)

    first = consumer(redis_client, "c1", batch=10)
    await first.ensure_group()
    dying = asyncio.create_task(first.consume_once(hangs_on_the_fourth))
    await asyncio.wait_for(first_stuck.wait(), 5)
    dying.cancel()  # killed mid-batch: versions 4..10 delivered to c1, never acknowledged
    with pytest.raises(asyncio.CancelledError):
        await dying

    handled_by_second: list[int] = []

    async def record(envelope: Envelope) -> None:
        handled_by_second.append(envelope.version)

    second = consumer(redis_client, "c2", claim_idle_ms=10)
    await asyncio.sleep(0.02)
    await second.consume_once(record)

    assert handled_by_first == [1, 2, 3]
    assert handled_by_second == [4, 5, 6, 7, 8, 9, 10]
    assert (await redis_client.xpending(first.feed, "audit"))["pending"] == 0


async def test_restarted_consumer_first_handles_its_own_pending_entries(
    store: EventStore, redis_client: redis.Redis
) -> None:
    await append_monitors(store, "room-1", 3)
    first = consumer(redis_client, "c1")
    await first.ensure_group()
    await redis_client.xreadgroup("audit", "c1", {first.feed: ">"}, count=3)  # then it died
    await append_monitors(store, "room-2", 1)
    seen: list[tuple[str, int]] = []

    async def handler(envelope: Envelope) -> None:
        seen.append((envelope.room_id, envelope.version))
        if len(seen) == 4:
            raise asyncio.CancelledError  # end run() once all four are in

    with pytest.raises(asyncio.CancelledError):
        await consumer(redis_client, "c1").run(handler)

    assert seen == [("room-1", 1), ("room-1", 2), ("room-1", 3), ("room-2", 1)]


async def test_malformed_entry_is_quarantined_and_does_not_stop_the_consumer(
    store: EventStore, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    await append_monitors(store, "room-1", 1)
    feed = store.keys.feed(0)
    bad_id = await redis_client.xadd(feed, {"room": "room-1", "version": 2, "e": b'{"bad":1}'})
    await store.append("room-2", [MonitorStarted(coach="s")], expected_version=0, actor="x")
    seen: list[str] = []

    async def handler(envelope: Envelope) -> None:
        seen.append(envelope.room_id)

    member = consumer(redis_client, "c1")
    await member.ensure_group()
    with caplog.at_level(logging.ERROR, logger="events.feed"):
        await member.consume_once(handler)

    assert seen == ["room-1", "room-2"]
    assert f"quarantined {feed} entry {bad_id.decode()}" in caplog.text
    [(_id, quarantined)] = await redis_client.xrange(store.keys.quarantine(0))
    assert quarantined[b"e"] == b'{"bad":1}'
    assert quarantined[b"source_id"] == bad_id
    assert b"Object missing required field" in quarantined[b"reason"]
    assert (await redis_client.xpending(feed, "audit"))["pending"] == 0


async def test_entry_whose_handler_keeps_failing_is_quarantined_after_max_deliveries(
    store: EventStore, redis_client: redis.Redis
) -> None:
    await append_monitors(store, "room-1", 1)

    async def broken(envelope: Envelope) -> None:
        raise RuntimeError("projection bug")

    member = consumer(redis_client, "c1", claim_idle_ms=0, max_deliveries=3)
    await member.ensure_group()
    for _ in range(3):
        await member.consume_once(broken)

    [(_id, quarantined)] = await redis_client.xrange(store.keys.quarantine(0))
    assert b"handler failed 3 times" in quarantined[b"reason"]
    assert (await redis_client.xpending(member.feed, "audit"))["pending"] == 0


async def test_a_batch_handler_takes_the_whole_batch_and_it_is_acknowledged_at_once(
    store: EventStore, redis_client: redis.Redis
) -> None:
    await append_monitors(store, "room-1", 3)
    batches: list[list[int]] = []

    async def one_by_one(envelope: Envelope) -> None:
        raise AssertionError("the batch handler took them all")

    async def batch(envelopes: list[Envelope]) -> None:
        batches.append([e.version for e in envelopes])

    member = consumer(redis_client, "c1")
    await member.ensure_group()
    await member.consume_once(one_by_one, batch_handler=batch)

    assert batches == [[1, 2, 3]]
    assert (await redis_client.xpending(member.feed, "audit"))["pending"] == 0


async def test_a_failed_batch_is_handled_again_entry_by_entry(
    store: EventStore, redis_client: redis.Redis
) -> None:
    await append_monitors(store, "room-1", 3)
    seen: list[int] = []

    async def one_by_one(envelope: Envelope) -> None:
        if envelope.version == 2:
            raise InconsistentEntry("room 'room-1' has no version 2")
        seen.append(envelope.version)

    async def batch(envelopes: list[Envelope]) -> None:
        raise InconsistentEntry("one of them is bad")

    member = consumer(redis_client, "c1")
    await member.ensure_group()
    await member.consume_once(one_by_one, batch_handler=batch)

    assert seen == [1, 3]
    assert await redis_client.xlen(store.keys.quarantine(0)) == 1
    assert (await redis_client.xpending(member.feed, "audit"))["pending"] == 0


async def test_an_entry_its_handler_finds_inconsistent_is_quarantined_at_once(
    store: EventStore, redis_client: redis.Redis
) -> None:
    await append_monitors(store, "room-1", 2)
    seen: list[int] = []

    async def handler(envelope: Envelope) -> None:
        if envelope.version == 1:
            raise InconsistentEntry("room 'room-1' has no version 1")
        seen.append(envelope.version)

    member = consumer(redis_client, "c1", max_deliveries=5)
    await member.ensure_group()
    await member.consume_once(handler)

    assert seen == [2]
    [(_id, quarantined)] = await redis_client.xrange(store.keys.quarantine(0))
    assert quarantined[b"reason"] == b"room 'room-1' has no version 1"
    assert (await redis_client.xpending(member.feed, "audit"))["pending"] == 0


async def test_an_entry_whose_handler_finds_redis_away_stays_pending_however_often(
    store: EventStore, redis_client: redis.Redis
) -> None:
    # An outage is not the entry's fault: it must never count towards quarantine.
    await append_monitors(store, "room-1", 1)

    async def redis_away(envelope: Envelope) -> None:
        raise StoreUnavailable("XRANGE 'room-1' failed: Connection refused")

    member = consumer(redis_client, "c1", claim_idle_ms=0, max_deliveries=2)
    await member.ensure_group()
    for _ in range(4):
        with pytest.raises(StoreUnavailable):
            await member.consume_once(redis_away)

    assert await redis_client.xlen(store.keys.quarantine(0)) == 0
    assert (await redis_client.xpending(member.feed, "audit"))["pending"] == 1


async def test_a_group_goes_on_by_itself_after_redis_is_killed_and_restarted(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Its own server, killed with SIGKILL and started again on the same port and data.
    server = RedisServer(tmp_path_factory.mktemp("outage"), binary=redis_server.binary)
    server.start()
    client = redis.Redis.from_url(server.url, socket_connect_timeout=1)
    store = EventStore(client)
    seen: list[tuple[str, int]] = []

    async def handler(envelope: Envelope) -> None:
        seen.append((envelope.room_id, envelope.version))

    async def seen_reaches(count: int) -> None:
        async with asyncio.timeout(20):
            while len(seen) < count:
                await asyncio.sleep(0.02)

    group = asyncio.create_task(
        run_group(
            client,
            group="audit",
            consumer="c1",
            handler=handler,
            keys=store.keys,
            codec=store.codec,
            block_ms=50,
        )
    )
    try:
        await append_monitors(store, "room-1", 1)
        await seen_reaches(1)
        server.kill()
        await asyncio.sleep(2)  # the group meets the outage, and backs off
        assert not group.done()
        server.start()
        await append_monitors(store, "room-2", 1)
        await seen_reaches(2)

        assert seen == [("room-1", 1), ("room-2", 1)]
    finally:
        group.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await group
        await client.aclose()
        server.stop()


async def test_trim_feed_drops_only_what_every_group_handled_and_is_old_enough(
    store: EventStore, redis_client: redis.Redis
) -> None:
    await append_monitors(store, "room-1", 6)
    feed = store.keys.feed(0)
    fast, slow = (
        consumer(redis_client, "c1"),
        FeedConsumer(redis_client, group="webhooks", consumer="w1", block_ms=50, batch=4),
    )
    await fast.ensure_group()
    await slow.ensure_group()

    async def ignore(envelope: Envelope) -> None:
        pass

    await fast.consume_once(ignore)  # the audit group handled all 6
    await redis_client.xreadgroup("webhooks", "w1", {feed: ">"}, count=4)  # 1-4 pending
    await slow.consume_once(ignore)  # reads 5 and 6 and acks them; 1-4 stay pending

    assert await trim_feed(redis_client, feed, keep_s=3600) == 0  # nothing is old enough
    assert await trim_feed(redis_client, feed, keep_s=0) == 0  # 1-4 still pending for webhooks
    await redis_client.xack(feed, "webhooks", *[i for i, _ in await redis_client.xrange(feed)][:2])

    assert await trim_feed(redis_client, feed, keep_s=0) == 2
    assert [int(f[b"version"]) for _id, f in await redis_client.xrange(feed)] == [3, 4, 5, 6]
    assert [e.version for e in await store.read("room-1")] == [1, 2, 3, 4, 5, 6]


async def test_trim_feed_leaves_a_feed_without_groups_whole(
    store: EventStore, redis_client: redis.Redis
) -> None:
    await append_monitors(store, "room-1", 3)

    assert await trim_feed(redis_client, store.keys.feed(0), keep_s=0) == 0
    assert await trim_feed(redis_client, "no-such-feed", keep_s=0) == 0
