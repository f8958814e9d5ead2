"""``earpiece bench audit``: the audit projection's events/s against the service's command rate.

Both on the same fresh local redis-server (``appendfsync always``), in one run:

* commands: the whole service in a child process (``create_app`` under uvicorn: HTTP, decide,
  append; its own projections running beside it), driven by concurrent HTTP clients that
  switch coaches' monitors on and off across many rooms for a few seconds: stored commands/s;
* audit: a backlog of events across the same number of rooms, written straight to the store,
  then one member of the audit group (this process, alone) chaining them: events recorded/s,
  until every room's chain reaches its stream's head.

The ratio is the audit's headroom: how many times the command rate it keeps up with.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import tempfile
import time
from pathlib import Path

import httpx
import redis.asyncio as redis

from events.room import Role
from events.store import EventStore
from services.auth import mint_token
from services.bench.media_servers import ServerProcess
from services.bench.workload import COACH, talk_event
from services.redis_server import RedisServer
from services.streams.audit_trail import AuditTrail, run_audit_projection


def coach_token(secret: str, room_id: str) -> str:
    return mint_token(
        secret,
        subject="sup-1",
        name="Sam",
        room=room_id,
        role=Role.SUPERVISOR,
        whisper=True,
        audience="earpiece",
        issuer="earpiece",
    )


async def command_rate(url: str, secret: str, rooms: int, seconds: float) -> float:
    """Commands stored per second by the service at ``url``, from one client per room."""
    stored = 0
    deadline = time.perf_counter() + seconds

    async def client(http: httpx.AsyncClient, room_id: str) -> None:
        nonlocal stored
        headers = {"authorization": f"Bearer {coach_token(secret, room_id)}"}
        path = f"/rooms/{room_id}/commands"
        await http.post(path, json={"command": "join"}, headers=headers)
        n = 0
        while time.perf_counter() < deadline:
            command = "start_monitor" if n % 2 == 0 else "stop_monitor"
            response = await http.post(path, json={"command": command}, headers=headers)
            stored += response.status_code == 201
            n += 1

    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http, f"cmd-{n}") for n in range(rooms)))
        return stored / (time.perf_counter() - started)


async def audit_rate(client: redis.Redis, rooms: int, events_per_room: int) -> float:
    """Events the audit group records per second from a backlog of ``rooms`` rooms."""
    store = EventStore(client)
    names = [f"audit-{n}" for n in range(rooms)]
    for room_id in names:
        await store.append(room_id, [COACH], expected_version=0, actor="sup-1")
        for first in range(2, events_per_room + 1, 50):
            batch = [talk_event(v) for v in range(first, min(first + 50, events_per_room + 1))]
            await store.append(room_id, batch, expected_version=first - 1, actor="sup-1")
    trail = AuditTrail(store)
    started = time.perf_counter()
    group = asyncio.create_task(run_audit_projection(client, store, consumer="bench"))
    try:
        async with asyncio.timeout(300):  # bounded: a projection that stalls fails the bench
            for room_id in names:
                # Polling Redis, which no event of this process can announce.
                while not await caught_up(trail, room_id, events_per_room):  # noqa: ASYNC110
                    await asyncio.sleep(0.005)
        return rooms * events_per_room / (time.perf_counter() - started)
    finally:
        group.cancel()
        await asyncio.gather(group, return_exceptions=True)


async def caught_up(trail: AuditTrail, room_id: str, version: int) -> bool:
    last = await trail.last_record(room_id)
    return last is not None and last.version >= version


async def run_audit_bench(rooms: int, seconds: float, events_per_room: int) -> int:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis")
        server.start()
        client = redis.Redis.from_url(server.url)
        secret = secrets.token_urlsafe(32)
        try:
            # The service's capacity is measured, not its rate limits: lift them.
            unlimited = {"EARPIECE_COMMANDS_PER_S": "1e9", "EARPIECE_ROOM_COMMANDS_PER_S": "1e9"}
            async with ServerProcess(
                "earpiece", server.url, secret, Path(tmp), unlimited
            ) as service:
                commands = await command_rate(service.url, secret, rooms, seconds)
            audited = await audit_rate(client, rooms, events_per_room)
        finally:
            await client.aclose()
            server.stop()
    print(f"redis-server {server.binary}, appendfsync always; {rooms} rooms")
    print("| what | per second | ratio to commands |")
    print("|---|---|---|")
    print(f"| commands stored by the service (HTTP, one core) | {commands:,.0f} | 1.00 |")
    print(f"| events recorded by one audit member | {audited:,.0f} | {audited / commands:.1f} |")
    return 0
