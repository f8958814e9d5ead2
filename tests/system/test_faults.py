"""Faults with real processes: the service as a child process killed with SIGKILL mid-call.

A customer, an agent and a coach (aiortc peers, a tone each) are on a call through
``earpiece serve`` running as a child process; the coach is whispering with push-to-talk held.
The service is killed with SIGKILL and started again on the same port and Redis. The seats must
be freed by the restarted worker, the clients that reconnect must be on the call again, the
coach must be silent until they ask again, the customer must never hear the coach, and the
audit must say why each presence ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as redis

from events.envelope import Envelope, utc_now
from events.room import LeaveReason, MonitorStarted, ParticipantLeft, Role
from events.store import EventStore
from projections.audit import verify_against_stream
from services.redis_server import RedisServer
from services.streams.audit_trail import AuditTrail
from tests.support import token
from tests.system.calls import ROOM, TONES, Call
from tests.system.processes import ServiceProcess

pytestmark = pytest.mark.newest_redis
log = logging.getLogger(__name__)


@pytest.fixture
async def call(served: ServiceProcess) -> AsyncIterator[Call]:
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
        call = Call(http)
        yield call
        await call.close()


async def left_for(store: EventStore, within_s: float) -> dict[str, LeaveReason]:
    """Who left, and why, once all three did."""
    async with asyncio.timeout(within_s):
        while True:
            left = {
                e.event.subject: e.event.reason
                for e in await store.read(ROOM)
                if isinstance(e.event, ParticipantLeft)
            }
            if set(left) == set(TONES):
                return left
            await asyncio.sleep(0.05)


async def test_kill_9_mid_whisper_frees_the_seats_and_the_coach_is_silent_until_asked_again(
    served: ServiceProcess, call: Call, redis_client: redis.Redis
) -> None:
    store = EventStore(redis_client)
    await call.connect_all()
    await call.whisper()

    served.kill()  # push-to-talk is still held
    killed = time.monotonic()
    served.start()
    left = await left_for(store, within_s=15)
    seats_free_s = time.monotonic() - killed

    log.info("seats free %.1f s after kill -9 (the restart included)", seats_free_s)
    assert left == dict.fromkeys(TONES, LeaveReason.WORKER_LOST)
    assert seats_free_s < 10
    for person in call.people.values():
        await person.close()
    await call.connect_all()  # the clients reconnect, with new sessions
    await call.hear({"agent": {"cust"}, "cust": {"agent"}, "sup-1": set()})  # rejoined: idle
    log.info("back on the call %.1f s after kill -9", time.monotonic() - killed)

    await call.whisper()  # the coach asks again

    audit = await call.http.get(
        f"/rooms/{ROOM}/audit", headers={"authorization": f"Bearer {call.token_of('sup-1')}"}
    )
    attendance = audit.json()["timeline"]["participants"]
    assert [(a["subject"], a.get("left_because")) for a in attendance[:3]] == [
        (subject, "worker_lost") for subject in ("cust", "agent", "sup-1")
    ]


SALES_LOBBY = token(Role.SUPERVISOR, sub="sup-9", room="*", queues=["sales"])


async def commands_under_load(
    http: httpx.AsyncClient, room_id: str, stop: asyncio.Event, acknowledged: list[str]
) -> None:
    """A coach's monitor switched on and off in ``room_id`` until ``stop``; each stored command
    is counted. Failures while Redis is away are expected: they are not acknowledged."""
    coach = token(Role.SUPERVISOR, sub="sup-1", room=room_id, queue="sales")
    agent = token(Role.AGENT, sub="agent-1", room=room_id, queue="sales")
    steps = [(agent, "join"), (coach, "join")]
    deadline = time.monotonic() + 60  # bounded, whatever happens
    step = 0
    while not stop.is_set() and time.monotonic() < deadline:
        monitor = (coach, "start_monitor" if step % 2 else "stop_monitor")
        bearer, command = steps[step] if step < len(steps) else monitor
        try:
            response = await http.post(
                f"/rooms/{room_id}/commands",
                json={"command": command},
                headers={"authorization": f"Bearer {bearer}"},
            )
        except httpx.TransportError:
            response = None
        if response is not None and response.status_code == 201:
            acknowledged.append(room_id)
        await asyncio.sleep(0.05 if response is None or response.status_code >= 500 else 0.01)
        step += 1


async def healthy_within(http: httpx.AsyncClient, within_s: float) -> float:
    start = time.monotonic()
    async with asyncio.timeout(within_s):
        while True:
            with contextlib.suppress(httpx.TransportError):
                if (await http.get("/healthz")).status_code == 200:
                    return time.monotonic() - start
            await asyncio.sleep(0.05)


async def caught_up_within(client: redis.Redis, rooms: list[str], within_s: float) -> None:
    """Until every room's audit verifies against its stream and its lobby entry is from its
    newest version: both projections have caught up by themselves."""
    store = EventStore(client)
    trail = AuditTrail(store)
    async with asyncio.timeout(within_s):
        for room_id in rooms:
            while True:
                envelopes = await store.read(room_id)
                records = await trail.records(room_id)
                lobby_version = await client.get(store.keys.lobby_version(room_id))
                verified = verify_against_stream(records, envelopes).ok
                if verified and int(lobby_version or 0) == len(envelopes):
                    break
                await asyncio.sleep(0.1)


async def test_a_10_s_redis_outage_under_load_heals_by_itself(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    # Its own Redis, killed with SIGKILL and started again on the same port and data.
    own = RedisServer(tmp_path / "redis", binary=redis_server.binary)
    own.start()
    service = ServiceProcess(own.url, tmp_path / "data")
    client = redis.Redis.from_url(own.url)
    rooms = [f"room-{n}" for n in range(8)]
    acknowledged: list[str] = []
    stop = asyncio.Event()
    try:
        service.start()
        async with httpx.AsyncClient(base_url=service.url, timeout=10) as http:
            load = [
                asyncio.create_task(commands_under_load(http, r, stop, acknowledged)) for r in rooms
            ]
            await asyncio.sleep(2)
            before_outage = len(acknowledged)
            own.kill()
            await asyncio.sleep(10)
            assert (await http.get("/healthz")).status_code == 503
            own.start()
            back_s = await healthy_within(http, within_s=15)
            log.info("/healthz 200 again %.1f s after Redis was started again", back_s)
            await asyncio.sleep(2)  # the load goes on after the outage too
            stop.set()
            await asyncio.gather(*load)
            await caught_up_within(client, rooms, within_s=30)

            assert before_outage > 0
            assert len(acknowledged) > before_outage
            assert back_s < 10
            stored = {r: len(await EventStore(client).read(r)) for r in rooms}
            assert sum(stored.values()) >= len(acknowledged)  # nothing acknowledged was lost
            lobby = await http.get("/lobby", headers={"authorization": f"Bearer {SALES_LOBBY}"})
            assert lobby.status_code == 200
    finally:
        stop.set()
        service.stop()
        await client.aclose()
        own.stop()


async def test_poison_feed_entries_are_set_aside_and_the_next_event_is_audited_at_once(
    served: ServiceProcess, redis_client: redis.Redis
) -> None:
    store = EventStore(redis_client)
    feed = store.keys.feed(0)
    ghost = Envelope(
        event_id="ghost-7",
        room_id="ghost",
        version=7,  # the room's stream has no such version
        time=utc_now(),
        actor="x",
        event=MonitorStarted(coach="sup-1"),
    )
    await redis_client.xadd(feed, {"e": b"{not json"})
    await redis_client.xadd(feed, {"e": store.codec.encode(ghost)})
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
        await asyncio.sleep(0.5)  # the groups meet both before the real event
        joined = await http.post(
            f"/rooms/{ROOM}/commands",
            json={"command": "join"},
            headers={"authorization": f"Bearer {token(Role.AGENT)}"},
        )
        assert joined.status_code == 201
        stored = time.monotonic()
        trail = AuditTrail(store)
        async with asyncio.timeout(1.0):
            while not await trail.records(ROOM):
                await asyncio.sleep(0.01)
        audited_s = time.monotonic() - stored

    set_aside = [
        fields
        for _id, fields in await redis_client.xrange(store.keys.quarantine(0))
        if fields[b"group"] == b"audit"
    ]
    assert [fields[b"e"] for fields in set_aside] == [b"{not json", store.codec.encode(ghost)]
    assert b"has no version 1" in set_aside[1][b"reason"]
    assert audited_s < 1.0
