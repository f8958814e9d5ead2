"""A call on the service, for the fault tests: a customer, an agent and a coach (aiortc peers, a
tone each), and what each of them hears."""

from __future__ import annotations

import asyncio
import time

import httpx

from events.room import Role
from services.bench.participants import Participant, ToneTrack
from tests.support import token

TONES = {"cust": 500.0, "agent": 800.0, "sup-1": 1300.0}
ROLES = {"cust": Role.CUSTOMER, "agent": Role.AGENT, "sup-1": Role.SUPERVISOR}
RECEIVE_SLOTS = {Role.CUSTOMER: 1, Role.AGENT: 5, Role.SUPERVISOR: 2}
HEARD_DB, SILENT_DB = -15.0, -60.0
ROOM = "room-1"


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

    async def connect_all(self) -> None:
        for subject in TONES:
            await self.connect(subject)

    async def whisper(self) -> None:
        """The coach whispers with push-to-talk held: the agent hears them, the customer not."""
        await self.command("sup-1", "start_whisper")
        await self.command("sup-1", "press_talk")
        await self.hear({"agent": {"cust", "sup-1"}, "cust": {"agent"}})

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
