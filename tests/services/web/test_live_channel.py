"""The pages' live channel over a real WebSocket, against a real service and Redis."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as redis
import websockets
from websockets.asyncio.client import ClientConnection

from events.room import Role
from services.bench.pages import blocking_read_ids
from services.media.ice import turn_credential
from services.redis_server import RedisServer
from services.settings import Settings
from services.web.live_channel import PAUSE_S, REFUSALS_BEFORE_PAUSE
from services.web.rate_limits import Rates
from tests.support import RunningService, running_service, token

pytestmark = pytest.mark.newest_redis


class Page:
    """One open page: its socket, and every message it was sent."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket
        self.received: list[dict[str, Any]] = []
        self.raw: list[str] = []

    async def send(self, message: dict[str, Any]) -> None:
        await self.socket.send(json.dumps(message))

    async def next(self, kind: str) -> dict[str, Any]:
        async with asyncio.timeout(5):
            while True:
                raw = await self.socket.recv()
                assert isinstance(raw, str)
                self.raw.append(raw)
                message = json.loads(raw)
                self.received.append(message)
                if message["type"] == kind:
                    return message

    async def view_where(self, condition: Any) -> dict[str, Any]:
        while True:
            view = (await self.next("view"))["view"]
            if condition(view):
                return view


@contextlib.asynccontextmanager
async def page(service: RunningService, role: Role, **claims: Any) -> AsyncIterator[Page]:
    """A page of ``role`` in room-1, authenticated and shown its first view."""
    url = str(service.http.base_url).replace("http", "ws", 1) + "/rooms/room-1/live"
    async with websockets.connect(url) as socket:
        opened = Page(socket)
        await opened.send({"type": "auth", "token": token(role, **claims)})
        await opened.next("view")
        yield opened


async def close_code(service: RunningService, first: str | None, room: str = "room-1") -> int:
    url = str(service.http.base_url).replace("http", "ws", 1) + f"/rooms/{room}/live"
    async with websockets.connect(url) as socket:
        if first is not None:
            with contextlib.suppress(websockets.ConnectionClosed):  # closed before it arrived
                await socket.send(first)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(socket.recv(), 10)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


async def test_every_open_page_sees_a_command_through_the_rooms_stream(
    service: RunningService,
) -> None:
    async with (
        page(service, Role.AGENT) as agent,
        page(service, Role.SUPERVISOR, sub="sup-1", whisper=True) as coach,
        page(service, Role.SUPERVISOR, sub="sup-2", whisper=True) as other_coach,
    ):
        for opened in (agent, coach, other_coach):
            await opened.send({"type": "command", "id": "j", "command": {"command": "join"}})
            assert (await opened.next("ack"))["outcome"] == "accepted"

        await coach.send({"type": "command", "id": "w", "command": {"command": "start_whisper"}})

        assert (await coach.next("ack")) == {"type": "ack", "id": "w", "outcome": "accepted"}
        badge = await agent.view_where(lambda v: v["coaches"] and v["coaches"][0]["whispering"])
        assert badge["coaches"][0]["name"] == "Sup-1"
        seen = await other_coach.view_where(
            lambda v: v["coaches"] and v["coaches"][0]["whispering"]
        )
        assert seen["coaches"][0]["subject"] == "sup-1"


async def test_a_push_to_talk_held_by_a_page_that_goes_is_released(
    service: RunningService,
) -> None:
    # A held key with a dead page must not keep the coach in the agent's ear.
    states = service.app.state.api.states
    async with page(service, Role.SUPERVISOR, sub="sup-1", whisper=True) as coach:
        for command in ("join", "start_whisper", "press_talk"):
            await coach.send({"type": "command", "id": command, "command": {"command": command}})
            assert (await coach.next("ack"))["id"] == command
        assert (await states.current("room-1")).coaches["sup-1"].talking
    # the coach's page is gone, without releasing

    async with asyncio.timeout(5):
        while (coach_state := (await states.current("room-1")).coaches["sup-1"]).talking:
            await asyncio.sleep(0.02)
    assert coach_state.whispering  # still whispering: only the press ended


async def test_customer_page_learns_nothing_of_supervisors(service: RunningService) -> None:
    async with page(service, Role.CUSTOMER, sub="cust") as customer:
        await customer.send({"type": "command", "id": "j", "command": {"command": "join"}})
        await customer.next("ack")
        async with page(service, Role.SUPERVISOR, sub="sup-7", whisper=True) as coach:
            for name in ("join", "start_whisper", "press_talk", "release_talk", "leave"):
                await coach.send({"type": "command", "id": name, "command": {"command": name}})
                await coach.next("ack")
            async with page(service, Role.AGENT, sub="agent") as agent:
                await agent.send({"type": "command", "id": "j", "command": {"command": "join"}})
                await agent.next("ack")
        view = await customer.view_where(lambda v: v["agent"] is not None)

    assert view["agent"]["subject"] == "agent"
    views = [m for m in customer.received if m["type"] == "view"]
    assert len(views) == 2  # on opening, and when the agent joined: nothing in between
    wire = "".join(customer.raw)
    assert "sup-7" not in wire
    assert "Sup-7" not in wire
    assert "version" not in wire


@pytest.mark.parametrize(
    ("message", "error", "detail"),
    [
        ("{not json", "invalid_message", "malformed"),
        ('{"type": "command", "command": {"command": "shout"}}', "invalid_message", "shout"),
        (
            '{"type": "command", "command": {"command": "send_cue", "cue_id": "c", "text": 5}}',
            "invalid_message",
            "$.command.text",
        ),
        ('{"type": "command", "command": {"command": "start_whisper"}}', "rejected", "customer"),
        (b'{"type": "command"}', "invalid_message", "not binary ones"),
    ],
    ids=["invalid-json", "unknown-command", "wrong-type", "role-may-not", "binary-frame"],
)
async def test_bad_messages_get_an_error_and_the_socket_stays_open(
    service: RunningService, message: str | bytes, error: str, detail: str
) -> None:
    async with page(service, Role.CUSTOMER, sub="cust") as customer:
        await customer.socket.send(message)
        reply = await customer.next("error")
        await customer.send({"type": "command", "id": "j", "command": {"command": "join"}})

        assert reply["error"] == error
        assert detail in reply["detail"]
        assert (await customer.next("ack"))["outcome"] == "accepted"


async def test_a_flood_of_commands_is_refused_and_slowed_and_other_rooms_are_unaffected(
    service: RunningService,
) -> None:
    flood = 100
    async with page(service, Role.AGENT, sub="agent") as flooder:
        message = json.dumps({"type": "command", "command": {"command": "leave"}})
        started = time.monotonic()
        await asyncio.gather(*(flooder.socket.send(message) for _ in range(flood)))
        async with asyncio.timeout(30):
            replies = [json.loads(await flooder.socket.recv()) for _ in range(flood)]
        elapsed = time.monotonic() - started

        # The participant's bucket lets its burst and its rate through (rejected: nobody to
        # leave); the rest is refused, and every REFUSALS_BEFORE_PAUSE refusals the socket is
        # left unread for about PAUSE_S.
        limit = Rates(Settings(jwt_secret="x" * 32)).commands
        let_through = limit.per_subject * (limit.burst_s + elapsed)
        assert {r.get("error") for r in replies} == {"rate_limited", "rejected"}
        refused = sum(r.get("error") == "rate_limited" for r in replies)
        assert refused >= flood - let_through
        assert elapsed >= (refused // REFUSALS_BEFORE_PAUSE - 1) * PAUSE_S * 0.5
        joined = await service.http.post(
            "/rooms/room-2/commands",
            json={"command": "join"},
            headers={"authorization": f"Bearer {token(Role.AGENT, room='room-2')}"},
        )
        assert joined.status_code == 201


@pytest.mark.parametrize(
    ("first", "room", "code"),
    [
        (None, "room-1", 4401),
        ('{"type": "auth", "token": "garbage"}', "room-1", 4401),
        ('{"type": "hello"}', "room-1", 4401),
        (json.dumps({"type": "auth", "token": token(Role.AGENT, room="room-2")}), "room-1", 4403),
        ("x" * 1_000_000, "room-1", 1009),
        (json.dumps({"type": "auth", "token": token(Role.AGENT)}), "bad{room}", 4400),
    ],
    ids=["silent", "garbage-token", "no-token", "other-room", "oversized", "bad-room"],
)
async def test_bad_authentication_closes_with_a_proper_code(
    service: RunningService, first: str | None, room: str, code: int
) -> None:
    assert await close_code(service, first, room) == code


async def first_message(service: RunningService, role: Role, **claims: Any) -> dict[str, Any]:
    url = str(service.http.base_url).replace("http", "ws", 1) + "/rooms/room-1/live"
    async with websockets.connect(url) as socket:
        await socket.send(json.dumps({"type": "auth", "token": token(role, **claims)}))
        message: dict[str, Any] = json.loads(await socket.recv())
        return message


async def test_hello_tells_a_page_its_receive_slots_and_only_supervisors_when_the_room_opened(
    service: RunningService,
) -> None:
    joined = await service.http.post(
        "/rooms/room-1/commands",
        json={"command": "join"},
        headers={"authorization": f"Bearer {token(Role.SUPERVISOR, sub='sup-1')}"},
    )
    assert joined.status_code == 201

    customer = await first_message(service, Role.CUSTOMER)
    agent = await first_message(service, Role.AGENT)
    supervisor = await first_message(service, Role.SUPERVISOR, sub="sup-2")

    assert customer == {"type": "hello", "role": "customer", "receive_slots": ["agent"]}
    assert agent["receive_slots"] == ["customer", "coach-1", "coach-2", "coach-3", "coach-4"]
    assert supervisor["receive_slots"] == ["customer", "agent"]
    assert supervisor["opened_at"].startswith("20")


async def test_with_turn_the_hello_gives_each_page_a_credential_minted_for_its_subject(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    turn = {"turn_urls": ("turn:127.0.0.1:3478",), "turn_secret": "s", "turn_ttl_s": 600}
    async with running_service(redis_server.url, redis_client, **turn) as service:
        hello = await first_message(service, Role.CUSTOMER, sub="cust")

    [server] = hello["ice_servers"]
    expires_at, subject = server["username"].split(":")
    assert (server["urls"], subject) == (["turn:127.0.0.1:3478"], "cust")
    assert abs(int(expires_at) - (time.time() + 600)) < 5
    assert server["credential"] == turn_credential("s", "cust", int(expires_at))[1]
    assert "ice_transport_policy" not in hello  # "all", the default


async def test_pages_closed_1011_when_their_redis_connection_drops_and_a_new_page_catches_up(
    service: RunningService, redis_client: redis.Redis
) -> None:
    async with (
        page(service, Role.AGENT, sub="agent") as agent,
        page(service, Role.SUPERVISOR, sub="sup-1") as coach,
    ):
        follower = await blocked_stream_read(redis_client)
        await redis_client.client_kill_filter(_id=follower)  # the room's one follower

        for dropped in (agent, coach):
            with pytest.raises(websockets.ConnectionClosed) as closed:
                async with asyncio.timeout(10):
                    await dropped.next("view")
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
                1011,
                "event store unavailable; reconnect",
            )

    coach = token(Role.SUPERVISOR, sub="sup-1", whisper=True)
    joined = await service.http.post(
        "/rooms/room-1/commands",
        json={"command": "join"},
        headers={"authorization": f"Bearer {coach}"},
    )
    assert joined.status_code == 201
    async with page(service, Role.AGENT, sub="agent") as reconnected:
        view = reconnected.received[-1]["view"]
        assert [coach["subject"] for coach in view["coaches"]] == ["sup-1"]
        # and it follows the room again: a new event reaches it
        whisper = await service.http.post(
            "/rooms/room-1/commands",
            json={"command": "start_whisper"},
            headers={"authorization": f"Bearer {coach}"},
        )
        assert whisper.status_code == 201, whisper.text
        await reconnected.view_where(lambda v: v["coaches"][0]["whispering"])


async def blocked_stream_read(client: redis.Redis) -> int:
    """The id of the one connection waiting in a blocking XREAD (a room's follower)."""
    async with asyncio.timeout(5):
        while True:
            blocked = await blocking_read_ids(client)
            assert len(blocked) < 2, blocked
            if blocked:
                return blocked[0]
            await asyncio.sleep(0.02)


async def test_a_supervisors_page_is_closed_when_their_token_expires(
    service: RunningService,
) -> None:
    expiring = {"sub": "sup-1", "whisper": True, "exp": int(time.time()) + 2}
    async with page(service, Role.SUPERVISOR, **expiring) as coach:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            async with asyncio.timeout(10):
                await coach.next("never")

    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4401
    assert closed.value.rcvd.reason == "the token has expired: open the page with a new link"


async def test_an_agents_page_outlives_its_token_and_resumes_with_the_token_it_was_handed(
    service: RunningService,
) -> None:
    async with page(service, Role.AGENT, sub="agent", exp=int(time.time()) + 2) as agent:
        handed = [m for m in agent.received if m["type"] == "resume"]  # it may come first
        resume = (handed[0] if handed else await agent.next("resume"))["token"]
        await asyncio.sleep(3)  # the token it opened with has expired
        await agent.send({"type": "command", "id": "j", "command": {"command": "join"}})
        assert (await agent.next("ack"))["outcome"] == "accepted"

    url = str(service.http.base_url).replace("http", "ws", 1) + "/rooms/room-1/live"
    async with websockets.connect(url) as socket:  # a reconnect, with the resume token
        again = Page(socket)
        await again.send({"type": "auth", "token": resume})
        view = (await again.next("view"))["view"]
    assert view["you"]["subject"] == "agent"
