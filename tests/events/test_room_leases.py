"""Room leases and the fencing of appends (events/room_leases.py, events/store.py), on Redis."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as redis

from events.errors import Fenced
from events.room import CueSent, ParticipantJoined, Role
from events.room_leases import Lease, RoomLeases
from events.store import EventStore

JOIN_AGENT = ParticipantJoined(subject="agent-1", role=Role.AGENT, name="Ana", worker="w-a")
CUE = CueSent(cue_id="c1", coach="sup-1", text="slow down")


@pytest.fixture
def leases(store: EventStore) -> RoomLeases:
    return RoomLeases(store.client, store.keys, lease_s=0.3)


async def test_a_free_room_is_acquired_under_epoch_1_and_kept_by_its_owner(
    leases: RoomLeases,
) -> None:
    first = await leases.acquire("room-1", "w-a")
    again = await leases.acquire("room-1", "w-a")

    assert first == again == Lease("room-1", "w-a", 1)
    assert await leases.owner("room-1") == first


async def test_a_room_held_by_one_worker_is_not_acquired_by_another(leases: RoomLeases) -> None:
    await leases.acquire("room-1", "w-a")

    assert await leases.acquire("room-1", "w-b") == Lease("room-1", "w-a", 1)
    assert await leases.renew([Lease("room-1", "w-b", 1)]) == [Lease("room-1", "w-b", 1)]


async def test_each_new_owner_gets_the_next_epoch(leases: RoomLeases) -> None:
    await leases.acquire("room-1", "w-a")
    await asyncio.sleep(0.4)  # w-a stopped renewing

    assert await leases.acquire("room-1", "w-b") == Lease("room-1", "w-b", 2)
    await leases.release(Lease("room-1", "w-b", 2))
    assert await leases.owner("room-1") is None
    assert await leases.acquire("room-1", "w-a") == Lease("room-1", "w-a", 3)


async def test_renewing_keeps_the_lease_past_its_ttl(leases: RoomLeases) -> None:
    lease = await leases.acquire("room-1", "w-a")
    for _ in range(4):
        await asyncio.sleep(0.15)
        assert await leases.renew([lease]) == []

    assert await leases.acquire("room-1", "w-b") == lease


async def test_a_lapsed_lease_nobody_took_is_renewed_under_its_epoch(leases: RoomLeases) -> None:
    lease = await leases.acquire("room-1", "w-a")
    await asyncio.sleep(0.4)  # Redis away, say: the key lapsed
    assert await leases.owner("room-1") is None

    assert await leases.renew([lease]) == []
    assert await leases.owner("room-1") == lease


async def test_a_lease_another_worker_took_meanwhile_is_lost(leases: RoomLeases) -> None:
    stale = await leases.acquire("room-1", "w-a")
    await asyncio.sleep(0.4)
    await leases.acquire("room-1", "w-b")

    assert await leases.renew([stale, await leases.acquire("room-2", "w-a")]) == [stale]
    assert await leases.owner("room-1") == Lease("room-1", "w-b", 2)


async def test_a_release_by_a_worker_that_lost_the_room_leaves_the_new_owner(
    leases: RoomLeases,
) -> None:
    stale = await leases.acquire("room-1", "w-a")
    await asyncio.sleep(0.4)
    owner = await leases.acquire("room-1", "w-b")

    await leases.release(stale)

    assert await leases.owner("room-1") == owner


# --- fencing -----------------------------------------------------------------------------------


async def test_an_append_under_an_older_epoch_is_refused_and_writes_nothing(
    store: EventStore, leases: RoomLeases, redis_client: redis.Redis
) -> None:
    stale = await leases.acquire("room-1", "w-a")
    await store.append("room-1", [JOIN_AGENT], expected_version=0, actor="a", epoch=stale.epoch)
    await asyncio.sleep(0.4)  # w-a paused past its lease; w-b takes the room
    await leases.acquire("room-1", "w-b")
    feed = store.keys.feed(0)
    feed_before = await redis_client.xlen(feed)

    with pytest.raises(Fenced, match="epoch 1 is older than the room's epoch 2") as refused:
        await store.append("room-1", [CUE], expected_version=1, actor="a", epoch=stale.epoch)

    assert (refused.value.epoch, refused.value.current) == (1, 2)
    assert [e.event for e in await store.read("room-1")] == [JOIN_AGENT]
    assert await redis_client.xlen(feed) == feed_before


async def test_appends_under_the_current_epoch_or_none_are_stored_and_carry_it(
    store: EventStore, leases: RoomLeases
) -> None:
    await leases.acquire("room-1", "w-a")
    await asyncio.sleep(0.4)
    owner = await leases.acquire("room-1", "w-b")

    await store.append("room-1", [JOIN_AGENT], expected_version=0, actor="a", epoch=owner.epoch)
    await store.append("room-1", [CUE], expected_version=1, actor="sup-1")  # a command: no lease

    assert [e.epoch for e in await store.read("room-1")] == [2, None]
