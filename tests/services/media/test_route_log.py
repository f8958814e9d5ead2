"""The route log (services/media/route_log.py): in order, bounded while Redis is away, and a
flush that never waits past its deadline."""

from __future__ import annotations

import time

import redis.asyncio as redis

from events.keys import KeySpace
from projections.routes import AudioRoute
from services.media.route_log import DROPPED_CHANGES, RouteLog, RouteOp
from services.redis_server import free_loopback_port

COACHED = AudioRoute("sup-1", "agent")


async def test_changes_are_written_in_the_order_they_were_made(redis_client: redis.Redis) -> None:
    log = RouteLog(redis_client, KeySpace(), "room-1")
    log.record(RouteOp.APPLIED, COACHED, 6, "coach-1")
    log.record(RouteOp.REMOVED, COACHED, 7)

    assert await log.flush()
    assert [(c.op, c.version) for c in await log.read()] == [
        (RouteOp.APPLIED, 6),
        (RouteOp.REMOVED, 7),
    ]


async def test_while_redis_is_away_the_log_keeps_the_newest_changes_and_counts_the_rest() -> None:
    away = redis.Redis(port=free_loopback_port(), socket_connect_timeout=0.2)
    log = RouteLog(away, KeySpace(), "room-1", max_pending=10)
    before = DROPPED_CHANGES._value.get()

    for version in range(1, 16):
        log.record(RouteOp.APPLIED, COACHED, version)

    assert (log.dropped, DROPPED_CHANGES._value.get()) == (5, before + 5)
    started = time.monotonic()
    assert not await log.flush(deadline_s=0.3)
    assert time.monotonic() - started < 1.0
    log.close()
    await away.aclose()
