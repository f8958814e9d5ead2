"""Feed trimming: the partition feeds are delivery queues, not history (room streams are).

Once every consumer group has handled an entry and it is older than the retention, it goes;
``events.feed.trim_feed`` never drops an entry still pending for some group.
"""

from __future__ import annotations

import asyncio
import logging

from redis.exceptions import RedisError

from events.feed import trim_feed
from events.keys import KeySpace
from events.store import RedisClient

log = logging.getLogger(__name__)


async def trim_feeds(client: RedisClient, keys: KeySpace, keep_s: float) -> None:
    """Every minute, drop feed entries every group has handled once they are ``keep_s`` old."""
    while True:
        for feed in keys.feeds():
            try:
                await trim_feed(client, feed, keep_s=keep_s)
            except RedisError as exc:
                log.warning("trimming %s failed, will retry: %s", feed, exc)
        await asyncio.sleep(60)
