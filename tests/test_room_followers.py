"""Pages of a room share one follower of its stream, on a real Redis."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator

import pytest
import redis.asyncio as redis

from events.errors import MalformedEvent
from events.room import ParticipantJoined, Role, TalkPressed, TalkReleased, WhisperStarted
from events.store import EventStore
from projections.room import RoomState
from services.room_followers import RoomFollowers
from services.room_states import RoomStates

ROOM = "room-1"
COACH = ParticipantJoined(subject="sup-1", role=Role.SUPERVISOR, name="Sam", can_whisper=True)


@pytest.fixture
async def followers(store: EventStore) -> AsyncIterator[RoomFollowers]:
    followers = RoomFollowers(store, RoomStates(store))
    yield followers
    await followers.close()


async def append_talk(store: EventStore, after: int, count: int) -> int:
    """``count`` talk events, one append each, after version ``after``; the newest version."""
    for version in range(after + 1, after + count + 1):
        event = TalkPressed(coach="sup-1") if version % 2 else TalkReleased(coach="sup-1")
        await store.append(ROOM, [event], expected_version=version - 1, actor="sup-1")
    return after + count


async def start_room(store: EventStore) -> None:
    await store.append(
        ROOM, [COACH, WhisperStarted(coach="sup-1")], expected_version=0, actor="sup-1"
    )


async def until_version(states: AsyncGenerator[RoomState, None], version: int) -> RoomState:
    async with asyncio.timeout(10):
        async for state in states:
            if state.version >= version:
                return state
    raise AssertionError("the watch ended")


async def blocked_stream_reads(client: redis.Redis, looks: int = 10) -> int:
    """The most connections seen waiting in a blocking XREAD over ``looks``, 50 ms apart.

    Pages' followers use XREAD; consumer groups use XREADGROUP. Several looks, since a follower
    is briefly between two reads after each event and each block's timeout.
    """
    seen = 0
    for _ in range(looks):
        clients = await client.client_list()
        seen = max(seen, sum(1 for c in clients if c["cmd"] == "xread" and "b" in c["flags"]))
        await asyncio.sleep(0.05)
    return seen


async def test_pages_of_a_room_share_one_follower_and_the_last_to_leave_stops_it(
    store: EventStore, followers: RoomFollowers, redis_client: redis.Redis
) -> None:
    await start_room(store)
    pages = [followers.watch(ROOM) for _ in range(3)]
    for page in pages:
        assert (await anext(page)).version == 2

    newest = await append_talk(store, after=2, count=5)
    seen = [await until_version(page, newest) for page in pages]
    blocked = await blocked_stream_reads(redis_client)

    assert seen[0] == seen[1] == seen[2] == await RoomStates(store).replay(ROOM)
    assert followers.following() == {ROOM}
    assert blocked == 1
    for page in pages:
        await page.aclose()
    assert followers.following() == frozenset()
    async with asyncio.timeout(5):  # a cancelled read's block still runs out on the server
        while await blocked_stream_reads(redis_client, looks=1):
            pass


async def test_a_page_too_slow_to_keep_up_gets_the_current_state_instead(
    store: EventStore,
) -> None:
    await start_room(store)
    followers = RoomFollowers(store, RoomStates(store), inbox_size=2)
    fast, slow = followers.watch(ROOM), followers.watch(ROOM)
    try:
        await anext(fast)
        await anext(slow)

        newest = await append_talk(store, after=2, count=10)
        await until_version(fast, newest)  # the follower has handed every envelope on
        caught_up = await anext(slow)  # its inbox kept only the newest two

        assert caught_up == await RoomStates(store).replay(ROOM)
    finally:
        await fast.aclose()
        await slow.aclose()
        await followers.close()


async def test_pages_opened_while_the_room_is_busy_miss_no_event(
    store: EventStore, followers: RoomFollowers
) -> None:
    await start_room(store)
    writing = asyncio.create_task(append_talk(store, after=2, count=60))

    async def page_opened_after(delay_s: float) -> RoomState:
        await asyncio.sleep(delay_s)
        async with contextlib.aclosing(followers.watch(ROOM)) as page:
            return await until_version(page, 62)

    seen = await asyncio.gather(*(page_opened_after(i * 0.005) for i in range(20)))
    await writing

    final = await RoomStates(store).replay(ROOM)
    assert all(state == final for state in seen)


async def test_an_unreadable_entry_reaches_every_page_as_an_error(
    store: EventStore, followers: RoomFollowers, redis_client: redis.Redis
) -> None:
    await start_room(store)
    pages = [followers.watch(ROOM) for _ in range(2)]
    for page in pages:
        await anext(page)

    await redis_client.xadd(store.keys.room(ROOM), {"e": b'{"not": "an envelope"}'}, id="3-0")

    for page in pages:
        with pytest.raises(MalformedEvent):
            async with asyncio.timeout(10):
                await anext(page)
    assert followers.following() == frozenset()
