"""The current state of rooms: snapshot + tail from the store, kept warm in memory.

Loading a room reads its latest snapshot (if any) and folds only the events after it, so a room
with 100k events recovers in the time of one msgpack decode plus a short tail. A snapshot is
written whenever ``snapshot_every`` events have passed since the last one. Snapshots carry the
state's schema number: after a change to ``RoomState`` the old ones are ignored (full replay)
rather than misread.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import AsyncIterator

import msgspec
from prometheus_client import Histogram

from events.envelope import utc_now
from events.store import EventStore, Snapshot
from events.stream_reader import StreamReader
from projections.decider import RoomState, fold, initial_state

log = logging.getLogger(__name__)

LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
FOLLOW_LAG = Histogram(
    "earpiece_follow_lag_seconds",
    "From an event's append to its fold by a room's follower (route reconciler or pages)",
    buckets=LAG_BUCKETS,
)

STATE_SCHEMA = 4
"""Bump when RoomState changes shape, so that older snapshots are not decoded into it."""

_state_decoder = msgspec.msgpack.Decoder(RoomState)


async def follow_states(reader: StreamReader, state: RoomState) -> AsyncIterator[RoomState]:
    """The room's state after each event stored past ``state``, folded as it is read: the one
    follow-and-fold loop of the route reconciler and the pages' followers. Runs until the task
    is cancelled, or raises what the reader raises."""
    async for envelope in reader.follow(state.room_id, after_version=state.version):
        state = fold(state, [envelope])
        FOLLOW_LAG.observe((utc_now() - envelope.time).total_seconds())
        yield state


class RoomStates:
    def __init__(
        self, store: EventStore, *, snapshot_every: int = 500, cache_size: int = 10_000
    ) -> None:
        self.store = store
        self.snapshot_every = snapshot_every
        self._cache: OrderedDict[str, RoomState] = OrderedDict()
        self._cache_size = cache_size
        self._snapshot_versions: dict[str, int] = {}

    async def current(self, room_id: str) -> RoomState:
        """The room as of its newest stored event (one round trip when the room is warm)."""
        state = self._cache.get(room_id) or await self.from_snapshot(room_id)
        state = await self._fold_checked_tail(state)
        self._remember(state)
        await self._snapshot_if_due(state)
        return state

    async def reload(self, room_id: str, stored_version: int) -> RoomState:
        """The room as the store has it, now at ``stored_version``, forgetting a cached state or
        snapshot ahead of it: an acknowledged write was lost (say, ``everysec`` on a full disk),
        and deciding on a state the store never reaches again would conflict forever."""
        cached = self._cache.pop(room_id, None)
        if cached is not None and cached.version > stored_version:
            log.warning(
                "room %r: the cached state (version %d) is ahead of the store (version %d); "
                "reloading it from the store",
                *(room_id, cached.version, stored_version),
            )
        state = await self.from_snapshot(room_id, at_most=stored_version)
        state = await self._fold_tail(state)
        self._remember(state)
        return state

    async def from_snapshot(self, room_id: str, *, at_most: int | None = None) -> RoomState:
        """The newest snapshot's state (not past version ``at_most``), or the initial state
        when there is none usable."""
        snapshot = await self.store.load_snapshot(room_id)
        if snapshot is not None and at_most is not None and snapshot.version > at_most:
            log.warning("ignoring the snapshot of room %r: it is ahead of the store", room_id)
            snapshot = None
        if snapshot is None or snapshot.schema != STATE_SCHEMA:
            self._snapshot_versions[room_id] = 0
            return initial_state(room_id)
        try:
            state = _state_decoder.decode(snapshot.state)
        except msgspec.DecodeError as exc:
            log.warning("ignoring unreadable snapshot of room %r: %s", room_id, exc)
            self._snapshot_versions[room_id] = 0
            return initial_state(room_id)
        self._snapshot_versions[room_id] = snapshot.version
        return state

    async def replay(self, room_id: str) -> RoomState:
        """The room folded from its first event, ignoring snapshots and the cache."""
        return await self._fold_tail(initial_state(room_id))

    async def _fold_checked_tail(self, state: RoomState, page: int = 1000) -> RoomState:
        """``state`` (cached, or a snapshot's) with its tail, read from its own version on in
        the same round trip: a stream that no longer holds that version lost a write that the
        cache or the snapshot remembers, and the room is reloaded as the store has it."""
        if state.version == 0:
            return await self._fold_tail(state, page)
        batch = await self.store.read(state.room_id, after_version=state.version - 1, count=page)
        if not batch or batch[0].version != state.version:
            return await self.reload(state.room_id, await self.store.version(state.room_id))
        state = fold(state, batch[1:])
        return await self._fold_tail(state, page) if len(batch) == page else state

    async def _fold_tail(self, state: RoomState, page: int = 1000) -> RoomState:
        """``state`` with every event after it; a page shorter than ``page`` was the last."""
        while True:
            batch = await self.store.read(state.room_id, after_version=state.version, count=page)
            state = fold(state, batch)
            if len(batch) < page:
                return state

    async def _snapshot_if_due(self, state: RoomState) -> None:
        if state.version - self._snapshot_versions.get(state.room_id, 0) < self.snapshot_every:
            return
        snapshot = Snapshot(state.version, STATE_SCHEMA, msgspec.msgpack.encode(state))
        await self.store.save_snapshot(state.room_id, snapshot)
        self._snapshot_versions[state.room_id] = state.version

    def _remember(self, state: RoomState) -> None:
        self._cache[state.room_id] = state
        self._cache.move_to_end(state.room_id)
        while len(self._cache) > self._cache_size:
            evicted, _ = self._cache.popitem(last=False)
            self._snapshot_versions.pop(evicted, None)
