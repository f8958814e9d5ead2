"""``earpiece bench store``: the event store against a plain XADD baseline, side by side.

Each phase runs the store and its baseline in the same run, on the same fresh local
redis-server, so that the ratio holds on a noisy machine even where absolute figures drift:

* appends: one room written by one writer, then 100 rooms by 100 concurrent writers; the
  baseline is ``XADD`` of the same envelope bytes with no checks;
* follow: time from an append's reply to a blocking follower seeing the event; the baseline is
  ``XADD`` + ``XREAD BLOCK`` on a bare stream;
* recovery: loading a room of N events from nothing, and from a snapshot N-100 events in.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis.asyncio as redis

from events.envelope import Envelope, new_event_id, utc_now
from events.store import EventStore
from events.stream_reader import StreamReader
from services.bench.workload import COACH, percentile, talk_event
from services.redis_clients import dedicated_client
from services.redis_server import RedisServer
from services.streams.room_states import RoomStates


class Throughput:
    def __init__(self) -> None:
        self.latencies_ms: list[float] = []
        self.elapsed_s = 0.0

    @property
    def rate(self) -> float:
        return len(self.latencies_ms) / self.elapsed_s

    def row(self, name: str, baseline: Throughput | None) -> str:
        ratio = f"{self.rate / baseline.rate:.2f}" if baseline else "1.00"
        return (
            f"| {name} | {self.rate:,.0f} | {percentile(self.latencies_ms, 50):.3f} | "
            f"{percentile(self.latencies_ms, 99):.3f} | {ratio} |"
        )


async def run_writers(
    writers: int, seconds: float, write: Callable[[int, int], Awaitable[None]]
) -> Throughput:
    """``writers`` concurrent loops calling ``write(writer, n)`` for ``seconds``."""
    result = Throughput()
    deadline = time.perf_counter() + seconds

    async def loop(writer: int) -> None:
        n = 0
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await write(writer, n)
            result.latencies_ms.append((time.perf_counter() - started) * 1000)
            n += 1

    started = time.perf_counter()
    await asyncio.gather(*(loop(w) for w in range(writers)))
    result.elapsed_s = time.perf_counter() - started
    return result


async def append_phase(
    client: redis.Redis, store: EventStore, rooms: int, seconds: float, tag: str
) -> list[str]:
    envelope_bytes = store.codec.encode(
        Envelope(
            event_id=new_event_id(),
            room_id="r",
            version=1,
            time=utc_now(),
            actor="sup-1",
            event=talk_event(1),
        )
    )

    async def baseline(writer: int, n: int) -> None:
        await client.xadd(f"bench:{tag}:baseline:{writer}", {"e": envelope_bytes})

    async def append(writer: int, n: int) -> None:
        await store.append(
            f"bench-{tag}-{writer}", [talk_event(n + 1)], expected_version=n, actor="sup-1"
        )

    plain = await run_writers(rooms, seconds, baseline)
    stored = await run_writers(rooms, seconds, append)
    return [
        plain.row(f"plain XADD, {rooms} stream(s)", None),
        stored.row(f"EventStore.append, {rooms} room(s)", plain),
    ]


async def follow_latency(
    follow_next: Callable[[], Awaitable[None]], write: Callable[[int], Awaitable[None]], n: int
) -> list[float]:
    async def woken() -> float:
        await follow_next()
        return time.perf_counter()

    """Milliseconds from each write's call to the follower's wake-up (the round trip included)."""
    samples: list[float] = []
    for i in range(n):
        waiting = asyncio.ensure_future(woken())
        await asyncio.sleep(0.001)  # let the follower block first, as a live one would be
        started = time.perf_counter()
        await write(i)
        samples.append((await waiting - started) * 1000)
    return samples


async def follow_phase(client: redis.Redis, store: EventStore, n: int = 2000) -> list[str]:
    stream = "bench:follow:baseline"
    last_id = "0-0"

    async def raw_next() -> None:
        nonlocal last_id
        reply: Any = await client.xread({stream: last_id}, block=5000, count=1)
        last_id = reply[0][1][0][0]

    async def raw_write(i: int) -> None:
        await client.xadd(stream, {"e": b"x"})

    reads = dedicated_client(client, "bench:reader")
    reader = StreamReader(store, reads, block_ms=5000)
    following = reader.follow("bench-follow")

    async def store_next() -> None:
        await anext(following)

    async def store_write(i: int) -> None:
        await store.append("bench-follow", [talk_event(i + 1)], expected_version=i, actor="s")

    plain = await follow_latency(raw_next, raw_write, n)
    stored = await follow_latency(store_next, store_write, n)
    await following.aclose()
    await reader.close()
    await reads.aclose()
    rows = []
    for name, samples in (
        ("XADD → XREAD BLOCK", plain),
        ("append() → StreamReader.follow()", stored),
    ):
        rows.append(
            f"| {name} | {percentile(samples, 50):.3f} | {percentile(samples, 99):.3f} | "
            f"{max(samples):.3f} |"
        )
    return rows


async def write_talk_events(store: EventStore, room: str, after: int, through: int) -> None:
    while after < through:
        batch = [talk_event(v) for v in range(after + 1, min(after + 500, through) + 1)]
        await store.append(room, batch, expected_version=after, actor="sup-1")
        after += len(batch)


async def recovery_phase(store: EventStore, events: int) -> list[str]:
    room = "bench-recovery"
    await store.append(room, [COACH], expected_version=0, actor="sup-1")
    await write_talk_events(store, room, 1, events - 100)
    # A snapshot 100 events before the end, as a live room would have.
    snapshot_at = await RoomStates(store, snapshot_every=1).current(room)
    await write_talk_events(store, room, events - 100, events)

    started = time.perf_counter()
    full = await RoomStates(store).replay(room)
    replay_s = time.perf_counter() - started
    started = time.perf_counter()
    recovered = await RoomStates(store).current(room)
    snapshot_s = time.perf_counter() - started
    if recovered != full:
        raise RuntimeError("snapshot + tail recovery differs from full replay")
    return [
        f"| full replay of {events:,} events | {replay_s * 1000:,.1f} | 1.00 |",
        f"| snapshot at {snapshot_at.version:,} + tail of 100 | {snapshot_s * 1000:,.1f} | "
        f"{replay_s / snapshot_s:,.0f}x faster |",
    ]


async def run_store_bench(seconds: float, recovery_events: int, appendfsync: str) -> int:
    with (
        tempfile.TemporaryDirectory() as data_dir,
        RedisServer(Path(data_dir), appendfsync=appendfsync) as server,
    ):
        client = redis.Redis.from_url(server.url)
        store = EventStore(client)
        print(f"redis-server {server.version()} ({server.binary}), appendfsync {appendfsync}\n")
        print("| appends | per second | p50 ms | p99 ms | ratio to baseline |")
        print("|---|---|---|---|---|")
        for rooms in (1, 100):
            for row in await append_phase(client, store, rooms, seconds, f"r{rooms}"):
                print(row, flush=True)
        print("\n| append → follower sees it | p50 ms | p99 ms | max ms |")
        print("|---|---|---|---|")
        for row in await follow_phase(client, store):
            print(row, flush=True)
        print("\n| recovery | ms | ratio |")
        print("|---|---|---|")
        for row in await recovery_phase(store, recovery_events):
            print(row, flush=True)
        await client.aclose()
    return 0
