"""One follower of each room's stream per process, shared by every page open on the room.

Each open page needs its room's state now and after every event. A blocking read per page would
hold one Redis connection per socket and fold every event once per page; instead the first page
of a room starts a follower that reads the stream and folds each event once, later pages watch
its state, and the last one to leave stops it. A page is handed the newest state whenever it
asks (a view is a snapshot of the room), so a page slow to send skips states rather than
queueing them: nothing grows with a slow reader.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator

from events.errors import StoreUnavailable
from events.stream_reader import StreamReader
from projections.decider import RoomState
from services.streams.room_states import RoomStates, follow_states

log = logging.getLogger(__name__)


class _Follower:
    """The one blocking read on a room's stream, and the state it has folded so far."""

    def __init__(self, state: RoomState, reader: StreamReader) -> None:
        self.state = state
        self.watchers = 0
        self.failure: Exception | None = None
        self._changed = asyncio.Event()
        self.task = asyncio.create_task(self._follow(reader))

    async def _follow(self, reader: StreamReader) -> None:
        try:
            async for state in follow_states(reader, self.state):
                self._publish(state)
        except Exception as exc:  # every watcher is told; the next watch starts afresh
            log.warning("following room %r failed", self.state.room_id, exc_info=True)
            self.fail(exc)

    def fail(self, exc: Exception) -> None:
        self.failure = exc
        self._publish(self.state)

    async def newer_than(self, version: int) -> RoomState:
        """The newest state, once it is past ``version``."""
        while self.failure is None and self.state.version <= version:
            await self._changed.wait()
        if self.failure is not None:
            # A new exception for each watcher: one shared object would gather all their frames.
            raise StoreUnavailable(
                f"following room {self.state.room_id!r} stopped: {self.failure}"
            ) from self.failure
        return self.state

    def _publish(self, state: RoomState) -> None:
        """Make ``state`` the newest and wake every watcher waiting on the previous one."""
        self.state = state
        self._changed.set()
        self._changed = asyncio.Event()


class RoomFollowers:
    def __init__(self, reader: StreamReader, states: RoomStates) -> None:
        self.reader = reader
        self.states = states
        self._followers: dict[str, _Follower] = {}
        self._running: set[asyncio.Task[None]] = set()
        """Followers' tasks until they end, stopped ones included: close() awaits them."""
        self._closed = False

    async def watch(self, room_id: str) -> AsyncGenerator[RoomState, None]:
        """The room's state now, then the newest one after each change, until closed.

        Raises StoreUnavailable when the room can no longer be followed (Redis went away, an
        entry could not be read, or the service is shutting down): open a new watch to go on.
        Close it (``aclosing``) or cancel the task iterating it, so that the last watcher of
        a room stops its follower.
        """
        follower = await self._follower(room_id)
        follower.watchers += 1
        try:
            state = follower.state
            yield state
            while True:
                state = await follower.newer_than(state.version)
                yield state
        finally:
            follower.watchers -= 1
            if follower.watchers == 0:
                self._stop(follower)

    async def close(self) -> None:
        """Stop every follower; their watchers raise StoreUnavailable."""
        self._closed = True
        for follower in list(self._followers.values()):
            follower.fail(RuntimeError("the service is shutting down"))
            self._stop(follower)
        await asyncio.gather(*self._running, return_exceptions=True)

    async def _follower(self, room_id: str) -> _Follower:
        follower = self._followers.get(room_id)
        if follower is not None:
            return follower
        if self._closed:
            raise StoreUnavailable("the service is shutting down")
        # Follow from the state read here: every later event is folded into it, none is missed.
        state = await self.states.current(room_id)
        follower = self._followers.get(room_id)  # another watcher may have started it meanwhile
        if follower is not None:
            return follower
        follower = _Follower(state, self.reader)
        self._followers[room_id] = follower
        self._running.add(follower.task)
        follower.task.add_done_callback(lambda _: self._ended(follower))
        return follower

    def _stop(self, follower: _Follower) -> None:
        follower.task.cancel()
        self._forget(follower)

    def _ended(self, follower: _Follower) -> None:
        self._running.discard(follower.task)
        self._forget(follower)

    def _forget(self, follower: _Follower) -> None:
        room_id = follower.state.room_id
        if self._followers.get(room_id) is follower:
            del self._followers[room_id]
