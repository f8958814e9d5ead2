"""Whisper separation proven on audio: real peer connections, distinct tones, spectra.

A customer, an agent and two supervisors each publish a tone of their own through WHIP and
listen through WHEP. Every phase of a call changes the room through commands, waits for the
media plane to apply the routes, and then measures, from the audio each listener actually
decoded, which tones reached whom. The customer must hear the agent, and nothing at either
supervisor's frequency, in every phase.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio as redis
from aiortc.rtp import RtpPacket

from events.room import Role
from projections.routes import AudioRoute
from services.bench.participants import Participant, ToneTrack
from services.media import route_reconciler
from services.media.plane import MediaPlane
from services.redis_server import RedisServer
from tests.services.media.guards import let_a_supervisor_fill_any_slot, stub_out_refusal
from tests.support import running_service, token

TONES = {"cust": 500.0, "agent": 800.0, "sup-1": 1300.0, "sup-2": 1900.0}
ROLES = {
    "cust": Role.CUSTOMER,
    "agent": Role.AGENT,
    "sup-1": Role.SUPERVISOR,
    "sup-2": Role.SUPERVISOR,
}
HEARD_DB = -15.0
"""A tone holding at least this share of a track's energy was heard (measured: 0 dB)."""
SILENT_DB = -60.0
"""A tone under this share was not: leakage and codec noise alone (measured: -86 to -111 dB)."""


class Call:
    def __init__(self, http: httpx.AsyncClient, media: MediaPlane) -> None:
        self.http = http
        self.media = media
        self.people: dict[str, Participant] = {}

    def tokens(self, subject: str) -> str:
        return token(ROLES[subject], sub=subject, whisper=subject.startswith("sup"))

    async def join(self, subject: str) -> Participant:
        person = Participant(self.http, "room-1", self.tokens(subject))
        await person.publish(ToneTrack(TONES[subject]))
        await person.receive(self.media.receive_slots(ROLES[subject]))
        self.people[subject] = person
        return person

    async def command(self, subject: str, command: str, **fields: object) -> None:
        response = await self.http.post(
            "/rooms/room-1/commands",
            json={"command": command, **fields},
            headers={"authorization": f"Bearer {self.tokens(subject)}"},
        )
        assert response.status_code in (200, 201), response.text

    async def routes_become(self, *routes: tuple[str, str]) -> None:
        expected = {AudioRoute(producer=p, consumer=c) for p, c in routes}
        async with asyncio.timeout(10):
            while (room := self.media.rooms.get("room-1")) is None or (
                room.router.connections() != expected
            ):
                await asyncio.sleep(0.01)

    async def hear(self, expected: dict[str, set[str]]) -> dict[str, dict[str, float]]:
        """What each listener heard of each tone (dB), once the listeners hear ``expected``.

        The customer is always expected to hear the agent alone. Listens in 1 s windows for up
        to 10 s, since audio takes a moment to start on a new route and to drain from a removed
        one; in every window, settled or not, the customer hears nothing of either supervisor.
        """
        expected = {"cust": {"agent"}, **expected}
        deadline = time.monotonic() + 10
        while True:
            start = time.monotonic()
            await asyncio.sleep(1.0)
            phase = {
                listener: {speaker: person.hears_db(hz, start) for speaker, hz in TONES.items()}
                for listener, person in self.people.items()
            }
            customer = phase["cust"]
            assert max(customer["sup-1"], customer["sup-2"]) < SILENT_DB, customer
            unsettled = {
                listener: phase[listener]
                for listener, speakers in expected.items()
                if heard(phase[listener]) != speakers
            }
            if not unsettled:
                return phase
            assert time.monotonic() < deadline, f"expected {expected}, heard {unsettled}"


class Payloads:
    """The Opus payloads each client sent and received, from when it was tapped on.

    The server forwards payloads byte-identical and only writes RTP headers of its own (its
    SSRCs, sequence numbers, timestamps), so a supervisor's payload found on the customer's
    connection is that supervisor's voice, under whatever SSRC it came.
    """

    def __init__(self, patch: pytest.MonkeyPatch) -> None:
        self.patch = patch
        self.sent: defaultdict[str, set[bytes]] = defaultdict(set)
        self.received: defaultdict[str, set[bytes]] = defaultdict(set)

    def tap(self, subject: str, person: Participant) -> None:
        assert person.publisher is not None
        assert person.listener is not None
        for sender in person.publisher.getSenders():
            self._tap_sender(sender, self.sent[subject])
        for receiver in person.listener.getReceivers():
            self._tap_receiver(receiver, self.received[subject])

    def _tap_sender(self, sender: Any, sent: set[bytes]) -> None:
        next_encoded_frame = sender._next_encoded_frame  # looked up anew for every frame

        async def recording(codec: Any) -> Any:
            frame = await next_encoded_frame(codec)
            if frame is not None:
                sent.update(frame.payloads)
            return frame

        self.patch.setattr(sender, "_next_encoded_frame", recording)

    def _tap_receiver(self, receiver: Any, received: set[bytes]) -> None:
        handle_rtp_packet = receiver._handle_rtp_packet  # looked up anew for every packet

        async def recording(packet: RtpPacket, arrival_time_ms: int) -> None:
            if packet.payload:
                received.add(packet.payload)
            await handle_rtp_packet(packet, arrival_time_ms=arrival_time_ms)

        self.patch.setattr(receiver, "_handle_rtp_packet", recording)


def assert_customer_received_nothing_a_supervisor_sent(payloads: Payloads) -> None:
    from_supervisors = payloads.sent["sup-1"] | payloads.sent["sup-2"]
    leaked = payloads.received["cust"] & from_supervisors
    assert not leaked, f"the customer received {len(leaked)} payloads a supervisor sent"


def heard(levels: dict[str, float]) -> set[str] | None:
    """The speakers heard, or None while some tone is neither clearly heard nor silent."""
    if any(SILENT_DB <= db < HEARD_DB for db in levels.values()):
        return None
    return {speaker for speaker, db in levels.items() if db >= HEARD_DB}


pytestmark = pytest.mark.newest_redis

CALL = [("agent", "cust"), ("cust", "agent")]
MONITORED_BY_1 = [("cust", "sup-1"), ("agent", "sup-1")]
MONITORED_BY_2 = [("cust", "sup-2"), ("agent", "sup-2")]


@pytest.fixture
async def call(redis_server: RedisServer, redis_client: redis.Redis) -> AsyncIterator[Call]:
    async with running_service(redis_server.url, redis_client) as running:
        call = Call(running.http, running.app.state.media)
        yield call
        await asyncio.gather(*(person.close() for person in call.people.values()))


async def test_customer_never_hears_a_supervisor_in_any_phase_of_a_call(call: Call) -> None:
    call_started = time.monotonic()
    for subject in ("cust", "agent", "sup-1", "sup-2"):
        await call.join(subject)

    await call.routes_become(*CALL)
    await call.hear({"agent": {"cust"}, "sup-1": set()})

    await call.command("sup-1", "start_monitor")
    await call.routes_become(*CALL, *MONITORED_BY_1)
    await call.hear({"agent": {"cust"}, "sup-1": {"cust", "agent"}})

    await call.command("sup-1", "set_coach_mode", mode="open_mic")
    await call.command("sup-1", "start_whisper")
    await call.routes_become(*CALL, *MONITORED_BY_1, ("sup-1", "agent"))
    await call.hear({"agent": {"cust", "sup-1"}, "sup-1": {"cust", "agent"}})

    await call.command("sup-1", "set_coach_mode", mode="push_to_talk")
    await call.routes_become(*CALL, *MONITORED_BY_1)
    await call.hear({"agent": {"cust"}})
    await call.command("sup-1", "press_talk")
    await call.routes_become(*CALL, *MONITORED_BY_1, ("sup-1", "agent"))
    await call.hear({"agent": {"cust", "sup-1"}})
    await call.command("sup-1", "release_talk")
    await call.routes_become(*CALL, *MONITORED_BY_1)
    await call.hear({"agent": {"cust"}})

    await call.command("sup-1", "set_coach_mode", mode="open_mic")
    await call.command("sup-1", "mute_coach")
    await call.routes_become(*CALL, *MONITORED_BY_1)
    await call.hear({"agent": {"cust"}})
    await call.command("sup-1", "unmute_coach")

    await call.command("sup-2", "set_coach_mode", mode="open_mic")
    await call.command("sup-2", "start_whisper")
    two_coaches = [*CALL, *MONITORED_BY_1, *MONITORED_BY_2, ("sup-1", "agent"), ("sup-2", "agent")]
    await call.routes_become(*two_coaches)
    await call.hear({"agent": {"cust", "sup-1", "sup-2"}, "sup-2": {"cust", "agent"}})

    await call.people.pop("sup-1").hang_up()
    await call.routes_become(*CALL, *MONITORED_BY_2, ("sup-2", "agent"))
    await call.hear({"agent": {"cust", "sup-2"}})

    await call.join("sup-1")  # rejoins: a fresh coach, push-to-talk, not monitoring
    await call.command("sup-1", "set_coach_mode", mode="open_mic")
    await call.command("sup-1", "start_whisper")
    await call.routes_become(*two_coaches)
    await call.hear({"agent": {"cust", "sup-1", "sup-2"}})

    # Between the phases too, while commands took effect: the whole call as the customer
    # decoded it, second by second.
    customer = call.people["cust"]
    windows = [call_started + second for second in range(int(time.monotonic() - call_started))]
    heard_agent = [t for t in windows if customer.hears_db(TONES["agent"], t, t + 1) >= HEARD_DB]
    leaks = {
        (round(t - call_started), speaker): db
        for t in windows
        for speaker in ("sup-1", "sup-2")
        if (db := customer.hears_db(TONES[speaker], t, t + 1)) >= SILENT_DB
    }
    assert len(heard_agent) >= len(windows) - 2 >= 5  # all but the joining
    assert not leaks

    # The audit shows what the media plane did: coaches reached the agent, never the customer.
    await call.media.rooms["room-1"].route_log.flush()
    audit = await call.http.get(
        "/rooms/room-1/audit", headers={"authorization": f"Bearer {call.tokens('sup-2')}"}
    )
    changes = {(c["op"], c["producer"], c["consumer"]) for c in audit.json()["routes"]}
    assert {("applied", "sup-1", "agent"), ("removed", "sup-1", "agent")} <= changes
    assert not {c for c in changes if c[1].startswith("sup") and c[2] == "cust"}


async def test_customer_connection_carries_nothing_from_a_supervisor(
    call: Call, monkeypatch: pytest.MonkeyPatch
) -> None:
    payloads = Payloads(monkeypatch)
    for subject in ("cust", "agent", "sup-1", "sup-2"):
        payloads.tap(subject, await call.join(subject))
    await call.command("sup-1", "set_coach_mode", mode="open_mic")
    await call.command("sup-1", "start_whisper")
    await call.routes_become(*CALL, *MONITORED_BY_1, ("sup-1", "agent"))
    await call.hear({"agent": {"cust", "sup-1"}})

    customer = call.people["cust"].listener
    assert customer is not None
    assert customer.remoteDescription is not None
    answer = customer.remoteDescription.sdp
    received = {
        source.source for r in customer.getReceivers() for source in r.getSynchronizationSources()
    }
    [server_session] = [
        s
        for s in call.media.rooms["room-1"].sessions.values()
        if (s.actor.subject, s.direction) == ("cust", "receive")
    ]

    assert answer.count("m=audio") == 1
    assert len(customer.getTransceivers()) == 1
    assert received == {sender._ssrc for sender in server_session.pc.getSenders()}
    # What makes the payload check able to fail: routed payloads arrive as they were sent.
    assert payloads.received["cust"] & payloads.sent["agent"]
    assert payloads.received["agent"] & payloads.sent["sup-1"]
    assert_customer_received_nothing_a_supervisor_sent(payloads)
    assert "sup-" not in answer
    assert "Sup-" not in answer


async def test_payload_check_fails_once_a_supervisor_is_routed_to_the_customer(
    call: Call, monkeypatch: pytest.MonkeyPatch
) -> None:
    # All three guards removed: the decider asks for sup-1 → cust (patched where the reconciler
    # looks ``routes`` up), the router does not refuse it, and sup-1 takes the customer's slot
    # (free: no agent in this call).
    decided = route_reconciler.routes
    leak = AudioRoute(producer="sup-1", consumer="cust")
    monkeypatch.setattr(route_reconciler, "routes", lambda state: decided(state) | {leak})
    stub_out_refusal(monkeypatch)
    let_a_supervisor_fill_any_slot(monkeypatch)
    payloads = Payloads(monkeypatch)
    for subject in ("cust", "sup-1"):
        payloads.tap(subject, await call.join(subject))

    await call.routes_become(("sup-1", "cust"))
    async with asyncio.timeout(10):
        while len(payloads.received["cust"]) < 10:  # a fifth of a second of audio, at least
            await asyncio.sleep(0.05)

    with pytest.raises(
        AssertionError, match=r"the customer received \d+ payloads a supervisor sent"
    ):
        assert_customer_received_nothing_a_supervisor_sent(payloads)
