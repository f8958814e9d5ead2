"""What the media plane actually did: every route applied, removed or refused, with time.

The room's events say which routes *should* exist; this log says which *did*, so an auditor
can prove that no supervisor was ever routed to the customer, and when each coach was heard.
Entries are written in order by one background task per room, so a slow Redis never delays
the media path. While Redis is away they wait in memory, up to ``max_pending`` of them (the
oldest beyond that are dropped, counted and logged: memory stays bounded however long the
outage), and are written once it is back; ``flush`` waits for them at most ``deadline_s``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import logging
from collections import deque
from typing import Any

import msgspec
from prometheus_client import Counter
from redis.exceptions import RedisError

from events.envelope import utc_now
from events.errors import StoreUnavailable
from events.keys import KeySpace
from events.retry import Backoff
from events.store import RedisClient
from projections.routes import AudioRoute

log = logging.getLogger(__name__)


class RouteOp(enum.StrEnum):
    APPLIED = "applied"
    REMOVED = "removed"
    REFUSED = "refused"


class RouteChange(msgspec.Struct, frozen=True, kw_only=True):
    op: RouteOp
    producer: str
    consumer: str
    version: int
    """The room version whose state asked for the change."""
    time: dt.datetime
    detail: str = ""


_decoder = msgspec.json.Decoder(RouteChange)


ROUTE_CHANGES = Counter(
    "earpiece_route_changes", "Audio routes the media plane applied, removed or refused", ["op"]
)
DROPPED_CHANGES = Counter(
    "earpiece_route_log_dropped", "Route changes dropped from a full route log while Redis was away"
)


class RouteLog:
    def __init__(
        self, client: RedisClient, keys: KeySpace, room_id: str, *, max_pending: int = 10_000
    ) -> None:
        self._client = client
        self._key = keys.routes(room_id)
        self._pending: deque[RouteChange] = deque()
        self._max_pending = max_pending
        self.dropped = 0
        """Changes dropped because the log was full, since it was made."""
        self._writer: asyncio.Task[None] | None = None

    def record(self, op: RouteOp, route: AudioRoute, version: int, detail: str = "") -> None:
        ROUTE_CHANGES.labels(op.value).inc()
        change = RouteChange(
            op=op,
            producer=route.producer,
            consumer=route.consumer,
            version=version,
            time=utc_now(),
            detail=detail,
        )
        if len(self._pending) >= self._max_pending:
            self._pending.popleft()
            self.dropped += 1
            DROPPED_CHANGES.inc()
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error("route log of %s is full: %d changes dropped", self._key, self.dropped)
        self._pending.append(change)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write())

    async def flush(self, deadline_s: float = 2.0) -> bool:
        """Wait until every recorded change is in Redis, for ``deadline_s`` at most; whether
        they all are. (Those left go on being written while the process runs.)"""
        try:
            async with asyncio.timeout(deadline_s):
                while self._writer is not None and not self._writer.done():
                    await asyncio.shield(self._writer)
        except TimeoutError:
            log.warning(
                "route log of %s: %d changes not written yet", self._key, len(self._pending)
            )
            return False
        return True

    def close(self) -> None:
        """Stop writing: what is still pending is dropped (logged by ``flush`` first)."""
        if self._writer is not None:
            self._writer.cancel()

    async def _write(self) -> None:
        backoff = Backoff(max_s=10.0)
        while self._pending:
            try:
                await self._client.xadd(self._key, {"c": msgspec.json.encode(self._pending[0])})
            except RedisError as exc:
                # Kept in memory and retried in order: the log must not lose what was done.
                log.warning("route log of %s: write failed, retrying: %s", self._key, exc)
                await backoff.wait()
                continue
            backoff.reset()
            self._pending.popleft()

    async def read(self) -> list[RouteChange]:
        try:
            entries: Any = await self._client.xrange(self._key)
        except RedisError as exc:
            raise StoreUnavailable(f"reading the route log {self._key!r}: {exc}") from exc
        return [_decoder.decode(fields[b"c"]) for _id, fields in entries]
