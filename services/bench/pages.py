"""``earpiece bench pages``: N open pages of one room, one shared follower against one each.

Every open page needs each new state of its room. The baseline is what each page's socket did
before ``services/room_followers.py``: follow the room's stream itself, one blocking ``XREAD``
(and one Redis connection) per page. Both run side by side on the same fresh local
redis-server, for each N: an event is appended every 20 ms, and a sample is the time from
calling ``append()`` until the last of the N pages has folded that event into its state. The
table also gives the blocking Redis reads (each holds a connection) while the pages listen,
and this process's CPU time per event (pages, followers and appender share it, as in the
service).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as redis

from events.room import WhisperStarted
from events.store import EventStore
from projections.room import RoomState, fold
from services.bench.store import COACH, percentile, talk_event
from services.redis_server import RedisServer
from services.room_followers import RoomFollowers
from services.room_states import RoomStates

ROOM = "room-1"
EVENT_INTERVAL_S = 0.020

Watch = Callable[[], AsyncIterator[RoomState]]
"""How one page gets the room's state now and after each event."""


@dataclass
class PagesRun:
    pages: int
    follower: str
    latencies_ms: list[float]
    blocking_reads: int
    cpu_ms_per_event: float

    def row(self, baseline: PagesRun | None) -> str:
        p99 = percentile(self.latencies_ms, 99)
        ratio = f"{p99 / percentile(baseline.latencies_ms, 99):.2f}" if baseline else "1.00"
        return (
            f"| {self.pages} | {self.follower} | {percentile(self.latencies_ms, 50):.2f} | "
            f"{p99:.2f} | {self.blocking_reads} | {self.cpu_ms_per_event:.2f} | {ratio} |"
        )


async def redis_connections(client: redis.Redis) -> int:
    """Clients connected to the server, not counting the one asking."""
    return int((await client.info("clients"))["connected_clients"]) - 1


async def blocking_reads(client: redis.Redis) -> int:
    """The most connections seen waiting in a blocking XREAD, over five looks 20 ms apart."""
    seen = 0
    for _ in range(5):
        clients = await client.client_list()
        seen = max(seen, sum(1 for c in clients if c["cmd"] == "xread" and "b" in c["flags"]))
        await asyncio.sleep(0.02)
    return seen


def per_page_follow(store: EventStore) -> Watch:
    """The baseline: each page loads the state, then follows the stream on its own."""

    async def watch() -> AsyncIterator[RoomState]:
        state = await RoomStates(store).current(ROOM)
        yield state
        async for envelope in store.follow(ROOM, after_version=state.version):
            state = fold(state, [envelope])
            yield state

    return watch


def shared_follower(store: EventStore) -> Watch:
    """What the service does: every page watches through one RoomFollowers."""
    followers = RoomFollowers(store, RoomStates(store))
    return lambda: followers.watch(ROOM)


async def run_pages(
    url: str, pages: int, events: int, follower: str, watch_with: Callable[[EventStore], Watch]
) -> PagesRun:
    """One run on a fresh client, so that its connections alone are counted."""
    client = redis.Redis.from_url(url, max_connections=pages + 10)
    store = EventStore(client)
    watch = watch_with(store)
    async with asyncio.timeout(10):  # the previous run's connections are gone
        while await redis_connections(client):  # noqa: ASYNC110 (polling the server)
            await asyncio.sleep(0.05)
    await client.flushall()
    await store.append(
        ROOM, [COACH, WhisperStarted(coach="sup-1")], expected_version=0, actor="sup-1"
    )
    has_version: Counter[int] = Counter()
    everyone_has: dict[int, float] = {}
    last_version = events + 2
    all_listening, all_have_the_last = asyncio.Event(), asyncio.Event()

    async def page() -> None:
        async for state in watch():
            has_version[state.version] += 1
            if has_version[state.version] == pages:
                everyone_has[state.version] = time.perf_counter()
                all_listening.set()
                if state.version == last_version:
                    all_have_the_last.set()

    listening = [asyncio.create_task(page()) for _ in range(pages)]
    try:
        await asyncio.wait_for(all_listening.wait(), 60)
        await asyncio.sleep(0.2)  # every page is back in its blocking read
        connections = await blocking_reads(client)
        appended: dict[int, float] = {}
        cpu = time.process_time()
        for version in range(3, last_version + 1):
            appended[version] = time.perf_counter()
            await store.append(ROOM, [talk_event(version)], expected_version=version - 1, actor="s")
            await asyncio.sleep(EVENT_INTERVAL_S)
        await asyncio.wait_for(all_have_the_last.wait(), 30)
        cpu_ms = (time.process_time() - cpu) * 1000
    finally:
        for task in listening:
            task.cancel()
        await asyncio.gather(*listening, return_exceptions=True)
        await client.aclose()
    latencies = [(everyone_has[v] - appended[v]) * 1000 for v in appended]
    return PagesRun(pages, follower, latencies, connections, cpu_ms / events)


async def run_pages_bench(page_counts: list[int], events: int) -> int:
    with tempfile.TemporaryDirectory() as data_dir, RedisServer(Path(data_dir)) as server:
        print(f"redis-server {server.version()} ({server.binary}); an event every 20 ms\n")
        print(
            "| pages | follower | append → last page p50 ms | p99 ms | blocking Redis reads "
            "| CPU ms per event | p99 ratio |"
        )
        print("|---|---|---|---|---|---|---|")
        for pages in page_counts:
            baseline = await run_pages(server.url, pages, events, "one per page", per_page_follow)
            print(baseline.row(None), flush=True)
            shared = await run_pages(server.url, pages, events, "shared", shared_follower)
            print(shared.row(baseline), flush=True)
    return 0
