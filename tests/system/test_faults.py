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
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as redis

from events.room import LeaveReason, ParticipantLeft, Role
from events.store import EventStore
from services.bench.participants import Participant, ToneTrack
from services.redis_server import RedisServer, free_loopback_port
from tests.support import SECRET, token

pytestmark = pytest.mark.newest_redis

TONES = {"cust": 500.0, "agent": 800.0, "sup-1": 1300.0}
ROLES = {"cust": Role.CUSTOMER, "agent": Role.AGENT, "sup-1": Role.SUPERVISOR}
RECEIVE_SLOTS = {Role.CUSTOMER: 1, Role.AGENT: 5, Role.SUPERVISOR: 2}
HEARD_DB, SILENT_DB = -15.0, -60.0
ROOM = "room-1"


class ServiceProcess:
    """``earpiece serve`` as a child process on a fixed port; ended only by its PID."""

    def __init__(self, redis_url: str, data_dir: Path) -> None:
        self.port = free_loopback_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "EARPIECE_PORT": str(self.port),
            "EARPIECE_JWT_SECRET": SECRET,
            "EARPIECE_DATA_DIR": str(data_dir),
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "serve"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert self.process.poll() is None, "earpiece serve exited on start"
            time.sleep(0.05)
        raise AssertionError("earpiece serve did not answer /healthz within 30 s")

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@pytest.fixture
def service(
    redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path
) -> Iterator[ServiceProcess]:
    # After redis_client, which empties the test's Redis: the service's lease must survive.
    service = ServiceProcess(redis_server.url, tmp_path)
    service.start()
    yield service
    service.stop()


class Call:
    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.people: dict[str, Participant] = {}

    @staticmethod
    def token_of(subject: str) -> str:
        return token(ROLES[subject], sub=subject, whisper=subject == "sup-1")

    async def connect(self, subject: str) -> None:
        person = self.people.get(subject) or Participant(self.http, ROOM, self.token_of(subject))
        self.people[subject] = person
        await person.publish(ToneTrack(TONES[subject]))
        await person.receive(RECEIVE_SLOTS[ROLES[subject]])

    async def command(self, subject: str, command: str) -> None:
        response = await self.http.post(
            f"/rooms/{ROOM}/commands",
            json={"command": command},
            headers={"authorization": f"Bearer {self.token_of(subject)}"},
        )
        assert response.status_code in (200, 201), response.text

    async def hear(self, expected: dict[str, set[str]], within_s: float = 15) -> None:
        """Listen in 1 s windows until the listeners hear ``expected``; in every window the
        customer hears the coach not at all."""
        deadline = time.monotonic() + within_s
        while True:
            start = time.monotonic()
            await asyncio.sleep(1.0)
            heard = {
                listener: {
                    speaker
                    for speaker, hz in TONES.items()
                    if person.hears_db(hz, start) >= HEARD_DB
                }
                for listener, person in self.people.items()
            }
            assert self.people["cust"].hears_db(TONES["sup-1"], start) < SILENT_DB
            if all(heard[listener] == speakers for listener, speakers in expected.items()):
                return
            assert time.monotonic() < deadline, f"expected {expected}, heard {heard}"

    async def close(self) -> None:
        await asyncio.gather(*(person.close() for person in self.people.values()))


@pytest.fixture
async def call(service: ServiceProcess) -> AsyncIterator[Call]:
    async with httpx.AsyncClient(base_url=service.url, timeout=10) as http:
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
    service: ServiceProcess, call: Call, redis_client: redis.Redis
) -> None:
    store = EventStore(redis_client)
    for subject in ("cust", "agent", "sup-1"):
        await call.connect(subject)
    await call.command("sup-1", "start_whisper")
    await call.command("sup-1", "press_talk")
    await call.hear({"agent": {"cust", "sup-1"}, "cust": {"agent"}})

    service.kill()  # push-to-talk is still held
    killed = time.monotonic()
    service.start()
    left = await left_for(store, within_s=15)
    seats_free_s = time.monotonic() - killed

    assert left == dict.fromkeys(TONES, LeaveReason.WORKER_LOST)
    assert seats_free_s < 10
    for person in call.people.values():
        await person.close()
    for subject in ("cust", "agent", "sup-1"):  # the clients reconnect, with new sessions
        await call.connect(subject)
    await call.hear({"agent": {"cust"}, "cust": {"agent"}, "sup-1": set()})  # rejoined: idle

    await call.command("sup-1", "start_whisper")  # the coach asks again
    await call.command("sup-1", "press_talk")
    await call.hear({"agent": {"cust", "sup-1"}, "cust": {"agent"}})

    audit = await call.http.get(
        f"/rooms/{ROOM}/audit", headers={"authorization": f"Bearer {call.token_of('sup-1')}"}
    )
    attendance = audit.json()["timeline"]["participants"]
    assert [(a["subject"], a.get("left_because")) for a in attendance[:3]] == [
        (subject, "worker_lost") for subject in ("cust", "agent", "sup-1")
    ]
