"""Pages of a room share one follower of its stream, on a real Redis."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator

import pytest
import redis.asyncio as redis

from events.errors import StoreUnavailable
from events.room import CueSent, ParticipantJoined, Role, WhisperStarted
from events.store import EventStore
from events.stream_reader import StreamReader
from projections.decider import RoomState
from services.bench.pages import most_blocking_reads
from services.streams.room_followers import RoomFollowers
from services.streams.room_states import RoomStates

ROOM = "room-1"
COACH = ParticipantJoined(subject="sup-1", role=Role.SUPERVISOR, name="Sam", can_whisper=True)

Page = AsyncGenerator[RoomState, None]


@pytest.fixture
async def followers(store: EventStore, reader: StreamReader) -> AsyncIterator[RoomFollowers]:
    followers = RoomFollowers(reader, RoomStates(store))
    yield followers
    await followers.close()


async def start_room(store: EventStore) -> None:
    await store.append(
        ROOM, [COACH, WhisperStarted(coach="sup-1")], expected_version=0, actor="sup-1"
    )


async def send_cues(store: EventStore, after: int, count: int) -> int:
    """``count`` cues, one append each, after version ``after``; the newest version.

    Cues pile up in the state, so a state that missed any event differs from a replay.
    """
    for version in range(after + 1, after + count + 1):
        cue = CueSent(cue_id=f"c{version}", coach="sup-1", text=f"cue {version}")
        await store.append(ROOM, [cue], expected_version=version - 1, actor="sup-1")
    return after + count


async def until_version(page: Page, version: int) -> RoomState:
    async with asyncio.timeout(10):
        async for state in page:
            if state.version >= version:
                return state
    raise AssertionError("the watch ended")


async def test_pages_of_a_room_share_one_follower_and_the_last_to_leave_stops_it(
    store: EventStore, followers: RoomFollowers, redis_client: redis.Redis
) -> None:
    await start_room(store)
    pages = [followers.watch(ROOM) for _ in range(5)]
    first = await asyncio.gather(*(anext(page) for page in pages))  # all opening at once
    assert {state.version for state in first} == {2}

    newest = await send_cues(store, after=2, count=5)
    seen = await asyncio.gather(*(until_version(page, newest) for page in pages))
    replayed = await RoomStates(store).replay(ROOM)
    assert all(state == replayed for state in seen)
    assert await most_blocking_reads(redis_client) == 1

    await pages.pop().aclose()  # one page leaves; the others are still served
    newest = await send_cues(store, after=newest, count=1)
    assert [(await until_version(page, newest)).version for page in pages] == [newest] * 4

    for page in pages:
        await page.aclose()
    async with asyncio.timeout(5):  # a cancelled read's block still runs out on the server
        while await most_blocking_reads(redis_client, looks=1):
            pass


async def test_a_page_that_reads_late_gets_the_newest_state_not_a_backlog(
    store: EventStore, followers: RoomFollowers
) -> None:
    await start_room(store)
    prompt, late = followers.watch(ROOM), followers.watch(ROOM)
    await anext(prompt)
    await anext(late)

    newest = await send_cues(store, after=2, count=10)
    await until_version(prompt, newest)
    caught_up = await anext(late)  # nothing read while ten events went by

    assert caught_up == await RoomStates(store).replay(ROOM)
    await prompt.aclose()
    await late.aclose()


async def test_pages_opened_while_the_room_is_busy_miss_no_event(
    store: EventStore, followers: RoomFollowers
) -> None:
    await start_room(store)
    writing = asyncio.create_task(send_cues(store, after=2, count=60))

    async def page_opened_after(delay_s: float) -> list[int]:
        await asyncio.sleep(delay_s)
        async with contextlib.aclosing(followers.watch(ROOM)) as page:
            versions = []
            async for state in page:
                versions.append(state.version)
                if state.version == 62:
                    assert state == await RoomStates(store).replay(ROOM)
                    return versions
        raise AssertionError("the watch ended")

    async with asyncio.timeout(20):
        seen = await asyncio.gather(*(page_opened_after(i * 0.005) for i in range(20)))
    await writing

    assert all(versions == sorted(set(versions)) for versions in seen)  # never back in time


async def test_an_unreadable_entry_reaches_every_page_as_an_error(
    store: EventStore, followers: RoomFollowers, redis_client: redis.Redis
) -> None:
    await start_room(store)
    pages = [followers.watch(ROOM) for _ in range(2)]
    for page in pages:
        await anext(page)

    await redis_client.xadd(store.keys.room(ROOM), {"e": b'{"not": "an envelope"}'}, id="3-0")

    for page in pages:
        with pytest.raises(StoreUnavailable, match="following room 'room-1' stopped"):
            async with asyncio.timeout(10):
                await anext(page)


async def test_closing_ends_every_watch_with_an_error_and_refuses_new_ones(
    store: EventStore, reader: StreamReader, redis_client: redis.Redis
) -> None:
    await start_room(store)
    followers = RoomFollowers(reader, RoomStates(store))
    page = followers.watch(ROOM)
    await anext(page)
    waiting = asyncio.create_task(anext(page))
    await asyncio.sleep(0.05)

    await followers.close()

    with pytest.raises(StoreUnavailable, match="shutting down"):
        await asyncio.wait_for(waiting, 5)
    with pytest.raises(StoreUnavailable, match="shutting down"):
        await anext(followers.watch(ROOM))
    async with asyncio.timeout(5):
        while await most_blocking_reads(redis_client, looks=1):
            pass
