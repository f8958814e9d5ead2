"""``earpiece bench rooms``: one worker as its open rooms grow, to 1,000.

One fresh local redis-server and the whole service in a child process (``ServerProcess``). Step
by step, more rooms get an open page (an agent's live socket) and the first ``publishing`` of
them a publishing session too (a real aiortc WHIP session sending Opus, encoded once). At each step:

* commands: a coach in each room in turn switches their monitor on or off, one command at a
  time across all the open rooms, each timed from request to answer;
* views: the time until every open page has been sent its room's change, after a new coach
  joins every room at once;
* ``/healthz``: its status and time;
* the Redis connections the worker holds, by purpose (``CLIENT LIST``; redis_clients.py), and
  its RSS and open descriptors.

The baseline is the first step: figures should stay flat as rooms grow, connections constant.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as redis
import websockets

from events.room import Role
from services.bench.fairness import timed_command, token_for
from services.bench.media_clients import CannedOpus, PacketTrack
from services.bench.media_servers import ServerProcess
from services.bench.participants import Participant
from services.bench.workload import percentile
from services.media.ice import gather_on
from services.redis_server import RedisServer


async def worker_connections(client: redis.Redis) -> Counter[str]:
    """The service's Redis connections by purpose (``earpiece:<worker>:<purpose>``)."""
    clients = await client.client_list()
    return Counter(
        c["name"].rsplit(":", 1)[-1] for c in clients if c["name"].startswith("earpiece:")
    )


class Pages:
    """Open pages, one per room, each counting the views it was sent."""

    def __init__(self, url: str, secret: str) -> None:
        self.live = url.replace("http", "ws", 1)
        self.secret = secret
        self.views: dict[str, dict[str, Any]] = {}
        """The newest view each page was sent."""
        self._stack = contextlib.AsyncExitStack()
        self._readers: list[asyncio.Task[None]] = []

    async def open(self, room_id: str) -> None:
        socket = await self._stack.enter_async_context(
            websockets.connect(f"{self.live}/rooms/{room_id}/live", max_queue=None)
        )
        token = token_for(self.secret, room_id, "agent", Role.AGENT)
        await socket.send(json.dumps({"type": "auth", "token": token}))
        first = asyncio.Event()
        self._readers.append(asyncio.create_task(self._read(room_id, socket, first)))
        async with asyncio.timeout(30):
            await first.wait()

    async def _read(
        self, room_id: str, socket: websockets.ClientConnection, first: asyncio.Event
    ) -> None:
        async for raw in socket:
            message = json.loads(raw)
            if message["type"] == "view":
                self.views[room_id] = message["view"]
                first.set()

    def shows_coach(self, room_id: str, subject: str) -> bool:
        return any(c["subject"] == subject for c in self.views[room_id]["coaches"])

    async def close(self) -> None:
        for reader in self._readers:
            reader.cancel()
        await self._stack.aclose()


async def step(
    http: httpx.AsyncClient, pages: Pages, secret: str, rooms: list[str], samples: int
) -> dict[str, Any]:
    coach = {r: {"authorization": f"Bearer {token_for(secret, r, 'coach')}"} for r in rooms}

    latencies = []
    for n in range(samples):
        room_id = rooms[n % len(rooms)]
        name = ("start_monitor", "stop_monitor")[n // len(rooms) % 2]
        latencies.append(await timed_command(http, room_id, coach[room_id], name))
    # A new coach joins every room at once: each agent's page is sent a view with their badge.
    newcomer = f"coach-{len(rooms)}"
    joining = {r: {"authorization": f"Bearer {token_for(secret, r, newcomer)}"} for r in rooms}
    started = time.perf_counter()
    await asyncio.gather(
        *(
            http.post(f"/rooms/{r}/commands", json={"command": "join"}, headers=joining[r])
            for r in rooms
        )
    )
    async with asyncio.timeout(60):
        while not all(pages.shows_coach(r, newcomer) for r in rooms):  # noqa: ASYNC110
            await asyncio.sleep(0.005)
    views_s = time.perf_counter() - started
    healthz_started = time.perf_counter()
    healthz = await http.get("/healthz")
    return {
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "views_s": views_s,
        "healthz": healthz.status_code,
        "healthz_ms": (time.perf_counter() - healthz_started) * 1000,
    }


async def run_rooms_bench(room_counts: list[int], publishing: int, samples: int) -> int:
    gather_on(["127.0.0.1"])  # the publishers' candidates: loopback, as the server's
    canned = CannedOpus(count=500)  # encoded once: 50 live encoders would load this process
    secret = secrets.token_urlsafe(32)
    rows = []
    with tempfile.TemporaryDirectory(prefix="earpiece-rooms-") as scratch:
        redis_server = RedisServer(Path(scratch) / "redis")
        redis_server.start()
        client = redis.Redis.from_url(redis_server.url)
        try:
            # A thousand people open pages from as many addresses; here all come from one.
            one_address = {"EARPIECE_CONNECTIONS_PER_S": "0"}
            async with (
                ServerProcess(
                    "earpiece", redis_server.url, secret, Path(scratch), one_address
                ) as server,
                httpx.AsyncClient(base_url=server.url, timeout=60) as http,
            ):
                pages = Pages(server.url, secret)
                publishers: list[Participant] = []
                try:
                    opened: list[str] = []
                    for count in sorted(room_counts):
                        for n in range(len(opened), count):
                            opened.append(f"room-{n}")
                            await pages.open(opened[-1])
                        while len(publishers) < min(publishing, count):
                            room_id = opened[len(publishers)]
                            token = token_for(secret, room_id, "agent", Role.AGENT)
                            publishers.append(Participant(http, room_id, token))
                            track = PacketTrack(canned)
                            track.gate.set()
                            await publishers[-1].publish(track)
                        await asyncio.sleep(1.0)  # sessions connected, reads re-armed
                        figures = await step(http, pages, secret, opened, samples)
                        connections = await worker_connections(client)
                        rows.append(
                            (
                                count,
                                len(publishers),
                                figures,
                                connections,
                                server.rss_mb(),
                                server.fds(),
                            )
                        )
                        print(f"{count} rooms: {figures} {dict(connections)}", flush=True)
                finally:
                    await asyncio.gather(*(p.close() for p in publishers))
                    await pages.close()
        finally:
            await client.aclose()
            redis_server.stop()
    print(f"{samples} commands per step, one at a time across the open rooms")
    print(
        "| rooms with a page | publishing | command p50 ms | p99 ms | every page's view s | "
        "/healthz | Redis connections (by purpose) | RSS MB | fds |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for count, publishing_now, f, connections, rss, fds in rows:
        by_purpose = ", ".join(f"{name} {n}" for name, n in sorted(connections.items()))
        print(
            f"| {count} | {publishing_now} | {f['p50']:.1f} | {f['p99']:.1f} | "
            f"{f['views_s']:.2f} | {f['healthz']} in {f['healthz_ms']:.0f} ms | "
            f"{sum(connections.values())}: "
            f"{by_purpose} | {rss:.0f} | {fds} |"
        )
    return 0
