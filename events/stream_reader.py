"""One blocking read per process and partition over every room stream it follows.

A route reconciler or a page follower per room, each blocked in its own ``XREAD``, would hold one
Redis connection per room, and a few hundred rooms exhaust any pool. Instead one loop per
partition reads every followed stream of the partition in a single ``XREAD BLOCK`` over many
keys, and hands each entry to the room's followers in this process. A partition's keys share a
hash tag, so that one read is one slot's, as a Redis Cluster requires (``keys.py``); with one
partition (the default) there is one loop. The read is re-armed as rooms come and go: a new
follower appends to the loop's own *wake* stream (in the partition's slot too), which the
blocked read watches, so it returns at once and the next read includes the new room. The wake
stream is read on from the last id seen, so a wake that lands before the read it was meant for
is not lost either.

Each follower has its own queue. A follower that falls ``backlog`` entries behind, or one of a
room whose entry cannot be read, is ended with the error (StoreUnavailable, MalformedEvent); when
Redis cannot be read every follower is ended so. Following again starts afresh: nothing grows
with a slow follower, and no one acts on a stream it can no longer read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncGenerator
from typing import Any

from redis.exceptions import RedisError

from events.envelope import Envelope
from events.errors import MalformedEvent, StoreUnavailable
from events.keys import check_room_id
from events.retry import Backoff
from events.store import EventStore, RedisClient, raise_if_cancelling, version_of

log = logging.getLogger(__name__)

WAKE_TTL_MS = 24 * 3600 * 1000
"""A crashed process's wake stream is gone a day later."""


class _Follower:
    def __init__(self, room_id: str, after_version: int) -> None:
        self.room_id = room_id
        self.position = after_version
        """The version of the last envelope queued for it."""
        self.queue: asyncio.Queue[Envelope | Exception] = asyncio.Queue()


class _Partition:
    """The reader's loop over one partition's followed rooms, and what it knows of its read."""

    def __init__(self, wake_key: str) -> None:
        self.wake_key = wake_key
        self.wake_seen = "0-0"
        self.followers: dict[str, set[_Follower]] = {}
        self.wanted = asyncio.Event()
        """Set while someone follows a room of the partition: the loop reads only then."""
        self.in_read = False
        """A read may be on its way that lacks a follower added since: wake it."""
        self.woken = False
        self.loop: asyncio.Task[None] | None = None


class StreamReader:
    def __init__(
        self,
        store: EventStore,
        reads: RedisClient,
        *,
        block_ms: int = 1000,
        count: int = 500,
        backlog: int = 10_000,
    ) -> None:
        """``reads`` has connections of the reader's own, one per partition (each blocking read
        holds one); wakes and everything else go through ``store``'s client."""
        self.store = store
        self.reads = reads
        self.block_ms = block_ms
        self.count = count
        self.backlog = backlog
        self.id = uuid.uuid4().hex
        self._partitions: dict[int, _Partition] = {}

    @property
    def rooms(self) -> int:
        """How many rooms are followed now."""
        return sum(len(partition.followers) for partition in self._partitions.values())

    async def follow(self, room_id: str, *, after_version: int = 0) -> AsyncGenerator[Envelope]:
        """Every envelope of the room above ``after_version``, then each new one as it is
        appended, until closed; raises StoreUnavailable or MalformedEvent when the room can no
        longer be followed (follow it again to go on)."""
        follower = _Follower(check_room_id(room_id), after_version)
        partition = self._partition(self.store.keys.partition_of(room_id))
        partition.followers.setdefault(room_id, set()).add(follower)
        try:
            await self._rearm(partition)
            while True:
                # A cancellation redis-py absorbed on the way here (say, in the caller's read of
                # the room's state) must still end the follow, not wait on the queue for good.
                raise_if_cancelling()
                item = await follower.queue.get()
                if isinstance(item, Exception):
                    # A new exception per follower: one shared object would gather all their frames.
                    raise _fresh(item) from item
                yield item
        finally:
            self._forget(partition, follower)

    async def close(self) -> None:
        """Stop reading: every follower raises StoreUnavailable."""
        loops = [p.loop for p in self._partitions.values() if p.loop is not None]
        for loop in loops:
            loop.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        for partition in self._partitions.values():
            self._end_all(partition, StoreUnavailable("the service is shutting down"))
            with contextlib.suppress(RedisError):  # else it expires by itself
                await self.store.client.delete(partition.wake_key)

    def _partition(self, number: int) -> _Partition:
        partition = self._partitions.get(number)
        if partition is None:
            wake_key = self.store.keys.reader_wake(self.id, number)
            partition = self._partitions[number] = _Partition(wake_key)
        return partition

    async def _rearm(self, partition: _Partition) -> None:
        """Have the partition's loop read its streams as they are followed now."""
        if partition.loop is None or partition.loop.done():
            reading = self._read_all(partition)
            partition.loop = asyncio.create_task(reading, name="stream reader")
        partition.wanted.set()
        if not partition.in_read or partition.woken:
            return  # the next read is built after this follower was added (or a wake is out)
        partition.woken = True
        try:
            async with self.store.client.pipeline(transaction=False) as pipe:
                pipe.xadd(partition.wake_key, {"w": b""}, maxlen=1, approximate=False)
                pipe.pexpire(partition.wake_key, WAKE_TTL_MS)
                await pipe.execute()
        except RedisError as exc:
            # The read ends within block_ms by itself and the next one includes the room.
            log.debug("could not wake the stream reader: %s", exc)

    async def _read_all(self, partition: _Partition) -> None:
        backoff = Backoff()
        while True:
            raise_if_cancelling()
            followed = partition.followers
            if not followed:
                partition.wanted.clear()
                await partition.wanted.wait()
                continue
            partition.in_read, partition.woken = True, False
            rooms = {self.store.keys.room(room_id): room_id for room_id in followed}
            positions = [f"{min(f.position for f in each)}-0" for each in followed.values()]
            try:
                reply = await self.reads.execute_command(
                    "XREAD", "COUNT", self.count, "BLOCK", self.block_ms, "STREAMS",
                    partition.wake_key, *rooms, partition.wake_seen, *positions,
                )  # fmt: skip
            except RedisError as exc:
                partition.in_read = False
                self._end_all(
                    partition, StoreUnavailable(f"reading the room streams failed: {exc}")
                )
                log.warning("stream reader: %s; reading again in %.1f s", exc, backoff.next_s())
                await backoff.wait()
                continue
            partition.in_read = False
            backoff.reset()
            for key, entries in _streams(reply):
                if key == partition.wake_key.encode():
                    partition.wake_seen = entries[-1][0].decode()
                elif (room_id := rooms.get(key.decode())) is not None:
                    self._deliver(partition, room_id, entries)

    def _deliver(self, partition: _Partition, room_id: str, entries: list[Any]) -> None:
        followers = partition.followers.get(room_id, set())
        for entry_id, fields in entries:
            version = version_of(entry_id)
            # Only to those whose last event is the one before: a follower further behind (it
            # came in while a read from a later position was out) is read for from its own
            # position next time, rather than skip what it lacks.
            behind = [f for f in followers if f.position == version - 1]
            if not behind:
                continue
            try:
                envelope = self.store.decode_entry(room_id, entry_id, fields)
            except MalformedEvent as exc:
                for follower in list(followers):
                    self._end(partition, follower, exc)
                return
            for follower in behind:
                if follower.queue.qsize() >= self.backlog:
                    failure = StoreUnavailable(f"fell {self.backlog} events behind")
                    self._end(partition, follower, failure)
                    continue
                follower.queue.put_nowait(envelope)
                follower.position = version

    def _end(self, partition: _Partition, follower: _Follower, failure: Exception) -> None:
        self._forget(partition, follower)
        while not follower.queue.empty():
            follower.queue.get_nowait()
        follower.queue.put_nowait(failure)

    def _end_all(self, partition: _Partition, failure: Exception) -> None:
        for followers in list(partition.followers.values()):
            for follower in list(followers):
                self._end(partition, follower, failure)

    def _forget(self, partition: _Partition, follower: _Follower) -> None:
        followers = partition.followers.get(follower.room_id)
        if followers is None:
            return
        followers.discard(follower)
        if not followers:
            del partition.followers[follower.room_id]


def _fresh(failure: Exception) -> Exception:
    if isinstance(failure, MalformedEvent):
        return MalformedEvent(failure.reason, failure.raw)
    return StoreUnavailable(str(failure))


def _streams(reply: Any) -> list[tuple[bytes, list[Any]]]:
    """XREAD's reply as (key, entries) pairs (RESP2 gives a list of pairs, RESP3 a map)."""
    if reply is None:
        return []
    if isinstance(reply, dict):
        return list(reply.items())
    return [(key, entries) for key, entries in reply]
