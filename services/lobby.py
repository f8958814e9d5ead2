"""The supervisors' lobby: the live rooms of each queue, kept up to date from the feeds.

A consumer group on the partition feeds refreshes a room's entry whenever the room has a new
event (``projections.views.live_room``), in one hash per partition; a room that closes, empties
or has no queue drops out. Supervisors see the rooms of the queues their token names: once with
``GET /lobby``, or pushed over the WebSocket ``/lobby/live``:

    page → server   {"type": "auth", "token": "<jwt>"}          first, within 5 s
    server → page   {"type": "lobby", "rooms": [...]}           now, then each time it changes

Each changed entry is announced on its partition's Pub/Sub channel with the room's queue; one
subscription per process wakes the sockets watching that queue, which read the lobby again.
Pub/Sub delivers at most once, so a socket also reads it every ``REFRESH_S`` whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Iterable
from typing import Any

import msgspec
import redis.asyncio as redis
from redis.exceptions import RedisError
from starlette.websockets import WebSocket, WebSocketDisconnect

from events.envelope import Envelope
from events.feed import RETRY_S, run_group
from events.room import Role
from events.store import EventStore
from projections.views import LiveRoom, live_room
from services.auth import AuthError, Claims, TokenVerifier
from services.live import TRY_AGAIN_LATER, Error, authenticate_socket, send_message
from services.room_states import RoomStates

log = logging.getLogger(__name__)

LOBBY_GROUP = "lobby"
REFRESH_S = 15.0
"""A lobby socket reads the lobby at least this often, announced change or not."""

_decoder = msgspec.json.Decoder(LiveRoom)


class Lobby:
    def __init__(self, store: EventStore, states: RoomStates) -> None:
        self.store = store
        self.states = states

    async def handle(self, envelope: Envelope) -> None:
        """Refresh the entry of ``envelope``'s room (at least once per event: idempotent)."""
        room_id = envelope.room_id
        partition = self.store.keys.partition_of(room_id)
        key = self.store.keys.lobby(partition)
        listed: Any = await self.store.client.hget(key, room_id)
        before = None if listed is None else _decoder.decode(listed)
        opened_at = before.opened_at if before else await self._opened_at(room_id, envelope)
        entry = live_room(await self.states.current(room_id), opened_at)
        if entry == before:
            return
        if entry is None:
            await self.store.client.hdel(key, room_id)
        else:
            await self.store.client.hset(key, room_id, msgspec.json.encode(entry))
        changed = entry or before
        if changed is not None:
            await self.store.client.publish(self.store.keys.lobby_changes(partition), changed.queue)

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

    async def _opened_at(self, room_id: str, envelope: Envelope) -> dt.datetime:
        """When the room's first event was stored (read once, when the room is first listed)."""
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


class LobbyMessage(msgspec.Struct, frozen=True, tag="lobby"):
    rooms: list[LiveRoom]


class LobbyWatchers:
    """One Pub/Sub subscription per process to the lobby's changes, waking the sockets they
    concern; and the ``/lobby/live`` endpoint of those sockets."""

    def __init__(self, lobby: Lobby, verifier: TokenVerifier) -> None:
        self.lobby = lobby
        self.verifier = verifier
        self._waiting: dict[asyncio.Event, frozenset[str]] = {}

    async def run(self) -> None:
        """Listen to every partition's changes until cancelled, through Redis outages."""
        keys = self.lobby.store.keys
        channels = [keys.lobby_changes(p) for p in range(keys.partitions)]
        while True:
            try:
                async with self.lobby.store.client.pubsub() as pubsub:
                    await pubsub.subscribe(*channels)
                    self._wake(None)  # (re)subscribed: changes may have gone by unheard
                    async for message in pubsub.listen():
                        if message["type"] == "message":
                            self._wake(message["data"].decode())
            except RedisError as exc:
                log.warning("lobby changes: %s; subscribing again in %s s", exc, RETRY_S)
                await asyncio.sleep(RETRY_S)

    async def endpoint(self, websocket: WebSocket) -> None:
        await websocket.accept()
        claims = await authenticate_socket(websocket, self._supervisor)
        if claims is None:
            return
        try:
            async with asyncio.TaskGroup() as group:
                pushing = group.create_task(self._push(websocket, frozenset(claims.queues)))
                async for _ in websocket.iter_text():
                    detail = "the lobby takes no messages after auth"
                    await send_message(websocket, Error(error="invalid_message", detail=detail))
                pushing.cancel()
        except* WebSocketDisconnect:
            pass
        except* RedisError as failures:
            log.warning("lobby socket: %s", failures.exceptions[0])
            with contextlib.suppress(RuntimeError):  # already closed by the page
                await websocket.close(TRY_AGAIN_LATER, "event store unavailable; reconnect")

    async def _supervisor(self, token: str) -> Claims:
        claims = await self.verifier.claims_async(token)
        if claims.role is not Role.SUPERVISOR:
            raise AuthError(f"only supervisors have a lobby, not the {claims.role}", 403)
        return claims

    async def _push(self, websocket: WebSocket, queues: frozenset[str]) -> None:
        """The lobby now, then again whenever a change to one of ``queues`` is announced."""
        changed = asyncio.Event()
        self._waiting[changed] = queues
        try:
            sent: list[LiveRoom] | None = None
            while True:
                changed.clear()  # before reading: a change announced meanwhile wakes us again
                rooms = await self.lobby.rooms(queues)
                if rooms != sent:
                    await send_message(websocket, LobbyMessage(rooms))
                    sent = rooms
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), REFRESH_S)
        finally:
            del self._waiting[changed]

    def _wake(self, queue: str | None) -> None:
        """Wake the sockets watching ``queue`` (None: every socket)."""
        for changed, queues in self._waiting.items():
            if queue is None or queue in queues:
                changed.set()
