"""What the media plane actually did: every route applied, removed or refused, with time.

The room's events say which routes *should* exist; this log says which *did*, so an auditor
can prove that no supervisor was ever routed to the customer, and when each coach was heard.
Entries are written in order by one background task per room, so a slow Redis never delays
the media path.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import logging
from collections import deque
from typing import Any

import msgspec
import redis.asyncio as redis
from redis.exceptions import RedisError

from events.envelope import utc_now
from events.keys import KeySpace
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


class RouteLog:
    def __init__(self, client: redis.Redis, keys: KeySpace, room_id: str) -> None:
        self._client = client
        self._key = keys.routes(room_id)
        self._pending: deque[RouteChange] = deque()
        self._writer: asyncio.Task[None] | None = None

    def record(self, op: RouteOp, route: AudioRoute, version: int, detail: str = "") -> None:
        change = RouteChange(
            op=op,
            producer=route.producer,
            consumer=route.consumer,
            version=version,
            time=utc_now(),
            detail=detail,
        )
        self._pending.append(change)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write())

    async def flush(self) -> None:
        """Wait until every recorded change is in Redis."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)

    async def _write(self) -> None:
        while self._pending:
            try:
                await self._client.xadd(self._key, {"c": msgspec.json.encode(self._pending[0])})
            except RedisError:
                # Kept in memory and retried in order: the log must not lose what was done.
                log.exception("route log of %s: write failed, retrying", self._key)
                await asyncio.sleep(1)
                continue
            self._pending.popleft()

    async def read(self) -> list[RouteChange]:
        entries: Any = await self._client.xrange(self._key)
        return [_decoder.decode(fields[b"c"]) for _id, fields in entries]
