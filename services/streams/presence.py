"""Presence follows liveness: worker leases, and ending what a lost worker held.

A participant is in a room while a media session of theirs is live (a page socket alone holds no
seat). Each worker process has an identity and a lease in Redis, renewed every ``renew_s`` and
lapsing ``lease_s`` after the last renewal. Before a session of the worker joins someone, the
room goes into the worker's room set, and the join names the worker (``AttachSession``). Every
worker sweeps every ``renew_s``: for each registered worker whose lease has lapsed (killed, hung,
restarted under a new identity), it ends, in each room of that worker's set, the presences the
worker held (``EndPresence``, reason ``worker_lost``: talk released, whisper and monitor stopped,
left) and forgets the worker. Whoever notices first does it; the others' attempts change
nothing. Seats held by a dead worker are free within ``lease_s + renew_s`` of its death.

An HTTP ``join`` has no session behind it: it is noted with a deadline, and once ``grace_s``
passes with no session attached, the sweep ends it (reason ``no_session``).

The lease holds what other workers need to know of this one: where its HTTP is (``url``: a
WHIP/WHEP POST for a room it hosts is forwarded there) and how many rooms it hosts (``rooms``:
a new room goes to the least loaded), refreshed with every renewal.

A worker that shuts down ends its own presences (``worker_stopped``) and drops its lease. One
that finds its own lease lapsed (Redis was away longer than the lease) registers again and
calls ``on_lease_lost``, so that its live sessions attach again: if another worker swept it
meanwhile, its people rejoin, and its coaches in silent monitor at best.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from redis.exceptions import RedisError

from events.envelope import utc_now
from events.errors import StoreUnavailable
from events.keys import KeySpace
from events.retry import Backoff
from events.room import LeaveReason, Role
from events.store import RedisClient
from projections.commands import Actor, EndPresence
from services.streams.command_handler import CommandHandler
from services.streams.room_states import RoomStates

log = logging.getLogger(__name__)


class WorkerInfo(msgspec.Struct, frozen=True):
    """What a live worker's lease says of it."""

    url: str
    """Its HTTP, for the WHIP/WHEP of the rooms it hosts."""
    rooms: int
    """How many rooms it hosts: its load, for placing new ones."""


_info_decoder = msgspec.json.Decoder(WorkerInfo)


def new_worker_id() -> str:
    """Unique per process start: a restarted worker is a new one, its predecessor lost."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class Presence:
    def __init__(
        self,
        client: RedisClient,
        keys: KeySpace,
        commands: CommandHandler,
        states: RoomStates,
        *,
        worker_id: str | None = None,
        lease_s: float = 3.0,
        renew_s: float = 1.0,
        grace_s: float = 15.0,
        url: str = "",
    ) -> None:
        self.client = client
        self.keys = keys
        self.commands = commands
        self.states = states
        self.worker_id = worker_id or new_worker_id()
        self.lease_s = lease_s
        self.renew_s = renew_s
        self.grace_s = grace_s
        self.url = url
        self.load: Callable[[], int] = lambda: 0
        """How many rooms this worker hosts now, reported with each renewal."""
        self.on_lease_lost: Callable[[], Awaitable[None]] | None = None
        self._lease = keys.worker_lease(self.worker_id)
        self._rooms = keys.worker_rooms(self.worker_id)

    async def start(self) -> None:
        """Register this worker and take its lease (before it hosts any session)."""
        await self._call(self._register())

    async def run(self) -> None:
        """Renew the lease and sweep, every ``renew_s``, until cancelled; through outages."""
        backoff = Backoff()
        while True:
            try:
                if not await self._renew():
                    log.warning("worker %s: its lease had lapsed; taking it again", self.worker_id)
                    await self._register()
                    if self.on_lease_lost is not None:
                        await self.on_lease_lost()
                await self.sweep()
            except (RedisError, StoreUnavailable) as exc:
                log.warning("worker %s: presence paused: %s", self.worker_id, exc)
                await backoff.wait()
                continue
            backoff.reset()
            await asyncio.sleep(self.renew_s)

    async def stop(self) -> None:
        """End the presences this worker holds, and its lease: it is shutting down."""
        try:
            await self.end_worker(self.worker_id, LeaveReason.WORKER_STOPPED)
            await self.client.delete(self._lease)
        except (RedisError, StoreUnavailable) as exc:  # the lease lapses; another worker sweeps
            log.warning("worker %s: could not end its presences on stop: %s", self.worker_id, exc)

    async def hold(self, room_id: str) -> None:
        """Note that this worker's sessions hold presences in ``room_id`` (before the join)."""
        await self._call(self.client.sadd(self._rooms, room_id))

    async def expect_session(self, room_id: str, subject: str) -> None:
        """``subject`` joined ``room_id`` with no session: end it unless one follows in time."""
        deadline = time.time() + self.grace_s
        await self._call(
            self.client.zadd(self.keys.unattached_joins(), {_member(room_id, subject): deadline})
        )

    async def sweep(self) -> None:
        """End what lapsed workers held, and HTTP joins past their grace."""
        registered: Any = await self.client.hgetall(self.keys.workers())
        for raw in registered:
            worker = raw.decode()
            if worker != self.worker_id and not await self.client.exists(
                self.keys.worker_lease(worker)
            ):
                log.warning("worker %s: lease lapsed; ending the presences it held", worker)
                await self.end_worker(worker, LeaveReason.WORKER_LOST)
        await self._end_unattached_joins()

    async def end_worker(self, worker: str, reason: LeaveReason) -> None:
        """End, in every room of ``worker``'s set, the presences it still holds."""
        rooms: Any = await self.client.smembers(self.keys.worker_rooms(worker))
        for raw in sorted(rooms):
            room_id = raw.decode()
            state = await self.states.current(room_id)
            for participant in list(state.participants.values()):
                if participant.worker == worker:
                    await self._end(room_id, participant.subject, reason, worker, participant.role)
            await self.client.srem(self.keys.worker_rooms(worker), raw)
        await self.client.hdel(self.keys.workers(), worker)

    async def take_over(self, room_id: str, epoch: int) -> None:
        """This worker took ``room_id`` under ``epoch``: presences another worker holds there
        are stale (it lost the room, or died) and end now (``worker_lost``), fail closed."""
        state = await self.states.current(room_id)
        for participant in list(state.participants.values()):
            if participant.worker not in ("", self.worker_id):
                await self._end(
                    room_id,
                    participant.subject,
                    LeaveReason.WORKER_LOST,
                    participant.worker,
                    participant.role,
                    epoch=epoch,
                )

    async def _end_unattached_joins(self) -> None:
        key = self.keys.unattached_joins()
        expired: Any = await self.client.zrangebyscore(key, 0, time.time())
        for member in expired:
            room_id, _, subject = member.decode().partition(" ")
            state = await self.states.current(room_id)
            participant = state.participants.get(subject)
            if participant is not None:
                await self._end(room_id, subject, LeaveReason.NO_SESSION, "", participant.role)
            await self.client.zrem(key, member)

    async def _end(
        self,
        room_id: str,
        subject: str,
        reason: LeaveReason,
        worker: str,
        role: Role,
        *,
        epoch: int | None = None,
    ) -> None:
        # Written by the worker that noticed, on the participant's behalf: the envelope's actor.
        noticer = Actor(
            subject=f"worker:{self.worker_id}", role=role, name="Earpiece", can_whisper=False
        )
        end = EndPresence(subject=subject, reason=reason, worker=worker)
        await self.commands.handle(room_id, end, noticer, epoch=epoch)

    async def live_workers(self) -> dict[str, WorkerInfo]:
        """Every registered worker whose lease is live, with what it says of itself."""
        registered = sorted(
            raw.decode() for raw in await self._call(self.client.hkeys(self.keys.workers()))
        )
        if not registered:
            return {}
        async with self.client.pipeline(transaction=False) as pipe:  # each key its own slot
            for worker in registered:
                pipe.get(self.keys.worker_lease(worker))
            leases = await self._call(pipe.execute())
        return {
            worker: _info_decoder.decode(raw)
            for worker, raw in zip(registered, leases, strict=True)
            if raw is not None
        }

    async def least_loaded(self) -> str:
        """The live worker hosting the fewest rooms (this one, if it is among the fewest)."""
        live = await self.live_workers()
        live[self.worker_id] = self._info()
        return min(live, key=lambda worker: (live[worker].rooms, worker != self.worker_id))

    def _info(self) -> WorkerInfo:
        return WorkerInfo(url=self.url, rooms=self.load())

    async def _register(self) -> None:
        await self.client.hset(self.keys.workers(), self.worker_id, utc_now().isoformat())
        await self.client.set(
            self._lease, msgspec.json.encode(self._info()), px=int(self.lease_s * 1000)
        )

    async def _renew(self) -> bool:
        """Extend the lease, with this worker's load now; False if it had lapsed."""
        info = msgspec.json.encode(self._info())
        renewed = await self.client.set(self._lease, info, px=int(self.lease_s * 1000), xx=True)
        return bool(renewed)

    async def _call(self, request: Awaitable[Any]) -> Any:
        try:
            return await request
        except RedisError as exc:
            raise StoreUnavailable(f"worker {self.worker_id}: {exc}") from exc


def _member(room_id: str, subject: str) -> str:
    return f"{room_id} {subject}"  # a room id has no space (events/keys.py)
