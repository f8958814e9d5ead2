"""``earpiece bench pages``: N open pages of one room, one shared follower against one each.

Every open page needs each new state of its room. The baseline is what each page's socket did
before ``services/streams/room_followers.py``: load the state, then follow the room's stream
itself, one blocking ``XREAD`` (a stream reader and a Redis connection of its own) and one fold
per page. Both run side by side on the same fresh local redis-server, for each N: an event is
appended every 20 ms, and a sample is the time from calling ``append()`` until the last of the
N pages has a state that includes that event. The table also gives the blocking Redis reads
(each holds a connection) while the pages listen, and this process's CPU time per event (pages,
followers and appender share it, as in the service).
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as redis

from events.room import WhisperStarted
from events.store import EventStore
from events.stream_reader import StreamReader
from projections.decider import RoomState
from services.bench.workload import COACH, percentile, talk_event
from services.redis_clients import dedicated_client
from services.redis_server import RedisServer
from services.streams.room_followers import RoomFollowers
from services.streams.room_states import RoomStates, follow_states

ROOM = "room-1"
EVENT_INTERVAL_S = 0.020

Watch = Callable[[], AsyncIterator[RoomState]]
"""How one page gets the room's state now and after each event."""
Follower = Callable[[EventStore], AbstractAsyncContextManager[Watch]]
"""A way of following the room, set up for a run and torn down after it."""


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


async def blocking_read_ids(client: redis.Redis) -> list[int]:
    """The connections waiting in a blocking XREAD now (consumer groups use XREADGROUP)."""
    clients = await client.client_list()
    return [int(c["id"]) for c in clients if c["cmd"] == "xread" and "b" in c["flags"]]


async def most_blocking_reads(client: redis.Redis, looks: int = 10) -> int:
    """The most connections seen in a blocking XREAD over ``looks``, 20 ms apart: a follower
    is briefly between two reads after each event and each block's timeout."""
    seen = 0
    for _ in range(looks):
        seen = max(seen, len(await blocking_read_ids(client)))
        await asyncio.sleep(0.02)
    return seen


@contextlib.asynccontextmanager
async def one_follower_per_page(store: EventStore) -> AsyncIterator[Watch]:
    """The baseline: each page loads the state, then follows the stream and folds on its own."""

    async def watch() -> AsyncIterator[RoomState]:
        reads = dedicated_client(store.client, "bench:page")
        reader = StreamReader(store, reads)
        try:
            loaded = await RoomStates(store).current(ROOM)
            yield loaded
            async for state in follow_states(reader, loaded):
                yield state
        finally:
            await reader.close()
            await reads.aclose()

    yield watch


@contextlib.asynccontextmanager
async def shared_follower(store: EventStore) -> AsyncIterator[Watch]:
    """What the service does: every page watches through one RoomFollowers."""
    reads = dedicated_client(store.client, "bench:reader")
    reader = StreamReader(store, reads)
    followers = RoomFollowers(reader, RoomStates(store))
    try:
        yield lambda: followers.watch(ROOM)
    finally:
        await followers.close()
        await reader.close()
        await reads.aclose()


async def run_pages(url: str, pages: int, events: int, name: str, follower: Follower) -> PagesRun:
    """One run on a fresh client, so that its connections alone are counted."""
    client = redis.Redis.from_url(url, max_connections=pages + 10)
    try:
        async with asyncio.timeout(10):  # the previous run's blocked reads are gone
            while await blocking_read_ids(client):  # noqa: ASYNC110 (polling the server)
                await asyncio.sleep(0.05)
        await client.flushall()
        store = EventStore(client)
        await store.append(
            ROOM, [COACH, WhisperStarted(coach="sup-1")], expected_version=0, actor="sup-1"
        )
        async with follower(store) as watch:
            return await _measure(client, store, watch, pages, events, name)
    finally:
        await client.aclose()


async def _measure(
    client: redis.Redis, store: EventStore, watch: Watch, pages: int, events: int, name: str
) -> PagesRun:
    last_version = events + 2
    pages_at: Counter[int] = Counter()  # version -> pages whose state includes it
    everyone_has: dict[int, float] = {}
    all_listening, all_have_the_last = asyncio.Event(), asyncio.Event()

    async def page() -> None:
        had = 0
        async for state in watch():
            # A page handed a newer state skips some: it has every version up to this one.
            for version in range(had + 1, state.version + 1):
                pages_at[version] += 1
                if pages_at[version] == pages:
                    everyone_has[version] = time.perf_counter()
            had = state.version
            if pages_at[2] == pages:
                all_listening.set()
            if pages_at[last_version] == pages:
                all_have_the_last.set()

    listening = [asyncio.create_task(page()) for _ in range(pages)]
    try:
        await asyncio.wait_for(all_listening.wait(), 60)
        await asyncio.sleep(0.2)  # every page is back in its wait
        blocking = await most_blocking_reads(client, looks=5)
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
    latencies = [(everyone_has[v] - appended[v]) * 1000 for v in appended]
    return PagesRun(pages, name, latencies, blocking, cpu_ms / events)


async def run_pages_bench(page_counts: list[int], events: int) -> int:
    with tempfile.TemporaryDirectory() as data_dir, RedisServer(Path(data_dir)) as server:
        print(f"redis-server {server.version()} ({server.binary}); an event every 20 ms\n")
        print(
            "| pages | follower | append → last page p50 ms | p99 ms | blocking Redis reads "
            "| CPU ms per event | p99 ratio |"
        )
        print("|---|---|---|---|---|---|---|")
        for pages in page_counts:
            baseline = await run_pages(
                server.url, pages, events, "one per page", one_follower_per_page
            )
            print(baseline.row(None), flush=True)
            shared = await run_pages(server.url, pages, events, "shared", shared_follower)
            print(shared.row(baseline), flush=True)
    return 0
