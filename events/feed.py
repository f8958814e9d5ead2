"""Consumer groups over the partition feeds: how projections and integrations read every room.

A ``FeedConsumer`` is one member of a named group on one partition's feed. It hands each
envelope to a handler and acknowledges it only once the handler has returned, so a consumer
that dies mid-batch loses nothing: its entries stay pending and, once idle for
``claim_idle_ms``, any member of the group claims them (``XAUTOCLAIM``) and handles them again.
Delivery is therefore at least once; handlers must be idempotent (the audit projection, for
one, skips versions it has already recorded).

An entry that cannot be decoded, one that its handler finds inconsistent with the room's stream
(``InconsistentEntry``), or one whose handler keeps failing ``max_deliveries`` times, is copied
to the partition's quarantine stream with the reason, logged and acknowledged, so that one bad
entry never stops the group. While Redis is unreachable the group waits with a capped
back-off and tries again, for as long as the outage lasts: nothing is lost, since
unacknowledged entries wait in the group.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import RedisError, ResponseError

from events.envelope import Envelope, EnvelopeCodec
from events.errors import InconsistentEntry, MalformedEvent, StoreUnavailable
from events.keys import KeySpace
from events.retry import Backoff
from events.store import RedisClient, raise_if_cancelling

log = logging.getLogger(__name__)

Handler = Callable[[Envelope], Awaitable[None]]
BatchHandler = Callable[[list[Envelope]], Awaitable[None]]
"""Handles a whole batch at once (say, one catch-up per room); a failure falls back to the
per-envelope handler, entry by entry, with its retries and quarantine."""
StreamId = tuple[int, int]
Entry = tuple[bytes, dict[bytes, bytes] | None]


class FeedConsumer:
    def __init__(
        self,
        client: RedisClient,
        *,
        group: str,
        consumer: str,
        partition: int = 0,
        keys: KeySpace | None = None,
        codec: EnvelopeCodec | None = None,
        batch: int = 100,
        block_ms: int = 1000,
        claim_idle_ms: int = 30_000,
        max_deliveries: int = 5,
    ) -> None:
        self.client = client
        self.group = group
        self.consumer = consumer
        self.keys = keys or KeySpace()
        self.feed = self.keys.feed(partition)
        self.quarantine = self.keys.quarantine(partition)
        self.codec = codec or EnvelopeCodec()
        self.batch = batch
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.max_deliveries = max_deliveries

    async def ensure_group(self) -> None:
        """Create the group at the start of the feed (so it sees every event), if missing."""
        try:
            await self.client.xgroup_create(self.feed, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise StoreUnavailable(f"creating group {self.group!r} failed: {exc}") from exc
        except RedisError as exc:  # ConnectionError, TimeoutError: Redis is away
            raise StoreUnavailable(f"creating group {self.group!r} failed: {exc}") from exc

    async def run(
        self,
        handler: Handler,
        on_progress: Callable[[], None] = lambda: None,
        batch_handler: BatchHandler | None = None,
    ) -> None:
        """Consume until cancelled; ``on_progress`` is called after each answered read."""
        await self.ensure_group()
        # Our own pending entries first: what this consumer name held when it last stopped.
        while await self.consume_once(handler, own_pending=True, batch_handler=batch_handler):
            on_progress()
        while True:
            raise_if_cancelling()
            await self.consume_once(handler, batch_handler=batch_handler)
            on_progress()

    async def consume_once(
        self,
        handler: Handler,
        *,
        own_pending: bool = False,
        batch_handler: BatchHandler | None = None,
    ) -> int:
        """Handle one batch: stale entries claimed from dead members first, else new ones.

        Returns how many entries were handled (or quarantined).
        """
        try:
            if own_pending:
                entries = await self._read_group("0", block=False)
            else:
                entries = await self._claim_stale() or await self._read_group(">", block=True)
            left = entries
            if batch_handler is not None and len(entries) > 1:
                left = await self._handle_batch(entries, batch_handler)
            for entry_id, fields in left:
                await self._handle(entry_id, fields, handler)
        except RedisError as exc:
            raise StoreUnavailable(f"consuming {self.feed!r} as {self.group!r} failed") from exc
        return len(entries)

    async def _read_group(self, from_id: str, *, block: bool) -> list[Entry]:
        reply: Any = await self.client.xreadgroup(
            self.group,
            self.consumer,
            {self.feed: from_id},
            count=self.batch,
            block=self.block_ms if block else None,
        )
        return [entry for _stream, entries in reply or () for entry in entries]

    async def _claim_stale(self) -> list[Entry]:
        reply = await self.client.xautoclaim(
            self.feed, self.group, self.consumer, self.claim_idle_ms, "0-0", count=self.batch
        )
        # Redis 6.2 answers [cursor, entries]; 7.x adds a third item, the deleted ids.
        entries: list[Entry] = reply[1]
        return entries

    async def _handle_batch(self, entries: list[Entry], batch_handler: BatchHandler) -> list[Entry]:
        """Hand every readable entry to ``batch_handler`` and acknowledge them in one call;
        what it fails on is returned, for the per-envelope handler."""
        readable: list[tuple[Entry, Envelope]] = []
        for entry_id, fields in entries:
            if not fields:
                await self._ack(entry_id)
                continue
            try:
                readable.append(((entry_id, fields), self.codec.decode(fields.get(b"e", b""))))
            except MalformedEvent as exc:
                await self._quarantine(entry_id, fields, exc.reason)
        if not readable:
            return []
        try:
            await batch_handler([envelope for _entry, envelope in readable])
        except asyncio.CancelledError:
            raise
        except (StoreUnavailable, RedisError):
            raise
        except Exception as exc:
            log.info("batch of %d on %s failed (%r): one by one", len(readable), self.feed, exc)
            return [entry for entry, _envelope in readable]
        await self.client.xack(self.feed, self.group, *(entry_id for (entry_id, _), _ in readable))
        return []

    async def _handle(
        self, entry_id: bytes, fields: dict[bytes, bytes] | None, handler: Handler
    ) -> None:
        if not fields:  # trimmed away while pending (Redis 6.2 still returns its id)
            await self._ack(entry_id)
            return
        try:
            envelope = self.codec.decode(fields.get(b"e", b""))
        except MalformedEvent as exc:
            await self._quarantine(entry_id, fields, exc.reason)
            return
        try:
            await handler(envelope)
        except asyncio.CancelledError:
            raise
        except InconsistentEntry as exc:  # no retry can help: set it aside now
            await self._quarantine(entry_id, fields, str(exc))
            return
        except (StoreUnavailable, RedisError):
            raise  # Redis is away, not the entry's fault: it stays pending, the group retries
        except Exception as exc:
            deliveries = await self._deliveries(entry_id)
            if deliveries < self.max_deliveries:
                log.warning(
                    "handler failed on %s %s (delivery %d of %d), left pending: %r",
                    self.feed,
                    entry_id.decode(),
                    deliveries,
                    self.max_deliveries,
                    exc,
                )
                return
            await self._quarantine(entry_id, fields, f"handler failed {deliveries} times: {exc!r}")
            return
        await self._ack(entry_id)

    async def _deliveries(self, entry_id: bytes) -> int:
        pending: list[dict[str, Any]] = await self.client.xpending_range(
            self.feed, self.group, min=entry_id, max=entry_id, count=1
        )
        return int(pending[0]["times_delivered"]) if pending else 1

    async def _quarantine(self, entry_id: bytes, fields: dict[bytes, bytes], reason: str) -> None:
        log.error(
            "quarantined %s entry %s for group %r: %s",
            self.feed,
            entry_id.decode(),
            self.group,
            reason,
        )
        record: dict[Any, Any] = {
            **fields,
            b"source": self.feed,
            b"source_id": entry_id,
            b"group": self.group,
            b"reason": reason,
        }
        await self.client.xadd(self.quarantine, record)
        await self._ack(entry_id)

    async def _ack(self, entry_id: bytes) -> None:
        await self.client.xack(self.feed, self.group, entry_id)


async def run_group(
    client: RedisClient,
    *,
    group: str,
    consumer: str,
    handler: Handler,
    keys: KeySpace,
    codec: EnvelopeCodec,
    block_ms: int = 1000,
    batch_handler: BatchHandler | None = None,
) -> None:
    """One member of ``group`` on every partition's feed, handing envelopes to ``handler``
    (whole batches to ``batch_handler``, if given).

    Runs until cancelled, through Redis outages of any length (capped back-off).
    """
    members = [
        FeedConsumer(
            client,
            group=group,
            consumer=consumer,
            partition=partition,
            keys=keys,
            codec=codec,
            block_ms=block_ms,
        )
        for partition in range(keys.partitions)
    ]
    backoff = Backoff()
    while True:
        try:
            async with asyncio.TaskGroup() as running:
                for member in members:
                    running.create_task(
                        member.run(handler, on_progress=backoff.reset, batch_handler=batch_handler)
                    )
        except* StoreUnavailable as failures:
            log.warning(
                "group %r paused, retrying in %.1fs: %s",
                group,
                backoff.next_s(),
                failures.exceptions[0],
            )
            await backoff.wait()


def _stream_id(raw: bytes) -> StreamId:
    milliseconds, sequence = raw.split(b"-")
    return int(milliseconds), int(sequence)


async def trim_feed(client: RedisClient, feed: str, *, keep_s: float) -> int:
    """Drop the feed entries that every group has handled and that are older than ``keep_s``.

    The feed is a delivery queue, not the record: room streams are never trimmed, since the
    audit is verified against them. An entry still pending in a group, or not yet read by one,
    stays whatever its age; a feed with no group at all is left whole. Returns how many went.
    """
    try:
        groups: list[dict[str, Any]] = await client.xinfo_groups(feed)
    except ResponseError:
        return 0  # no feed yet
    if not groups:
        return 0
    keep_from: StreamId = (int((time.time() - keep_s) * 1000), 0)
    for group in groups:
        delivered = _stream_id(group["last-delivered-id"])
        keep_from = min(keep_from, (delivered[0], delivered[1] + 1))
        pending: dict[str, Any] = await client.xpending(feed, group["name"])
        if pending["min"] is not None:
            keep_from = min(keep_from, _stream_id(pending["min"]))
    trimmed: int = await client.xtrim(
        feed, minid=f"{keep_from[0]}-{keep_from[1]}", approximate=False
    )
    return trimmed
