"""WHIP/WHEP (services/web/signaling.py) on a real uvicorn, real Redis and real aiortc peers.

Every refused request answers a 4xx JSON ``{"error", "detail"}`` and leaves everything as it
was: no event in the room's stream, no session in the media plane, no producer or consumer in
the room's router. The happy paths show what a client relies on: 201 with a Location and an SDP
answer carrying the service's Opus parameters, the receive slots of each role, and that joining
and leaving the room follow the participant's sessions, including when the client vanishes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import NamedTuple

import aioice.ice
import httpx
import pytest
import redis.asyncio as redis
from aiortc import RTCConfiguration, RTCPeerConnection
from starlette.applications import Starlette

from events.room import LeaveReason, ParticipantJoined, ParticipantLeft, Role, RoomEvent
from events.store import EventStore
from services.bench.participants import Participant, ToneTrack
from services.media.plane import MediaPlane
from services.media.sdp import MAX_SDP_BYTES, OPUS_FMTP
from services.redis_server import RedisServer
from tests.support import running_service, token

pytestmark = pytest.mark.newest_redis

ROOM = "room-1"
COACH_SLOTS = 2


class Service(NamedTuple):
    http: httpx.AsyncClient
    app: Starlette
    redis: redis.Redis

    @property
    def media(self) -> MediaPlane:
        media: MediaPlane = self.app.state.media
        return media

    async def events(self) -> list[RoomEvent]:
        return [envelope.event for envelope in await EventStore(self.redis).read(ROOM)]

    @property
    def worker(self) -> str:
        """The identity of the service's worker, which its sessions' joins name."""
        worker: str = self.app.state.api.presence.worker_id
        return worker


class Observed(NamedTuple):
    """What a refused request must leave as it was."""

    events: list[RoomEvent]
    sessions: set[tuple[str, str]]
    producers: set[str]
    consumers: set[str]


async def observe(service: Service) -> Observed:
    room = service.media.rooms.get(ROOM)
    if room is None:
        return Observed(await service.events(), set(), set(), set())
    return Observed(
        await service.events(),
        {(s.actor.subject, s.direction) for s in room.sessions.values()},
        set(room.router.producers),
        set(room.router.consumers),
    )


NOTHING = Observed([], set(), set(), set())


@pytest.fixture
async def service(redis_server: RedisServer, redis_client: redis.Redis) -> AsyncIterator[Service]:
    async with running_service(redis_server.url, redis_client, coach_slots=COACH_SLOTS) as running:
        yield Service(running.http, running.app, redis_client)


@pytest.fixture
async def peers() -> AsyncIterator[list[RTCPeerConnection]]:
    """Client peer connections made by a test, closed after it."""
    made: list[RTCPeerConnection] = []
    yield made
    await asyncio.gather(*(pc.close() for pc in made))


@pytest.fixture
async def people() -> AsyncIterator[list[Participant]]:
    made: list[Participant] = []
    yield made
    await asyncio.gather(*(person.close() for person in made))


async def offer_from(
    peers: list[RTCPeerConnection], *kinds: str, direction: str = "sendonly"
) -> str:
    """A real aiortc offer with one section per kind ("audio" or "video")."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    peers.append(pc)
    for kind in kinds:
        pc.addTransceiver(kind, direction=direction)
    await pc.setLocalDescription(await pc.createOffer())
    return str(pc.localDescription.sdp)


def sdp_headers(bearer: str) -> dict[str, str]:
    return {"authorization": f"Bearer {bearer}", "content-type": "application/sdp"}


async def post_offer(
    service: Service, path: str, offer: str | bytes, bearer: str, **headers: str
) -> httpx.Response:
    return await service.http.post(
        f"/rooms/{ROOM}/{path}", content=offer, headers=sdp_headers(bearer) | headers
    )


async def publishing(
    service: Service, people: list[Participant], bearer: str, hz: float
) -> Participant:
    """Someone in the room publishing a tone through WHIP (closed by the fixture)."""
    person = Participant(service.http, ROOM, bearer)
    people.append(person)
    await person.publish(ToneTrack(hz))
    return person


def assert_error(response: httpx.Response, status: int, error: str, detail: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error", "detail"}
    assert body["error"] == error
    assert detail in body["detail"]


# --- refused, and nothing changes --------------------------------------------------------------


@pytest.mark.parametrize("path", ["whip", "whep"])
async def test_garbage_sdp_is_refused_with_400_and_changes_nothing(
    service: Service, path: str
) -> None:
    response = await post_offer(service, path, "hello, I am not SDP", token(Role.AGENT))

    assert_error(response, 400, "bad_offer", "offer is not SDP")
    assert await observe(service) == NOTHING


@pytest.mark.parametrize("path", ["whip", "whep"])
async def test_offer_that_is_not_utf8_is_refused_with_400_and_changes_nothing(
    service: Service, path: str
) -> None:
    response = await post_offer(service, path, b"v=0\r\n\xff\xfe", token(Role.AGENT))

    assert_error(response, 400, "bad_offer", "not UTF-8")
    assert await observe(service) == NOTHING


@pytest.mark.parametrize(("path", "direction"), [("whip", "sendonly"), ("whep", "recvonly")])
async def test_offer_with_video_is_refused_with_400_and_changes_nothing(
    service: Service, peers: list[RTCPeerConnection], path: str, direction: str
) -> None:
    offer = await offer_from(peers, "audio", "video", direction=direction)

    response = await post_offer(service, path, offer, token(Role.AGENT))

    assert_error(response, 400, "bad_offer", "the service is audio only: m-line 1")
    assert await observe(service) == NOTHING


@pytest.mark.parametrize(
    ("path", "direction", "detail"),
    [
        ("whip", "sendonly", "offer has 20 audio sections, at most 1 allowed"),
        ("whep", "recvonly", f"offer has 20 audio sections, at most {1 + COACH_SLOTS} allowed"),
    ],
)
async def test_offer_with_20_sections_is_refused_with_400_and_changes_nothing(
    service: Service, peers: list[RTCPeerConnection], path: str, direction: str, detail: str
) -> None:
    offer = await offer_from(peers, *["audio"] * 20, direction=direction)

    response = await post_offer(service, path, offer, token(Role.AGENT))

    assert_error(response, 400, "bad_offer", detail)
    assert await observe(service) == NOTHING


async def test_whep_offer_with_more_sections_than_the_customer_has_slots_changes_nothing(
    service: Service, peers: list[RTCPeerConnection]
) -> None:
    offer = await offer_from(peers, "audio", "audio", direction="recvonly")

    response = await post_offer(service, "whep", offer, token(Role.CUSTOMER))

    assert_error(response, 400, "bad_offer", "offer has 2 audio sections, at most 1 allowed")
    assert await observe(service) == NOTHING


async def test_bad_offer_from_a_participant_already_in_the_room_does_not_make_them_leave(
    service: Service, peers: list[RTCPeerConnection]
) -> None:
    agent = token(Role.AGENT)
    joined = await service.http.post(
        f"/rooms/{ROOM}/commands",
        json={"command": "join"},
        headers={"authorization": f"Bearer {agent}"},
    )
    assert joined.status_code == 201
    before = await observe(service)

    response = await post_offer(service, "whip", "v=0\r\n", agent)

    assert_error(response, 400, "bad_offer", "no media section")
    assert await observe(service) == before


@pytest.mark.parametrize("path", ["whip", "whep"])
@pytest.mark.parametrize("content_type", ["application/json", "text/plain", None])
async def test_offer_of_another_content_type_is_refused_with_415_and_changes_nothing(
    service: Service, peers: list[RTCPeerConnection], path: str, content_type: str | None
) -> None:
    offer = await offer_from(peers, "audio")
    headers = {"authorization": f"Bearer {token(Role.AGENT)}"}
    if content_type is not None:
        headers["content-type"] = content_type

    response = await service.http.post(f"/rooms/{ROOM}/{path}", content=offer, headers=headers)

    assert_error(response, 415, "unsupported_media_type", "application/sdp")
    assert await observe(service) == NOTHING


@pytest.mark.parametrize("path", ["whip", "whep"])
async def test_oversized_offer_is_refused_with_413_and_changes_nothing(
    service: Service, path: str
) -> None:
    offer = "v=0\r\n" + "a=x\r\n" * (MAX_SDP_BYTES // 5)

    response = await post_offer(service, path, offer, token(Role.AGENT))

    assert_error(response, 413, "too_large", str(MAX_SDP_BYTES))
    assert await observe(service) == NOTHING


async def test_oversized_offer_without_content_length_is_refused_with_413(
    service: Service,
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(MAX_SDP_BYTES // 1024 + 1):
            yield b"a" * 1024

    response = await service.http.post(
        f"/rooms/{ROOM}/whip", content=chunks(), headers=sdp_headers(token(Role.AGENT))
    )

    assert "content-length" not in response.request.headers
    assert_error(response, 413, "too_large", f"body is over {MAX_SDP_BYTES} bytes")
    assert await observe(service) == NOTHING


@pytest.mark.parametrize("path", ["whip", "whep"])
@pytest.mark.parametrize(
    ("headers", "status", "error", "detail"),
    [
        (
            {"authorization": f"Bearer {token(Role.AGENT, room='room-2')}"},
            403,
            "forbidden",
            "token is for room 'room-2', not 'room-1'",
        ),
        (
            {"authorization": f"Bearer {token(Role.AGENT, exp=int(time.time()) - 10)}"},
            401,
            "unauthorized",
            "expired",
        ),
        ({}, 401, "unauthorized", "send Authorization: Bearer <token>"),
    ],
    ids=["another-room", "expired", "missing"],
)
async def test_offer_with_a_bad_token_is_refused_and_changes_nothing(
    service: Service,
    peers: list[RTCPeerConnection],
    path: str,
    headers: dict[str, str],
    status: int,
    error: str,
    detail: str,
) -> None:
    offer = await offer_from(peers, "audio", direction="sendonly" if path == "whip" else "recvonly")

    response = await service.http.post(
        f"/rooms/{ROOM}/{path}",
        content=offer,
        headers={"content-type": "application/sdp", **headers},
    )

    assert_error(response, status, error, detail)
    assert await observe(service) == NOTHING


async def test_customer_sending_start_whisper_is_rejected_with_409_and_changes_nothing(
    service: Service, people: list[Participant]
) -> None:
    customer = await publishing(service, people, token(Role.CUSTOMER), 500)
    before = await observe(service)

    response = await service.http.post(
        f"/rooms/{ROOM}/commands",
        json={"command": "start_whisper"},
        headers={"authorization": f"Bearer {customer.token}"},
    )

    assert_error(
        response, 409, "rejected", "customer-1 cannot start_whisper as customer: only supervisor"
    )
    assert await observe(service) == before


async def test_delete_of_someone_elses_session_answers_404_and_changes_nothing(
    service: Service, people: list[Participant]
) -> None:
    agent = await publishing(service, people, token(Role.AGENT), 800)
    [location] = agent.locations
    before = await observe(service)

    response = await service.http.delete(
        location, headers={"authorization": f"Bearer {token(Role.CUSTOMER)}"}
    )

    assert_error(response, 404, "not_found", "no such session of yours in this room")
    assert await observe(service) == before


@pytest.mark.parametrize("path", ["whip", "whep"])
async def test_delete_of_an_unknown_session_answers_404_and_changes_nothing(
    service: Service, path: str
) -> None:
    response = await service.http.delete(
        f"/rooms/{ROOM}/{path}/0123456789abcdef",
        headers={"authorization": f"Bearer {token(Role.AGENT)}"},
    )

    assert_error(response, 404, "not_found", "no such session of yours in this room")
    assert await observe(service) == NOTHING


async def test_delete_with_a_token_for_another_room_answers_403_and_changes_nothing(
    service: Service, people: list[Participant]
) -> None:
    agent = await publishing(service, people, token(Role.AGENT), 800)
    before = await observe(service)

    response = await service.http.delete(
        agent.locations[0], headers={"authorization": f"Bearer {token(Role.AGENT, room='x')}"}
    )

    assert_error(response, 403, "forbidden", "token is for room 'x'")
    assert await observe(service) == before


@pytest.mark.parametrize("path", ["whip", "whep"])
async def test_patch_answers_405_since_there_is_no_trickle_ice(
    service: Service, people: list[Participant], path: str
) -> None:
    agent = await publishing(service, people, token(Role.AGENT), 800)
    await agent.receive(1)
    before = await observe(service)
    location = agent.locations[0 if path == "whip" else 1]

    response = await service.http.patch(
        location,
        content="a=candidate:1 1 udp 1 127.0.0.1 9 typ host\r\n",
        headers={
            "authorization": f"Bearer {agent.token}",
            "content-type": "application/trickle-ice-sdpfrag",
        },
    )

    assert_error(response, 405, "method_not_allowed", "no trickle ICE")
    assert await observe(service) == before


# --- happy paths -------------------------------------------------------------------------------


async def test_whip_answers_201_with_location_and_an_sdp_answer_with_the_opus_fmtp(
    service: Service, peers: list[RTCPeerConnection]
) -> None:
    offer = await offer_from(peers, "audio")

    response = await post_offer(service, "whip", offer, token(Role.AGENT))

    assert response.status_code == 201, response.text
    assert response.headers["content-type"] == "application/sdp"
    [session] = service.media.rooms[ROOM].sessions.values()
    assert response.headers["location"] == f"/rooms/{ROOM}/whip/{session.id}"
    fmtp = ";".join(f"{key}={value}" for key, value in OPUS_FMTP.items())
    [fmtp_line] = [line for line in response.text.splitlines() if line.startswith("a=fmtp:")]
    assert fmtp_line.endswith(f" {fmtp}")
    assert "maxplaybackrate=16000" in fmtp_line
    assert response.text.count("m=audio ") == 1


@pytest.mark.parametrize(
    ("path", "direction", "answered"),
    [
        ("whip", "sendonly", "a=recvonly"),
        ("whep", "recvonly", "a=sendonly"),
    ],
)
async def test_an_offer_whose_direction_is_at_session_level_is_answered(
    service: Service, peers: list[RTCPeerConnection], path: str, direction: str, answered: str
) -> None:
    # RFC 8866 lets the direction stand at session level; aiortc reads it only in sections, and
    # the request used to hang while its failed session was ended.
    offer = (await offer_from(peers, "audio", direction=direction)).replace(
        f"a={direction}\r\n", ""
    )
    offer = offer.replace("t=0 0\r\n", f"t=0 0\r\na={direction}\r\n")

    response = await post_offer(service, path, offer, token(Role.AGENT))

    assert response.status_code == 201, response.text
    assert answered in response.text.splitlines()


async def test_concurrent_posts_by_one_participant_are_answered_in_turn_and_the_last_stays(
    service: Service, peers: list[RTCPeerConnection]
) -> None:
    offers = [await offer_from(peers, "audio", direction="recvonly") for _ in range(10)]
    bearer = token(Role.AGENT)

    responses = await asyncio.gather(
        *(post_offer(service, "whep", offer, bearer) for offer in offers)
    )

    assert [response.status_code for response in responses] == [201] * 10
    [session] = service.media.rooms[ROOM].sessions.values()  # each replaced the one before
    assert session.direction == "receive"


@pytest.mark.parametrize(
    ("role", "slots"),
    [(Role.CUSTOMER, 1), (Role.AGENT, 1 + COACH_SLOTS), (Role.SUPERVISOR, 2)],
)
async def test_whep_opens_as_many_sections_as_the_role_has_receive_slots(
    service: Service, peers: list[RTCPeerConnection], role: Role, slots: int
) -> None:
    offer = await offer_from(peers, *["audio"] * slots, direction="recvonly")

    response = await post_offer(service, "whep", offer, token(role))

    assert response.status_code == 201, response.text
    assert response.headers["location"].startswith(f"/rooms/{ROOM}/whep/")
    assert response.text.count("m=audio ") == slots
    assert response.text.count("a=sendonly") == slots
    assert service.media.receive_slots(role) == slots


async def test_joining_follows_the_first_post_and_leaving_the_last_delete(
    service: Service, people: list[Participant]
) -> None:
    agent = Participant(service.http, ROOM, token(Role.AGENT))
    people.append(agent)

    await agent.publish(ToneTrack(800))
    assert await service.events() == [
        ParticipantJoined(subject="agent-1", role=Role.AGENT, name="Agent-1", worker=service.worker)
    ]
    await agent.receive(1 + COACH_SLOTS)
    assert len(await service.events()) == 1

    whip, whep = agent.locations
    deleted = await service.http.delete(whip, headers=agent.headers)
    assert deleted.status_code == 200
    assert len(await service.events()) == 1
    assert (await observe(service)).sessions == {("agent-1", "receive")}

    deleted = await service.http.delete(whep, headers=agent.headers)
    assert deleted.status_code == 200
    assert (await service.events())[1:] == [
        ParticipantLeft(subject="agent-1", reason=LeaveReason.SESSION_ENDED)
    ]
    assert ROOM not in service.media.rooms


async def test_second_agent_is_refused_with_409_and_changes_nothing(
    service: Service, people: list[Participant], peers: list[RTCPeerConnection]
) -> None:
    await publishing(service, people, token(Role.AGENT, sub="agent-1"), 800)
    before = await observe(service)

    response = await post_offer(
        service, "whip", await offer_from(peers, "audio"), token(Role.AGENT, sub="agent-2")
    )

    assert_error(response, 409, "rejected", "agent-1 is already the agent of room room-1")
    assert await observe(service) == before


async def connected(service: Service, subject: str) -> None:
    async with asyncio.timeout(10):
        while True:
            room = service.media.rooms.get(ROOM)
            sessions = room.sessions.values() if room else []
            states = [s.pc.connectionState for s in sessions if s.actor.subject == subject]
            if states and all(state == "connected" for state in states):
                return
            await asyncio.sleep(0.01)


async def left(service: Service, subject: str, within_s: float) -> float:
    """Seconds until ``subject`` left the room, failing after ``within_s``."""
    start = time.monotonic()
    async with asyncio.timeout(within_s):
        gone = ParticipantLeft(subject=subject, reason=LeaveReason.SESSION_ENDED)
        while gone not in await service.events():
            await asyncio.sleep(0.05)
    return time.monotonic() - start


async def test_client_that_closes_without_delete_leaves_when_dtls_closes(
    service: Service, people: list[Participant]
) -> None:
    agent = await publishing(service, people, token(Role.AGENT), 800)
    await agent.receive(1)
    await connected(service, "agent-1")

    await agent.close()  # pc.close(): a DTLS close_notify, but no DELETE

    await left(service, "agent-1", within_s=15)
    assert ROOM not in service.media.rooms


async def test_client_that_vanishes_leaves_when_ice_consent_expires(
    service: Service, people: list[Participant], monkeypatch: pytest.MonkeyPatch
) -> None:
    # RFC 7675 consent: aioice checks every 5 s and gives up after 6 failures, ~30 s on a real
    # call. The same path, with the checks 25 times as often.
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.2)
    agent = await publishing(service, people, token(Role.AGENT), 800)
    await connected(service, "agent-1")
    assert agent.publisher is not None

    # The client's machine drops off the network: its sockets close, it sends nothing more.
    for transceiver in agent.publisher.getTransceivers():
        connection = transceiver.sender.transport.transport._connection
        for protocol in connection._protocols:
            protocol.transport.close()

    await left(service, "agent-1", within_s=10)
    assert ROOM not in service.media.rooms


async def test_reposting_whip_replaces_the_session_without_leaving(
    service: Service, people: list[Participant], peers: list[RTCPeerConnection]
) -> None:
    agent = await publishing(service, people, token(Role.AGENT), 800)
    [first] = agent.locations

    response = await post_offer(service, "whip", await offer_from(peers, "audio"), agent.token)

    assert response.status_code == 201, response.text
    assert response.headers["location"] != first
    assert [type(e) for e in await service.events()] == [ParticipantJoined]
    assert (await observe(service)).sessions == {("agent-1", "publish")}
    gone = await service.http.delete(first, headers=agent.headers)
    assert gone.status_code == 404


async def test_delete_through_the_other_directions_path_answers_404(
    service: Service, people: list[Participant]
) -> None:
    agent = await publishing(service, people, token(Role.AGENT), 800)
    [location] = agent.locations
    before = await observe(service)

    response = await service.http.delete(
        location.replace("/whip/", "/whep/"), headers={"authorization": f"Bearer {agent.token}"}
    )

    assert_error(response, 404, "not_found", "no such session of yours in this room")
    assert await observe(service) == before


async def test_session_whose_client_never_connects_expires_and_frees_the_seat(
    redis_server: RedisServer, redis_client: redis.Redis, peers: list[RTCPeerConnection]
) -> None:
    async with running_service(redis_server.url, redis_client, connect_timeout_s=0.5) as running:
        service = Service(running.http, running.app, redis_client)
        offer = await offer_from(peers, "audio")  # its client never applies the answer

        answered = await post_offer(service, "whip", offer, token(Role.AGENT))
        await left(service, "agent-1", within_s=10)  # stored, not only dropped by the plane
        second = await post_offer(
            service, "whip", await offer_from(peers, "audio"), token(Role.AGENT, sub="agent-2")
        )

        assert answered.status_code == 201
        kinds = [type(e).__name__ for e in await service.events()]
        assert kinds[:2] == ["ParticipantJoined", "ParticipantLeft"]
        assert second.status_code == 201  # the seat was free again


async def test_publishing_again_while_alone_in_the_room_keeps_the_audio_flowing(
    service: Service, people: list[Participant]
) -> None:
    # The second WHIP ends the first, which empties the room: it must join the new room's
    # Router, not the one stopped with the old room.
    agent = await publishing(service, people, token(Role.AGENT), 800)
    first = agent.publisher
    await agent.publish(ToneTrack(800))
    assert first is not None
    await first.close()  # the server ended it: the client lets it go too
    customer = Participant(service.http, ROOM, token(Role.CUSTOMER))
    people.append(customer)
    await customer.publish(ToneTrack(500))
    await customer.receive(1)

    async with asyncio.timeout(15):
        while True:
            start = time.monotonic()
            await asyncio.sleep(1.0)
            if customer.hears_db(800, start) >= -15:
                break
    room = service.media.rooms[ROOM]
    assert room.router.producers["agent-1"].packets > 0


async def test_a_supervisors_media_ends_with_their_token_but_an_agents_does_not(
    service: Service, people: list[Participant]
) -> None:
    # Monitoring ends when the right to monitor does; a call is not cut by an expiring token.
    expires = int(time.time()) + 8  # room enough to set up on a loaded machine
    agent = await publishing(service, people, token(Role.AGENT, exp=expires), 800)
    await agent.receive(1 + COACH_SLOTS)
    coach = Participant(service.http, ROOM, token(Role.SUPERVISOR, whisper=True, exp=expires))
    people.append(coach)
    await coach.receive(2)

    expired = ParticipantLeft(subject="supervisor-1", reason=LeaveReason.CREDENTIALS_EXPIRED)
    async with asyncio.timeout(20):
        while expired not in await service.events():
            await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)  # the agent's sessions outlive their token too

    room = service.media.rooms[ROOM]
    assert "supervisor-1" not in room.router.consumers
    assert {s.actor.subject for s in room.sessions.values()} == {"agent-1"}
    assert not any(
        isinstance(e, ParticipantLeft) and e.subject == "agent-1" for e in await service.events()
    )
