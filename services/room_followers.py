"""One follower of each room's stream per process, shared by every page open on the room.

Each open page needs its room's state now and after every event. A blocking read per page would
hold one Redis connection per socket; instead the first page of a room starts a follower, later
pages subscribe to it, and the last one to leave stops it. Every subscriber has a bounded inbox:
a page too slow to keep up loses envelopes rather than growing the server's memory, sees the
gap in versions, and reloads the room's state (one round trip) instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator

from events.envelope import Envelope
from events.store import EventStore
from projections.room import RoomState, fold
from services.room_states import RoomStates

log = logging.getLogger(__name__)

Inbox = asyncio.Queue[Envelope | Exception]


class _Follower:
    """The one blocking read on a room's stream, copying each envelope into every inbox."""

    def __init__(self, room_id: str) -> None:
        self.room_id = room_id
        self.inboxes: set[Inbox] = set()
        self.task: asyncio.Task[None] | None = None

    async def run(self, store: EventStore, after_version: int) -> None:
        try:
            async for envelope in store.follow(self.room_id, after_version=after_version):
                for inbox in self.inboxes:
                    _put_dropping_oldest(inbox, envelope)
        except Exception as exc:  # every subscriber is told; the next watch starts afresh
            log.warning("following room %r failed: %s", self.room_id, exc)
            for inbox in self.inboxes:
                _put_dropping_oldest(inbox, exc)


def _put_dropping_oldest(inbox: Inbox, item: Envelope | Exception) -> None:
    if inbox.full():
        inbox.get_nowait()  # the subscriber lags: it will see the gap and reload
    inbox.put_nowait(item)


class RoomFollowers:
    def __init__(self, store: EventStore, states: RoomStates, *, inbox_size: int = 256) -> None:
        self.store = store
        self.states = states
        self.inbox_size = inbox_size
        self._followers: dict[str, _Follower] = {}

    def following(self) -> frozenset[str]:
        """The rooms this process follows now."""
        return frozenset(self._followers)

    async def watch(self, room_id: str) -> AsyncGenerator[RoomState, None]:
        """The room's state now, then again after each new event, until closed or cancelled.

        Raises what the follower met (e.g. StoreUnavailable). Close it (``aclosing``) or cancel
        the task iterating it, so that the last watcher of a room stops its follower.
        """
        follower = await self._follower(room_id)
        inbox: Inbox = asyncio.Queue(self.inbox_size)
        follower.inboxes.add(inbox)  # before reading the state: nothing after it is missed
        try:
            state = await self.states.current(room_id)
            yield state
            while True:
                item = await inbox.get()
                if isinstance(item, Exception):
                    raise item
                if item.version <= state.version:
                    continue  # already in the state that was read
                if item.version == state.version + 1:
                    state = fold(state, [item])
                else:
                    state = await self.states.current(room_id)  # envelopes were dropped
                yield state
        finally:
            follower.inboxes.discard(inbox)
            if not follower.inboxes:
                self._stop(follower)

    async def close(self) -> None:
        followers, self._followers = list(self._followers.values()), {}
        tasks = [f.task for f in followers if f.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _follower(self, room_id: str) -> _Follower:
        follower = self._followers.get(room_id)
        if follower is not None:
            return follower
        # Follow from the newest version *before* the first watcher reads the state, so the
        # envelopes it gets start at or below that state's version: no gap, no stale page.
        after_version = await self.store.version(room_id)
        follower = self._followers.get(room_id)  # another watcher may have started it meanwhile
        if follower is not None:
            return follower
        follower = _Follower(room_id)
        follower.task = asyncio.create_task(self._run(follower, after_version))
        self._followers[room_id] = follower
        return follower

    async def _run(self, follower: _Follower, after_version: int) -> None:
        try:
            await follower.run(self.store, after_version)
        finally:
            if self._followers.get(follower.room_id) is follower:
                del self._followers[follower.room_id]

    def _stop(self, follower: _Follower) -> None:
        if self._followers.get(follower.room_id) is follower:
            del self._followers[follower.room_id]
        if follower.task is not None:
            follower.task.cancel()
