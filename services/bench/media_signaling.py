"""Who takes part in a benched call, and how they reach each server under test.

A ``Person`` publishes one track and receives others; ``ServerSignaling`` connects them, through
Earpiece's WHIP/WHEP and commands (``EarpieceSignaling``) or the relay baseline's fixed routes
(``RelaySignaling``); a ``Room`` is the call that the capacity and soak phases open by the dozen.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

import httpx
from aiortc import RTCPeerConnection, RTCSessionDescription

from events.room import Role
from services.auth import mint_token
from services.bench.media_clients import (
    CannedOpus,
    PacketTrack,
    SendLog,
    Stream,
    connected,
    peer_connection,
    time_receives,
    time_sends,
    until,
)
from services.bench.media_servers import ServerKind


class Person:
    def __init__(self, subject: str, role: Role, canned: CannedOpus) -> None:
        self.subject = subject
        self.role = role
        self.track = PacketTrack(canned)
        self.sends = SendLog(len(canned.payloads))
        self.publisher: RTCPeerConnection | None = None
        self.listener: RTCPeerConnection | None = None
        self.streams: list[Stream] = []
        self.locations: list[str] = []

    async def close(self) -> None:
        self.track.stop()
        for pc in (self.publisher, self.listener):
            if pc is not None:
                await pc.close()


class ServerSignaling(Protocol):
    kind: ServerKind

    async def publish(self, room: str, person: Person) -> None: ...

    async def receive(
        self, room: str, person: Person, sources: Sequence[Person | None]
    ) -> list[Stream]: ...

    async def command(self, room: str, person: Person, command: str, **fields: object) -> None: ...

    async def hang_up(self, room: str, person: Person) -> None: ...


async def offer_to(
    http: httpx.AsyncClient, url: str, pc: RTCPeerConnection, headers: dict[str, str]
) -> str:
    await pc.setLocalDescription(await pc.createOffer())
    response = await http.post(
        url, content=pc.localDescription.sdp, headers={**headers, "content-type": "application/sdp"}
    )
    response.raise_for_status()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=response.text, type="answer"))
    return str(response.headers.get("location", ""))


async def publish_with(
    http: httpx.AsyncClient, url: str, person: Person, headers: dict[str, str]
) -> None:
    person.publisher = pc = peer_connection()
    pc.addTransceiver(person.track, direction="sendonly")
    person.locations.append(await offer_to(http, url, pc, headers))
    time_sends(pc, person.sends)


async def receive_with(
    http: httpx.AsyncClient,
    url: str,
    person: Person,
    sources: Sequence[Person | None],
    headers: dict[str, str],
    canned: CannedOpus,
) -> list[Stream]:
    person.listener = pc = peer_connection()
    for _ in sources:
        pc.addTransceiver("audio", direction="recvonly")
    person.locations.append(await offer_to(http, url, pc, headers))
    person.streams = [Stream(canned, None if s is None else s.sends) for s in sources]
    time_receives(pc, person.streams)
    return person.streams


class EarpieceSignaling:
    """WHIP/WHEP and commands of the real service, with development tokens."""

    kind: ServerKind = "earpiece"
    coach_slots = 4

    def __init__(self, http: httpx.AsyncClient, secret: str, canned: CannedOpus) -> None:
        self.http = http
        self.secret = secret
        self.canned = canned

    def headers(self, room: str, person: Person) -> dict[str, str]:
        token = mint_token(
            self.secret,
            subject=person.subject,
            name=person.subject,
            room=room,
            role=person.role,
            whisper=person.role is Role.SUPERVISOR,
            audience="earpiece",
            issuer="earpiece",
        )
        return {"authorization": f"Bearer {token}"}

    async def publish(self, room: str, person: Person) -> None:
        await publish_with(self.http, f"/rooms/{room}/whip", person, self.headers(room, person))

    async def receive(
        self, room: str, person: Person, sources: Sequence[Person | None]
    ) -> list[Stream]:
        # The offer opens every slot of the role; ``sources`` says who feeds the first ones.
        slots = {Role.CUSTOMER: 1, Role.AGENT: 1 + self.coach_slots, Role.SUPERVISOR: 2}
        padded = [*sources, *[None] * (slots[person.role] - len(sources))]
        url = f"/rooms/{room}/whep"
        headers = self.headers(room, person)
        return await receive_with(self.http, url, person, padded, headers, self.canned)

    async def command(self, room: str, person: Person, command: str, **fields: object) -> None:
        response = await self.http.post(
            f"/rooms/{room}/commands",
            json={"command": command, **fields},
            headers=self.headers(room, person),
        )
        if response.status_code not in (200, 201):
            raise RuntimeError(f"{command} by {person.subject}: {response.text}")

    async def hang_up(self, room: str, person: Person) -> None:
        headers = self.headers(room, person)
        for location in person.locations:
            await self.http.delete(location, headers=headers)
        person.locations.clear()
        await person.close()


class RelaySignaling:
    """The baseline's signaling: routes are fixed by the receiver's ``from`` list."""

    kind: ServerKind = "relay"

    def __init__(self, http: httpx.AsyncClient, canned: CannedOpus) -> None:
        self.http = http
        self.canned = canned

    async def publish(self, room: str, person: Person) -> None:
        await publish_with(self.http, f"/relay/{room}/publish/{person.subject}", person, {})

    async def receive(
        self, room: str, person: Person, sources: Sequence[Person | None]
    ) -> list[Stream]:
        names = ",".join(s.subject for s in sources if s is not None)
        url = f"/relay/{room}/receive/{person.subject}?from={names}"
        return await receive_with(self.http, url, person, sources, {}, self.canned)

    async def command(self, room: str, person: Person, command: str, **fields: object) -> None:
        return None  # the relay's routes never change

    async def hang_up(self, room: str, person: Person) -> None:
        await person.close()


class Room:
    """A call: a customer and an agent talking, one coach whispering open-mic (and hearing
    both). Five forwarded streams: customer ⇄ agent, coach → agent, customer/agent → coach."""

    def __init__(self, signaling: ServerSignaling, room_id: str, canned: CannedOpus) -> None:
        self.signaling = signaling
        self.room_id = room_id
        self.customer = Person("cust", Role.CUSTOMER, canned)
        self.agent = Person("agent", Role.AGENT, canned)
        self.coach = Person("sup-1", Role.SUPERVISOR, canned)
        self.people = (self.customer, self.agent, self.coach)

    async def open(self, settle_s: float = 0.5) -> None:
        s, room = self.signaling, self.room_id
        for person in self.people:
            await s.publish(room, person)
        await s.receive(room, self.customer, [self.agent])
        await s.receive(room, self.agent, [self.customer, self.coach])
        await s.receive(room, self.coach, [self.customer, self.agent])
        await s.command(room, self.coach, "set_coach_mode", mode="open_mic")
        await s.command(room, self.coach, "start_whisper")
        pcs = [pc for p in self.people for pc in (p.publisher, p.listener)]
        await until(connected(*pcs), 15, f"room {room} to connect")
        # The servers' senders start pulling from their tracks once connected: let them, so
        # that the first packet every receiver sees is the first one sent.
        await asyncio.sleep(settle_s)
        for person in self.people:
            person.track.gate.set()

    @property
    def streams(self) -> list[Stream]:
        return [s for p in self.people for s in p.streams if s.source is not None]

    async def close(self) -> None:
        for person in self.people:
            await self.signaling.hang_up(self.room_id, person)
