"""Fairness between rooms: a participant or a room over its rate is refused at once, with
Retry-After, and other rooms are served as before (real service, real Redis)."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest
import websockets

from events.room import Role
from services.errors import RateLimited
from services.settings import Settings
from services.web.live_channel import MAX_SOCKETS
from services.web.rate_limits import RateLimit, Rates
from tests.support import RunningService, token

pytestmark = pytest.mark.newest_redis

RATES = Rates(Settings(jwt_secret="x" * 32))
COMMANDS = RATES.commands


def test_a_bucket_lets_its_burst_through_then_refuses_saying_whose_rate_and_when() -> None:
    limit = RateLimit("commands", per_subject=5, per_room=100, burst_s=2)
    for _ in range(10):
        limit.take("room-1", "cust")

    with pytest.raises(RateLimited, match="over this participant's 5 commands a second") as refused:
        limit.take("room-1", "cust")
    assert 0 < refused.value.retry_after_s <= 0.2
    limit.take("room-1", "agent")  # another participant of the room has their own bucket


def test_a_room_over_its_rate_refuses_everyone_in_it_and_no_one_elsewhere() -> None:
    limit = RateLimit("commands", per_subject=100, per_room=5, burst_s=2)
    for n in range(10):
        limit.take("room-1", f"sub-{n}")

    with pytest.raises(RateLimited, match="over this room's 5 commands a second"):
        limit.take("room-1", "sub-new")
    limit.take("room-2", "sub-0")


def test_a_refused_request_takes_no_token_from_the_other_bucket() -> None:
    limit = RateLimit("commands", per_subject=1, per_room=2, burst_s=1)
    limit.take("room-1", "a")
    with pytest.raises(RateLimited):
        limit.take("room-1", "a")  # a's bucket is empty: the room's keeps its token
    limit.take("room-1", "b")


def test_buckets_beyond_the_maximum_are_dropped_least_recently_used_first() -> None:
    limit = RateLimit("commands", per_subject=1, per_room=1000, burst_s=1, max_buckets=10)
    for n in range(100):
        limit.take(f"room-{n}", "cust")
    assert len(limit._buckets) == 10


async def test_http_commands_over_a_participants_rate_get_429_with_retry_after(
    service: RunningService,
) -> None:
    bearer = {"authorization": f"Bearer {token(Role.CUSTOMER)}"}
    sent = int(COMMANDS.per_subject * COMMANDS.burst_s) + 10
    answers = [
        await service.http.post("/rooms/room-1/commands", json={"command": "join"}, headers=bearer)
        for _ in range(sent)
    ]

    refused = [a for a in answers if a.status_code == 429]
    assert 1 <= len(refused) <= 10
    assert refused[0].json() == {
        "error": "rate_limited",
        "detail": "over this participant's 10 commands a second; slow down",
    }
    assert int(refused[0].headers["retry-after"]) >= 1
    other = await service.http.post(
        "/rooms/room-2/commands",
        json={"command": "join"},
        headers={"authorization": f"Bearer {token(Role.CUSTOMER, room='room-2')}"},
    )
    assert other.status_code == 201


async def test_whip_offers_over_a_participants_rate_get_429_before_the_offer_is_read(
    service: RunningService,
) -> None:
    headers = {
        "authorization": f"Bearer {token(Role.AGENT)}",
        "content-type": "application/sdp",
    }
    answers = [
        await service.http.post("/rooms/room-1/whip", content="v=0\r\n", headers=headers)
        for _ in range(int(RATES.sessions.per_subject * RATES.sessions.burst_s) + 3)
    ]

    assert {a.status_code for a in answers[:10]} == {400}
    assert answers[-1].status_code == 429
    assert "session setups a second" in answers[-1].json()["detail"]


async def test_a_participant_cannot_hold_more_live_sockets_than_allowed(
    service: RunningService,
) -> None:
    url = str(service.http.base_url).replace("http", "ws", 1) + "/rooms/room-1/live"
    auth = json.dumps({"type": "auth", "token": token(Role.AGENT)})
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(MAX_SOCKETS):
            socket = await stack.enter_async_context(websockets.connect(url))
            await socket.send(auth)
            assert json.loads(await socket.recv())["type"] == "hello"

        async with websockets.connect(url) as one_more:
            await one_more.send(auth)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(one_more.recv(), 5)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
        4429,
        f"agent-1 has {MAX_SOCKETS} live sockets on the room: close one",
    )
