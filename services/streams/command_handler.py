"""command → decide(state, command) → append to the room's stream (expected version).

The one place where a command becomes events. The decision is made on the room's current
state and appended with that state's version as the expected version; if another writer got
there first, the store refuses, and the command is decided again on the newer state (it may
now be a no-op, or rejected). Nobody's page is updated from here: pages follow the stream.
"""

from __future__ import annotations

import asyncio
import random
import weakref
from collections.abc import Awaitable, Callable

import msgspec
from prometheus_client import Counter, Histogram

from events.envelope import new_event_id
from events.errors import Fenced, WrongExpectedVersion
from events.store import EventStore
from projections.commands import Actor, Join, RoomCommand, SessionCommand
from projections.decider import Rejection, decide
from services.errors import Contention
from services.streams.room_states import RoomStates

FENCED_WRITES = Counter(
    "earpiece_fenced_writes",
    "Writes about sessions refused because another worker took their room's lease since",
)


APPEND_SECONDS = Histogram(
    "earpiece_append_seconds",
    "Time to append a command's events to the room's stream (each attempt)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)


class Accepted(msgspec.Struct, frozen=True, kw_only=True):
    """The command's events were stored as versions ``first_version..last_version``."""

    first_version: int
    last_version: int
    duplicate: bool = False


class Unchanged(msgspec.Struct, frozen=True, kw_only=True):
    """The command asked for what already is (e.g. monitor while monitoring): nothing stored."""

    version: int


Outcome = Accepted | Unchanged | Rejection


class CommandHandler:
    def __init__(self, store: EventStore, states: RoomStates, *, max_attempts: int = 10) -> None:
        self.store = store
        self.states = states
        self.max_attempts = max_attempts
        self.on_join_without_session: Callable[[str, str], Awaitable[None]] | None = None
        """Told (room, subject) of each join stored with no session behind it (an HTTP join),
        which must not hold a seat for long: services/streams/presence.py."""
        # Weak: a room's lock lives only while a command to it is in flight.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    async def handle(
        self,
        room_id: str,
        command: RoomCommand | SessionCommand,
        actor: Actor,
        *,
        idempotency_key: str | None = None,
        correlation_id: str | None = None,
        epoch: int | None = None,
    ) -> Outcome:
        """Decide ``command`` and store its events. ``epoch``: the room lease a worker writes
        about its sessions under (events/room_leases.py); Fenced if it lost the room."""
        causation_id = idempotency_key or new_event_id()
        if idempotency_key is not None:  # each sender's keys are their own
            idempotency_key = f"{actor.subject}:{idempotency_key}"
        # Commands to one room from this process go one at a time; only other nodes race.
        async with self._locks.setdefault(room_id, asyncio.Lock()):
            outcome = await self._decide_and_append(
                room_id, command, actor, idempotency_key, causation_id, correlation_id, epoch
            )
        joined = isinstance(command, Join) and isinstance(outcome, Accepted)
        if joined and self.on_join_without_session is not None:
            await self.on_join_without_session(room_id, actor.subject)
        return outcome

    async def _decide_and_append(
        self,
        room_id: str,
        command: RoomCommand | SessionCommand,
        actor: Actor,
        idempotency_key: str | None,
        causation_id: str,
        correlation_id: str | None,
        epoch: int | None,
    ) -> Outcome:
        for attempt in range(self.max_attempts):
            state = await self.states.current(room_id)
            decision = decide(state, command, actor)
            if isinstance(decision, Rejection):
                return decision
            if not decision:
                return Unchanged(version=state.version)
            try:
                with APPEND_SECONDS.time():
                    result = await self.store.append(
                        room_id,
                        decision,
                        expected_version=state.version,
                        actor=actor.subject,
                        idempotency_key=idempotency_key,
                        causation_id=causation_id,
                        correlation_id=correlation_id,
                        epoch=epoch,
                    )
            except Fenced:
                FENCED_WRITES.inc()
                raise
            except WrongExpectedVersion as conflict:
                if conflict.actual < state.version:  # the store lost what we knew: reload
                    await self.states.reload(room_id, conflict.actual)
                    continue
                # Another node appended first: decide again on the newer state, after a
                # random pause that grows, so that racing nodes stop colliding.
                await asyncio.sleep(random.uniform(0, 0.001 * 2**attempt))
                continue
            return Accepted(
                first_version=result.first_version,
                last_version=result.last_version,
                duplicate=result.duplicate,
            )
        raise Contention(room_id, self.max_attempts)
