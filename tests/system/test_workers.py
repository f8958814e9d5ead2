"""Two workers on one Redis, each a child process with its own ICE address: a room lives on one
of them at a time, under its lease, and a worker paused past the lease cannot write about the
room once the other has taken it (fencing)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as redis
from aiortc import RTCConfiguration, RTCPeerConnection
from playwright.async_api import async_playwright

from events.room import LeaveReason, ParticipantJoined, ParticipantLeft, Role
from events.room_leases import RoomLeases
from events.store import EventStore
from services.bench.participants import Participant, ToneTrack
from services.redis_server import RedisServer
from tests.support import token
from tests.system.calls import SILENT_DB, TONES, Call
from tests.system.processes import ServiceProcess
from tests.system.test_browser import HEARD_DB, hears, until
from tests.system.test_browser import Call as BrowserCall

pytestmark = pytest.mark.newest_redis

ROOM = "room-1"
METRICS = "scrape-me"
LEASE_S = 3.0


@pytest.fixture
def workers(
    redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path
) -> Iterator[list[ServiceProcess]]:
    """Started after ``redis_client`` has emptied Redis: else it would forget them."""
    started = [
        ServiceProcess(
            redis_server.url,
            tmp_path / name,
            ICE_ADDRESSES=address,
            METRICS_TOKEN=METRICS,
            LEASE_S=str(LEASE_S),
        )
        for name, address in (("a", "127.0.0.2"), ("b", "127.0.0.3"))
    ]
    for worker in started:
        worker.start()
    yield started
    for worker in started:
        if worker.process is not None and worker.process.poll() is None:
            os.kill(worker.process.pid, signal.SIGCONT)  # a paused one must hear the SIGTERM
        worker.stop()


@pytest.fixture
async def clients(workers: list[ServiceProcess]) -> AsyncIterator[list[httpx.AsyncClient]]:
    """An HTTP client of each worker, in order."""
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(httpx.AsyncClient(base_url=w.url, timeout=10))
            for w in workers
        ]


@pytest.fixture
def leases(redis_client: redis.Redis) -> RoomLeases:
    return RoomLeases(redis_client, EventStore(redis_client).keys)


async def publishing_customer(http: httpx.AsyncClient, people: list[Participant]) -> Participant:
    """The room's customer, publishing their tone through ``http``'s worker."""
    customer = Participant(http, ROOM, token(Role.CUSTOMER, sub="cust"))
    people.append(customer)
    await customer.publish(ToneTrack(500))
    return customer


@pytest.fixture
async def people() -> AsyncIterator[list[Participant]]:
    made: list[Participant] = []
    yield made
    await asyncio.gather(*(person.close() for person in made))


async def metric(http: httpx.AsyncClient, name: str) -> float:
    text = (await http.get("/metrics", headers={"authorization": f"Bearer {METRICS}"})).text
    values = [line.split()[-1] for line in text.splitlines() if line.startswith(f"{name} ")]
    return float(values[0]) if values else 0.0


async def stale_receive(http: httpx.AsyncClient) -> httpx.Response:
    """The agent's WHEP offer, sent to ``http``'s worker."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    headers = {
        "authorization": f"Bearer {token(Role.AGENT, sub='agent')}",
        "content-type": "application/sdp",
    }
    try:
        return await http.post(
            f"/rooms/{ROOM}/whep", content=pc.localDescription.sdp, headers=headers
        )
    finally:
        await pc.close()


def answer_addresses(answer: str) -> set[str]:
    return {line.split()[4] for line in answer.splitlines() if line.startswith("a=candidate:")}


async def test_a_worker_paused_past_its_lease_cannot_write_once_another_took_the_room(
    workers: list[ServiceProcess],
    clients: list[httpx.AsyncClient],
    leases: RoomLeases,
    redis_client: redis.Redis,
    people: list[Participant],
) -> None:
    (a, b), (on_a, on_b) = workers, clients
    store = EventStore(redis_client)
    customer = await publishing_customer(on_a, people)
    first = await leases.owner(ROOM)
    assert first is not None
    assert first.epoch == 1

    assert a.process is not None
    os.kill(a.process.pid, signal.SIGSTOP)
    await asyncio.sleep(LEASE_S + 2)  # a's room and worker leases lapse; b sweeps a
    agent = Participant(on_b, ROOM, token(Role.AGENT, sub="agent"))
    people.append(agent)
    await agent.publish(ToneTrack(800))
    taken = await leases.owner(ROOM)
    assert taken is not None
    assert taken.epoch == 2
    assert taken.worker != first.worker
    took_over = await store.version(ROOM)

    # A request that reached a while it was paused runs as soon as it resumes, before a
    # has renewed anything: a still hosts the room in its own eyes, and writes under epoch 1.
    stale = asyncio.create_task(stale_receive(on_a))
    await asyncio.sleep(0.5)
    os.kill(a.process.pid, signal.SIGCONT)
    refused = await stale
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:  # a notices that it lost the room
        if await metric(on_a, "earpiece_rooms_lost_total"):
            break
        await asyncio.sleep(0.2)

    after = await store.read(ROOM, after_version=took_over)
    assert all(envelope.epoch in (None, 2) for envelope in after), after
    assert (refused.status_code, refused.json()["error"]) == (503, "unavailable")
    assert "another worker owns it now" in refused.json()["detail"]
    assert await metric(on_a, "earpiece_fenced_writes_total") >= 1
    assert await metric(on_a, "earpiece_rooms_lost_total") == 1
    assert customer.publisher is not None
    assert agent.publisher is not None  # media goes to each owner's own address
    assert answer_addresses(customer.publisher.remoteDescription.sdp) == {"127.0.0.2"}
    assert answer_addresses(agent.publisher.remoteDescription.sdp) == {"127.0.0.3"}
    assert await leases.owner(ROOM) == taken
    events = [envelope.event for envelope in await store.read(ROOM)]
    assert ParticipantLeft(subject="cust", reason=LeaveReason.WORKER_LOST) in events
    joined_on_b = [e for e in events if isinstance(e, ParticipantJoined) and e.subject == "agent"]
    assert [e.worker for e in joined_on_b] == [taken.worker]
    assert "Traceback" not in a.log_path.read_text()
    assert "Traceback" not in b.log_path.read_text()


async def test_any_worker_answers_whip_and_whep_for_a_room_hosted_by_another(
    clients: list[httpx.AsyncClient], leases: RoomLeases, people: list[Participant]
) -> None:
    on_a, on_b = clients
    customer = await publishing_customer(on_a, people)
    host = await leases.owner(ROOM)
    assert host is not None
    agent = Participant(on_b, ROOM, token(Role.AGENT, sub="agent"))  # through the other
    people.append(agent)
    await agent.publish(ToneTrack(800))
    await agent.receive(5)

    assert customer.publisher is not None
    assert agent.publisher is not None
    assert agent.listener is not None
    host_address = answer_addresses(customer.publisher.remoteDescription.sdp)
    assert answer_addresses(agent.publisher.remoteDescription.sdp) == host_address
    assert answer_addresses(agent.listener.remoteDescription.sdp) == host_address
    assert await leases.owner(ROOM) == host
    async with asyncio.timeout(10):  # the agent hears the customer, through the host
        while agent.hears_db(500, since=0) < -15:
            await asyncio.sleep(0.2)
    hosted = [await metric(http, "earpiece_rooms") for http in (on_a, on_b)]
    assert hosted == [1, 0]
    assert await metric(on_a, "earpiece_forwarded_packets_total") > 0
    for location in agent.locations:  # hung up through the worker it was set up through
        assert (await on_b.delete(location, headers=agent.headers)).status_code == 200
    agent.locations.clear()

    await asyncio.sleep(1.5)  # a reports its room in its lease
    elsewhere = Participant(on_a, "room-2", token(Role.CUSTOMER, sub="c2", room="room-2"))
    people.append(elsewhere)
    await elsewhere.publish(ToneTrack(600))
    placed = await leases.owner("room-2")

    assert placed is not None
    assert placed.worker != host.worker  # the least loaded worker took the new room


async def reconnect(call: Call, subject: str, within_s: float) -> None:
    """``subject``'s client back on the call, trying again while the room has no host (503)."""
    person = call.people[subject]
    deadline = time.monotonic() + within_s
    while True:
        await person.close()
        try:
            await call.connect(subject)
            return
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != 503 or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.5)


async def test_kill_9_of_the_host_moves_the_call_to_the_other_worker_and_fails_closed(
    workers: list[ServiceProcess],
    clients: list[httpx.AsyncClient],
    leases: RoomLeases,
    redis_client: redis.Redis,
) -> None:
    a, (on_a, on_b) = workers[0], clients
    store = EventStore(redis_client)
    call = Call(on_a)
    try:
        await call.connect_all()
        await call.whisper()
        first = await leases.owner(ROOM)

        a.kill()  # push-to-talk still held; the clients come back through b
        killed = time.monotonic()
        call.http = on_b
        for person in call.people.values():
            person.http = on_b
        for subject in TONES:
            await reconnect(call, subject, within_s=20)
        await call.hear({"agent": {"cust"}, "cust": {"agent"}, "sup-1": set()})
        back_s = time.monotonic() - killed
        taken = await leases.owner(ROOM)

        await call.whisper()  # the coach asks again
        envelopes = await store.read(ROOM)  # before the hang-ups add theirs
    finally:
        await call.close()

    print(f"back on the call {back_s:.1f} s after kill -9 of the host")
    assert first is not None
    assert taken is not None
    assert (taken.epoch, taken.worker != first.worker) == (first.epoch + 1, True)
    assert back_s < 15
    assert call.people["cust"].hears_db(TONES["sup-1"], since=0) < SILENT_DB  # at no moment
    assert [e.version for e in envelopes] == list(range(1, len(envelopes) + 1))
    left = [e.event for e in envelopes if isinstance(e.event, ParticipantLeft)]
    assert sorted(event.subject for event in left) == sorted(TONES)  # each once, no double
    assert {event.reason for event in left} == {LeaveReason.WORKER_LOST}
    joins = [e.event for e in envelopes if isinstance(e.event, ParticipantJoined)]
    assert [(j.subject, j.worker) for j in joins] == [
        *((subject, first.worker) for subject in TONES),
        *((subject, taken.worker) for subject in TONES),
    ]


async def test_a_worker_that_stops_gives_its_rooms_up_at_once(
    workers: list[ServiceProcess],
    clients: list[httpx.AsyncClient],
    leases: RoomLeases,
    people: list[Participant],
) -> None:
    await publishing_customer(clients[0], people)
    assert await leases.owner(ROOM) is not None

    workers[0].stop()  # SIGTERM: a drains

    assert await leases.owner(ROOM) is None  # released, not left to lapse


async def test_a_chromium_page_on_the_worker_that_does_not_host_the_room_joins_the_call(
    clients: list[httpx.AsyncClient],
    leases: RoomLeases,
    people: list[Participant],
    tmp_path: Path,
) -> None:
    on_a, on_b = clients
    async with async_playwright() as playwright:
        await publishing_customer(on_a, people)
        host = await leases.owner(ROOM)
        pages = BrowserCall(on_b, playwright, tmp_path)  # the agent's page is served by b
        try:
            agent = await pages.open("agent")
            await agent.page.get_by_role("button", name="Join the call").click()
            heard = await until(lambda: hears(agent, 500), lambda h: h[500] >= HEARD_DB)
        finally:
            await pages.close()

    assert heard[500] >= HEARD_DB  # the customer's tone, forwarded by the host
    assert await leases.owner(ROOM) == host  # the room stayed where it was
    assert host is not None
