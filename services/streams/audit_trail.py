"""The audit projection's shell: keeps each room's hash-chained audit log in Redis.

The feed tells the trail that a room has moved on; the trail then chains every event of the
room's own stream that it has not recorded yet, in version order. Working from the room stream
rather than from the feed entry makes redelivered, reordered or skipped feed entries harmless:
a record is written once per event, each with entry id ``"<seq>-0"``, so if two workers race
for the same record Redis refuses the second ``XADD`` and the loser re-reads and moves on.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from prometheus_client import Histogram
from redis.exceptions import RedisError, ResponseError

from events.envelope import Envelope, utc_now
from events.errors import InconsistentEntry, StoreUnavailable
from events.feed import run_group
from events.store import EventStore, RedisClient
from projections.audit import AuditRecord, next_record
from services.streams.room_states import LAG_BUCKETS

AUDIT_LAG = Histogram(
    "earpiece_audit_lag_seconds",
    "From an event's append to its audit record",
    buckets=LAG_BUCKETS,
)

log = logging.getLogger(__name__)

AUDIT_GROUP = "audit"

_record_decoder = msgspec.json.Decoder(AuditRecord)


class AuditTrail:
    def __init__(self, store: EventStore) -> None:
        self.store = store

    async def records(self, room_id: str) -> list[AuditRecord]:
        try:
            entries: Any = await self.store.client.xrange(self.store.keys.audit(room_id))
        except RedisError as exc:
            raise StoreUnavailable(f"reading the audit of room {room_id!r}: {exc}") from exc
        return [_record_decoder.decode(fields[b"r"]) for _id, fields in entries]

    async def last_record(self, room_id: str) -> AuditRecord | None:
        try:
            newest: Any = await self.store.client.xrevrange(self.store.keys.audit(room_id), count=1)
        except RedisError as exc:
            raise StoreUnavailable(f"reading the audit of room {room_id!r}: {exc}") from exc
        return _record_decoder.decode(newest[0][1][b"r"]) if newest else None

    async def catch_up(self, room_id: str, *, through_version: int) -> int:
        """Chain the room's events up to ``through_version``; returns how many were recorded."""
        recorded = 0
        while True:
            last = await self.last_record(room_id)
            after = last.version if last else 0
            if after >= through_version:
                return recorded
            batch = await self.store.read(
                room_id, after_version=after, count=min(through_version - after, 500)
            )
            if not batch:
                raise InconsistentEntry(
                    f"room {room_id!r} has no version {after + 1}, yet a feed entry names "
                    f"version {through_version}"
                )
            try:
                recorded += await self._append(room_id, last, batch)
            except ResponseError as exc:
                if "equal or smaller" not in str(exc):
                    raise StoreUnavailable(f"recording room {room_id!r}: {exc}") from exc
                # Another worker recorded some of these first; re-read its head and go on.
            except RedisError as exc:
                raise StoreUnavailable(f"recording room {room_id!r}: {exc}") from exc

    async def handle(self, envelope: Envelope) -> None:
        await self.catch_up(envelope.room_id, through_version=envelope.version)

    async def handle_batch(self, envelopes: list[Envelope]) -> None:
        """One catch-up per room of the batch, to the newest version it names."""
        newest: dict[str, int] = {}
        for envelope in envelopes:
            newest[envelope.room_id] = max(newest.get(envelope.room_id, 0), envelope.version)
        for room_id, version in newest.items():
            await self.catch_up(room_id, through_version=version)

    async def _append(self, room_id: str, last: AuditRecord | None, batch: list[Envelope]) -> int:
        """Chain ``batch`` after ``last`` and write it in one round trip (a pipeline)."""
        key = self.store.keys.audit(room_id)
        async with self.store.client.pipeline(transaction=False) as pipe:
            for envelope in batch:
                last = next_record(last, envelope)
                pipe.xadd(key, {"r": msgspec.json.encode(last)}, id=f"{last.seq}-0")
            await pipe.execute()
        now = utc_now()
        for envelope in batch:
            AUDIT_LAG.observe((now - envelope.time).total_seconds())
        return len(batch)


async def run_audit_projection(
    client: RedisClient, store: EventStore, *, consumer: str, block_ms: int = 1000
) -> None:
    """One member of the audit group on every partition's feed, until cancelled."""
    trail = AuditTrail(store)
    await run_group(
        client,
        group=AUDIT_GROUP,
        consumer=consumer,
        handler=trail.handle,
        batch_handler=trail.handle_batch,
        keys=store.keys,
        codec=store.codec,
        block_ms=block_ms,
    )
