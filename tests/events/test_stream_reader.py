"""One blocking read per process over every followed room stream, on a real Redis."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator

import pytest
import redis.asyncio as redis

from events.envelope import Envelope
from events.errors import MalformedEvent, StoreUnavailable
from events.keys import KeySpace
from events.room import CueSent, ParticipantJoined, Role
from events.store import EventStore
from events.stream_reader import StreamReader
from services.redis_server import RedisServer

JOIN_AGENT = ParticipantJoined(subject="agent-1", role=Role.AGENT, name="Ana")


def cue(n: int) -> CueSent:
    return CueSent(cue_id=f"c{n}", coach="sup-1", text=f"cue {n}")


async def append_cues(store: EventStore, room_id: str, after: int, count: int) -> None:
    for version in range(after + 1, after + count + 1):
        await store.append(room_id, [cue(version)], expected_version=version - 1, actor="s")


async def versions(following: AsyncGenerator[Envelope], through: int) -> list[int]:
    seen: list[int] = []
    async with asyncio.timeout(5):
        while not seen or seen[-1] < through:
            seen.append((await anext(following)).version)
    return seen


async def following_their_first_cue(
    store: EventStore, reader: StreamReader, rooms: list[str]
) -> dict[str, AsyncGenerator[Envelope]]:
    """A follower of each room, each past the room's first cue, and a moment for the reader's
    next blocking read to be under way."""
    followers = {room: reader.follow(room) for room in rooms}
    for room in rooms:
        await append_cues(store, room, 0, 1)
    for following in followers.values():
        assert await versions(following, 1) == [1]
    await asyncio.sleep(0.05)
    return followers


@contextlib.asynccontextmanager
async def own_reader(
    store: EventStore, redis_server: RedisServer, **options: int
) -> AsyncIterator[StreamReader]:
    """A reader with ``options`` other than the fixture's, on a connection of its own."""
    reads = redis.Redis.from_url(redis_server.url)
    reader = StreamReader(store, reads, **options)
    try:
        yield reader
    finally:
        await reader.close()
        await reads.aclose()


async def blocked_reads(client: redis.Redis) -> list[str]:
    clients = await client.client_list()
    return [c["id"] for c in clients if c["cmd"] == "xread" and "b" in c["flags"]]


async def test_follow_yields_history_then_each_new_event(
    store: EventStore, reader: StreamReader
) -> None:
    await store.append("room-1", [JOIN_AGENT], expected_version=0, actor="agent-1")
    following = reader.follow("room-1")

    assert await versions(following, 1) == [1]
    await append_cues(store, "room-1", 1, 2)
    assert await versions(following, 3) == [2, 3]
    await following.aclose()


async def test_every_room_is_followed_in_one_blocking_read(
    store: EventStore, reader: StreamReader, redis_client: redis.Redis
) -> None:
    rooms = [f"room-{n}" for n in range(60)]
    followers = await following_their_first_cue(store, reader, rooms)

    assert reader.rooms == 60
    assert len(await blocked_reads(redis_client)) == 1
    for room in rooms:
        await append_cues(store, room, 1, 2)
    for room, following in followers.items():
        assert await versions(following, 3) == [2, 3], room
        await following.aclose()
    assert reader.rooms == 0


async def test_with_partitions_each_is_read_in_a_blocking_read_of_its_own(
    redis_client: redis.Redis, redis_server: RedisServer
) -> None:
    # A partition's keys share a hash tag: one read per partition is one slot's (Redis Cluster).
    store = EventStore(redis_client, KeySpace(partitions=3))
    rooms = [f"room-{n}" for n in range(30)]
    async with own_reader(store, redis_server) as reader:
        followers = await following_their_first_cue(store, reader, rooms)

        assert len({store.keys.partition_of(room) for room in rooms}) == 3
        assert len(await blocked_reads(redis_client)) == 3
        for following in followers.values():
            await following.aclose()


async def test_a_room_followed_while_the_read_is_blocked_is_read_at_once(
    store: EventStore, redis_server: RedisServer
) -> None:
    async with own_reader(store, redis_server, block_ms=30_000) as reader:  # a wake must end it
        first = reader.follow("room-a")
        waiting = asyncio.create_task(anext(first))
        await asyncio.sleep(0.2)  # the read now blocks on room-a alone

        second = reader.follow("room-b")
        await append_cues(store, "room-b", 0, 1)

        async with asyncio.timeout(2):
            assert (await anext(second)).version == 1
        waiting.cancel()


async def test_followers_of_one_room_at_different_versions_each_get_what_they_lack(
    store: EventStore, reader: StreamReader
) -> None:
    await append_cues(store, "room-1", 0, 5)
    ahead = reader.follow("room-1", after_version=4)
    assert await versions(ahead, 5) == [5]

    behind = reader.follow("room-1", after_version=1)
    assert await versions(behind, 5) == [2, 3, 4, 5]
    await append_cues(store, "room-1", 5, 1)
    assert await versions(ahead, 6) == [6]
    assert await versions(behind, 6) == [6]


async def test_a_lost_connection_ends_every_follower_and_following_again_resumes(
    store: EventStore, reader: StreamReader, redis_client: redis.Redis
) -> None:
    await append_cues(store, "room-1", 0, 1)
    await append_cues(store, "room-2", 0, 1)
    first, second = reader.follow("room-1"), reader.follow("room-2")
    assert await versions(first, 1) == [1]
    assert await versions(second, 1) == [1]
    await asyncio.sleep(0.05)

    (read_id,) = await blocked_reads(redis_client)
    await redis_client.client_kill_filter(_id=read_id)

    for following in (first, second):
        with pytest.raises(StoreUnavailable, match="reading the room streams failed"):
            async with asyncio.timeout(5):
                await anext(following)
    again = reader.follow("room-1", after_version=1)
    await append_cues(store, "room-1", 1, 1)
    assert await versions(again, 2) == [2]


async def test_an_unreadable_entry_ends_only_its_rooms_followers(
    store: EventStore, reader: StreamReader, redis_client: redis.Redis
) -> None:
    await append_cues(store, "room-1", 0, 1)
    broken, healthy = reader.follow("room-1", after_version=1), reader.follow("room-2")
    waiting = asyncio.create_task(anext(broken))
    await asyncio.sleep(0.05)

    await redis_client.xadd(store.keys.room("room-1"), {"e": b"{not json"}, id="2-0")

    with pytest.raises(MalformedEvent, match="not JSON"):
        await asyncio.wait_for(waiting, 5)
    await append_cues(store, "room-2", 0, 1)
    assert await versions(healthy, 1) == [1]


async def test_a_follower_that_falls_too_far_behind_is_ended(
    store: EventStore, redis_server: RedisServer
) -> None:
    async with own_reader(store, redis_server, backlog=5) as reader:
        await append_cues(store, "room-1", 0, 20)
        slow = reader.follow("room-1")  # 20 events come in one read: 15 more than it may queue

        with pytest.raises(StoreUnavailable, match="fell 5 events behind"):
            await versions(slow, 20)
        assert reader.rooms == 0


async def test_closing_ends_every_follower(store: EventStore, reader: StreamReader) -> None:
    following = reader.follow("room-1")
    waiting = asyncio.create_task(anext(following))
    await asyncio.sleep(0.05)

    await reader.close()

    with pytest.raises(StoreUnavailable, match="shutting down"):
        await asyncio.wait_for(waiting, 5)


async def test_a_follower_that_comes_in_behind_a_read_under_way_misses_nothing(
    store: EventStore, redis_server: RedisServer
) -> None:
    async with own_reader(store, redis_server, block_ms=30_000) as reader:
        await append_cues(store, "room-1", 0, 5)
        ahead = reader.follow("room-1", after_version=5)
        waiting = asyncio.create_task(anext(ahead))
        await asyncio.sleep(0.2)  # the read is blocked from version 5

        behind = reader.follow("room-1", after_version=2)  # wakes it; and events arrive meanwhile
        first = asyncio.create_task(anext(behind))
        await append_cues(store, "room-1", 5, 1)

        async with asyncio.timeout(5):
            assert (await first).version == 3
            assert [(await anext(behind)).version for _ in range(3)] == [4, 5, 6]
            assert (await waiting).version == 6


async def test_a_follow_whose_cancellation_was_absorbed_before_it_began_still_ends(
    store: EventStore, reader: StreamReader
) -> None:
    # redis-py 8.1 sometimes finishes a command and returns as if its task had not been
    # cancelled (Task.cancelling() still set): a follow begun after one must not wait for good.
    started = asyncio.Event()

    async def follow_after_an_absorbed_cancel() -> None:
        with contextlib.suppress(asyncio.CancelledError):  # what redis-py does, by chance
            started.set()
            await asyncio.sleep(3600)
        async for _ in reader.follow("room-1"):
            pass

    following = asyncio.create_task(follow_after_an_absorbed_cancel())
    await started.wait()
    following.cancel()
    await asyncio.wait([following], timeout=5)

    assert following.cancelled()
    assert reader.rooms == 0
