"""The supervisors' lobby: the live rooms of each queue, kept up to date from the feeds.

A consumer group on the partition feeds refreshes a room's entry whenever the room has a new
event (``projections.views.live_room``), in one hash per partition; a room that closes, empties
or has no queue drops out. Supervisors see the rooms of the queues their token names.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import msgspec
import redis.asyncio as redis

from events.envelope import Envelope
from events.feed import run_group
from events.store import EventStore
from projections.views import LiveRoom, live_room
from services.room_states import RoomStates

LOBBY_GROUP = "lobby"

_decoder = msgspec.json.Decoder(LiveRoom)


class Lobby:
    def __init__(self, store: EventStore, states: RoomStates) -> None:
        self.store = store
        self.states = states

    async def handle(self, envelope: Envelope) -> None:
        """Refresh the entry of ``envelope``'s room (at least once per event: idempotent)."""
        room_id = envelope.room_id
        key = self.store.keys.lobby(self.store.keys.partition_of(room_id))
        state = await self.states.current(room_id)
        entry = live_room(state, await self._opened_at(key, room_id, envelope))
        if entry is None:
            await self.store.client.hdel(key, room_id)
        else:
            await self.store.client.hset(key, room_id, msgspec.json.encode(entry))

    async def rooms(self, queues: Iterable[str]) -> list[LiveRoom]:
        """The live rooms of ``queues``, the longest open first."""
        wanted = set(queues)
        found: list[LiveRoom] = []
        for partition in range(self.store.keys.partitions):
            entries: Any = await self.store.client.hgetall(self.store.keys.lobby(partition))
            found += [
                room for raw in entries.values() if (room := _decoder.decode(raw)).queue in wanted
            ]
        return sorted(found, key=lambda room: (room.opened_at, room.room_id))

    async def _opened_at(self, key: str, room_id: str, envelope: Envelope) -> dt.datetime:
        """When the room's first event was stored: kept in its entry, else read once."""
        listed: Any = await self.store.client.hget(key, room_id)
        if listed is not None:
            return _decoder.decode(listed).opened_at
        if envelope.version == 1:
            return envelope.time
        first = await self.store.read(room_id, count=1)
        return first[0].time if first else envelope.time


async def run_lobby(
    client: redis.Redis, lobby: Lobby, *, consumer: str, block_ms: int = 1000
) -> None:
    """One member of the lobby group on every partition's feed, until cancelled."""
    await run_group(
        client,
        group=LOBBY_GROUP,
        consumer=consumer,
        handler=lobby.handle,
        keys=lobby.store.keys,
        codec=lobby.store.codec,
        block_ms=block_ms,
    )
