"""The event layer on a real Redis Cluster: three masters with a replica each (tests/cluster.py),
rooms spread over partitions whose keys share a hash tag, so that every script and every
blocking read touches one slot."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as redis

from events.envelope import Envelope
from events.errors import Fenced, StoreUnavailable, WrongExpectedVersion
from events.feed import FeedConsumer
from events.keys import KeySpace
from events.room import CueSent, ParticipantJoined, Role
from events.room_leases import RoomLeases
from events.store import EventStore
from events.stream_reader import StreamReader
from tests.cluster import RedisClusterServers

PARTITIONS = 3
JOIN = ParticipantJoined(subject="agent-1", role=Role.AGENT, name="Ana")


def cue(n: int) -> CueSent:
    return CueSent(cue_id=f"c{n}", coach="sup-1", text=f"cue {n}")


@pytest.fixture
async def client(cluster: RedisClusterServers) -> AsyncIterator[redis.RedisCluster]:
    connected = redis.RedisCluster.from_url(cluster.url)
    await connected.flushall()  # every master's
    yield connected
    await connected.aclose()


@pytest.fixture
def store(client: redis.RedisCluster) -> EventStore:
    return EventStore(client, KeySpace(partitions=PARTITIONS))


def rooms_in_every_partition(keys: KeySpace) -> list[str]:
    """One room per partition: their streams sit in as many slots, on different masters."""
    rooms: dict[int, str] = {}
    n = 0
    while len(rooms) < keys.partitions:
        rooms.setdefault(keys.partition_of(f"room-{n}"), f"room-{n}")
        n += 1
    return sorted(rooms.values())


async def test_appends_reads_and_conflicts_work_in_every_slot(store: EventStore) -> None:
    rooms = rooms_in_every_partition(store.keys)
    for room in rooms:
        await store.append(room, [JOIN, cue(1)], expected_version=0, actor="a", epoch=None)
        with pytest.raises(WrongExpectedVersion):
            await store.append(room, [cue(2)], expected_version=1, actor="a")

    for room in rooms:
        assert [e.version for e in await store.read(room)] == [1, 2]
        assert await store.version(room) == 2


async def test_one_reader_follows_rooms_of_every_partition(
    store: EventStore, cluster: RedisClusterServers
) -> None:
    rooms = rooms_in_every_partition(store.keys)
    reads = redis.RedisCluster.from_url(cluster.url)
    reader = StreamReader(store, reads, block_ms=200)
    following = {room: reader.follow(room) for room in rooms}
    try:
        for room in rooms:
            await store.append(room, [JOIN], expected_version=0, actor="a")
        async with asyncio.timeout(10):
            first: dict[str, Envelope] = {r: await anext(f) for r, f in following.items()}
            for room in rooms:  # and what comes while the reads are blocked
                await store.append(room, [cue(1)], expected_version=1, actor="a")
            second = {r: await anext(f) for r, f in following.items()}
    finally:
        for follow in following.values():
            await follow.aclose()
        await reader.close()
        await reads.aclose()

    assert {room: envelope.version for room, envelope in first.items()} == dict.fromkeys(rooms, 1)
    assert {room: envelope.event for room, envelope in second.items()} == dict.fromkeys(
        rooms, cue(1)
    )


async def test_each_partitions_feed_is_consumed_by_its_group(
    store: EventStore, client: redis.RedisCluster
) -> None:
    rooms = rooms_in_every_partition(store.keys)
    for room in rooms:
        await store.append(room, [JOIN, cue(1)], expected_version=0, actor="a")
    seen: list[tuple[str, int]] = []

    async def handler(envelope: Envelope) -> None:
        seen.append((envelope.room_id, envelope.version))

    for partition in range(PARTITIONS):
        member = FeedConsumer(
            client,
            group="audit",
            consumer="c1",
            partition=partition,
            keys=store.keys,
            block_ms=50,
        )
        await member.ensure_group()
        await member.consume_once(handler)

    assert sorted(seen) == sorted((room, version) for room in rooms for version in (1, 2))


async def test_leases_are_renewed_and_stale_appends_fenced_in_every_slot(
    store: EventStore, client: redis.RedisCluster
) -> None:
    rooms = rooms_in_every_partition(store.keys)
    leases = RoomLeases(client, store.keys, lease_s=0.3)
    stale = [await leases.acquire(room, "w-a") for room in rooms]
    assert await leases.renew(stale) == []
    await asyncio.sleep(0.4)
    taken = [await leases.acquire(room, "w-b") for room in rooms]

    assert await leases.renew(stale) == stale
    assert [lease.epoch for lease in taken] == [2] * len(rooms)
    for lease in stale:
        with pytest.raises(Fenced):
            await store.append(lease.room_id, [JOIN], expected_version=0, actor="a", epoch=1)
    assert [await store.version(room) for room in rooms] == [0] * len(rooms)


async def test_a_master_killed_under_load_loses_at_most_what_was_in_flight_to_its_replica(
    tmp_path: Path,
) -> None:
    # Replication is asynchronous: what the README says a failover may lose is the appends
    # acknowledged within the replication lag before the master died, and nothing older.
    servers = RedisClusterServers(tmp_path)
    servers.start()
    client = redis.RedisCluster.from_url(servers.url)
    store = EventStore(client, KeySpace(partitions=PARTITIONS))
    rooms = rooms_in_every_partition(store.keys)
    acked: dict[str, list[tuple[int, float]]] = {room: [] for room in rooms}
    stop = asyncio.Event()

    async def load(room: str) -> None:
        version = 0
        while not stop.is_set():
            try:
                await store.append(room, [cue(version + 1)], expected_version=version, actor="a")
            except WrongExpectedVersion as conflict:  # a retry whose first try had landed
                version = conflict.actual
                continue
            except StoreUnavailable:  # the master is gone, until its replica takes over
                await asyncio.sleep(0.05)
                continue
            version += 1
            acked[room].append((version, time.monotonic()))

    try:
        loads = [asyncio.create_task(load(room)) for room in rooms]
        await asyncio.sleep(2)
        node = client.get_node_from_key(store.keys.room(rooms[0]))
        master = next(server for server in servers.servers if server.port == node.port)
        master.kill()
        killed = time.monotonic()
        await asyncio.sleep(8)  # the replica takes over (node timeout 2 s), the load goes on
        stop.set()
        await asyncio.gather(*loads)
        stored = {room: await store.version(room) for room in rooms}
    finally:
        await client.aclose()
        servers.stop()

    lost = {room: [v for v, _ in acked[room] if v > stored[room]] for room in rooms}
    print(f"acknowledged {sum(map(len, acked.values()))}, lost {sum(map(len, lost.values()))}")
    for room in rooms:
        assert acked[room][-1][1] > killed + 1  # appends went on after the failover
        older = [v for v, at in acked[room] if at < killed - 1.0]
        assert all(v <= stored[room] for v in older)  # nothing acknowledged a second before
