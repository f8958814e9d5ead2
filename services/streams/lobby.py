"""The supervisors' lobby: the live rooms of each queue, kept up to date from the feeds.

A consumer group on the partition feeds refreshes a room's entry whenever the room has a new
event (``projections.views.live_room``), in one hash per partition; a room that closes, empties
or has no queue drops out. Supervisors see the rooms of the queues their token names: once with
``GET /lobby``, or pushed over the WebSocket ``/lobby/live``:

    page → server   {"type": "auth", "token": "<jwt>"}          first, within 5 s
    server → page   {"type": "lobby", "rooms": [...]}           now, then each time it changes

An entry is written by one script that also announces it, with the room's queue, on the
partition's Pub/Sub channel, and only when what supervisors see has changed and the state it
comes from is newer than the one already written (a redelivered or overtaken event changes
nothing). One subscription per process wakes the sockets watching that queue, which read the
lobby again; since Pub/Sub delivers at most once, every socket is woken whenever the
subscription (re)starts, and reads the lobby every ``REFRESH_S`` whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import AsyncGenerator, Callable, Iterable
from typing import Any

import msgspec
from redis.exceptions import RedisError

from events.envelope import Envelope
from events.errors import StoreUnavailable
from events.feed import run_group
from events.retry import Backoff
from events.store import EventStore, RedisClient, raise_if_cancelling
from projections.views import LiveRoom, live_room
from services.streams.room_states import RoomStates

log = logging.getLogger(__name__)

LOBBY_GROUP = "lobby"
REFRESH_S = 15.0
"""A lobby socket reads the lobby at least this often, announced change or not."""
PING_S = 5.0
"""The subscription pings Redis this often; one silent for three pings is connected again."""

# KEYS: the partition's lobby hash, the room's lobby-version key.
# ARGV: room id, the state's version, the entry's JSON ("" for none), channel, queue.
_SET_ENTRY = """
if tonumber(redis.call('GET', KEYS[2]) or '0') >= tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
local before = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[3] == '' then
  if not before then return 0 end
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  if before == ARGV[3] then return 0 end
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
end
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
"""

_decoder = msgspec.json.Decoder(LiveRoom)


class Lobby:
    def __init__(self, store: EventStore, states: RoomStates) -> None:
        self.store = store
        self.states = states
        self._set_entry = store.client.register_script(_SET_ENTRY)

    async def handle(self, envelope: Envelope) -> None:
        """Refresh the entry of ``envelope``'s room (at least once per event: idempotent)."""
        room_id = envelope.room_id
        keys = self.store.keys
        partition = keys.partition_of(room_id)
        try:
            listed: Any = await self.store.client.hget(keys.lobby(partition), room_id)
            before = None if listed is None else _decoder.decode(listed)
            opened_at = before.opened_at if before else await self._opened_at(room_id, envelope)
            state = await self.states.current(room_id)
            entry = live_room(state, opened_at)
            await self._set_entry(
                keys=[keys.lobby(partition), keys.lobby_version(room_id)],
                args=[
                    room_id,
                    state.version,
                    msgspec.json.encode(entry) if entry else b"",
                    keys.lobby_changes(partition),
                    state.queue,  # set once, by the first join with a queue: never stale
                ],
            )
        except RedisError as exc:
            raise StoreUnavailable(f"updating the lobby entry of {room_id!r}: {exc}") from exc

    async def rooms(self, queues: Iterable[str]) -> list[LiveRoom]:
        """The live rooms of ``queues``, the longest open first."""
        wanted = set(queues)
        found: list[LiveRoom] = []
        for partition in range(self.store.keys.partitions):
            try:
                entries: Any = await self.store.client.hgetall(self.store.keys.lobby(partition))
            except RedisError as exc:
                raise StoreUnavailable(f"reading the lobby: {exc}") from exc
            found += [
                room for raw in entries.values() if (room := _decoder.decode(raw)).queue in wanted
            ]
        return sorted(found, key=lambda room: (room.opened_at, room.room_id))

    async def _opened_at(self, room_id: str, envelope: Envelope) -> dt.datetime:
        """When the room's first event was stored (read once, when the room is first listed)."""
        if envelope.version == 1:
            return envelope.time
        first = await self.store.read(room_id, count=1)
        return first[0].time if first else envelope.time


async def run_lobby(
    client: RedisClient, lobby: Lobby, *, consumer: str, block_ms: int = 1000
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


class LobbyChanges:
    """One Pub/Sub subscription per process to the lobby's changes, waking the watchers of the
    queues each change concerns."""

    def __init__(
        self, lobby: Lobby, subscriber: RedisClient, *, refresh_s: float = REFRESH_S
    ) -> None:
        """``subscriber`` is a connection of its own (the subscription holds it)."""
        self.lobby = lobby
        self.subscriber = subscriber
        self.refresh_s = refresh_s
        self._waiting: dict[asyncio.Event, frozenset[str]] = {}

    async def run(self) -> None:
        """Listen to every partition's changes until cancelled, through Redis outages."""
        keys = self.lobby.store.keys
        channels = [keys.lobby_changes(p) for p in range(keys.partitions)]
        backoff = Backoff()
        while True:
            try:
                async with self.subscriber.pubsub() as pubsub:
                    await pubsub.subscribe(*channels)
                    await self._listen(pubsub, on_message=backoff.reset)
            except (RedisError, TimeoutError) as exc:
                log.warning("lobby changes: %s; subscribing again in %.1f s", exc, backoff.next_s())
                await backoff.wait()

    async def watch(self, queues: frozenset[str]) -> AsyncGenerator[list[LiveRoom], None]:
        """The live rooms of ``queues`` now, then again whenever they change."""
        changed = asyncio.Event()
        self._waiting[changed] = queues
        try:
            sent: list[LiveRoom] | None = None
            while True:
                changed.clear()  # before reading: a change announced meanwhile wakes us again
                rooms = await self.lobby.rooms(queues)
                if rooms != sent:
                    yield rooms
                    sent = rooms
                # asyncio.timeout, not wait_for: on 3.11, wait_for loses a cancellation that
                # arrives as the wait ends (python/cpython#86296), and the socket never closes.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.refresh_s):
                        await changed.wait()
        finally:
            del self._waiting[changed]

    async def _listen(self, pubsub: Any, on_message: Callable[[], None]) -> None:
        """Wake sockets for each announced change, pinging so that a dead link is noticed."""
        heard = pinged = time.monotonic()
        while True:
            raise_if_cancelling()
            message = await pubsub.get_message(timeout=1.0)
            now = time.monotonic()
            if message is not None:
                heard = now
                on_message()
                if message["type"] == "subscribe":
                    # (Re)subscribed, by us or by redis-py itself: changes may have gone by.
                    self._wake(None)
                elif message["type"] == "message":
                    self._wake(message["data"].decode())
            if now - heard > 3 * PING_S:
                raise TimeoutError(f"Redis silent for {now - heard:.0f} s")
            if now - pinged >= PING_S:
                await pubsub.ping()
                pinged = now

    def _wake(self, queue: str | None) -> None:
        """Wake the sockets watching ``queue`` (None: every socket)."""
        for changed, queues in self._waiting.items():
            if queue is None or queue in queues:
                changed.set()
