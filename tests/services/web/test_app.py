"""The HTTP service, served by a real uvicorn on loopback, against a real redis-server."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import jwt
import pytest
import redis.asyncio as redis

from events.room import Role
from events.store import EventStore
from services.redis_server import RedisServer
from services.streams.workers import WORKER_RESTARTS, Workers
from tests.support import RunningService, running_service, token


def bearer(value: str) -> dict[str, str]:
    return {"authorization": f"Bearer {value}"}


async def command(
    client: httpx.AsyncClient, value: str, body: object, room: str = "room-1"
) -> httpx.Response:
    return await client.post(f"/rooms/{room}/commands", json=body, headers=bearer(value))


async def test_healthz_answers_ok(http: httpx.AsyncClient) -> None:
    response = await http.get("/healthz")

    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def test_livez_answers_while_redis_is_away_and_healthz_does_not(tmp_path: Path) -> None:
    # A liveness probe on /livez never restarts a worker for a Redis blip; /healthz takes the
    # worker out of the balancer meanwhile.
    server = RedisServer(tmp_path / "redis")
    server.start()
    client = redis.Redis.from_url(server.url)
    try:
        async with running_service(server.url, client) as running:
            server.kill()
            live = await running.http.get("/livez")
            ready = await running.http.get("/healthz")
    finally:
        server.stop()
        await client.aclose()

    assert (live.status_code, live.json()) == (200, {"status": "ok"})
    assert (ready.status_code, ready.json()["error"]) == (503, "unavailable")


async def test_a_worker_beside_the_app_that_fails_is_started_again_and_counted(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    runs = 0

    async def fails_twice() -> None:
        nonlocal runs
        runs += 1
        if runs <= 2:
            raise ValueError("a bug")
        await asyncio.Event().wait()  # then runs until stopped

    counted = WORKER_RESTARTS.labels("lobby changes (test double)")
    before = counted._value.get()
    async with running_service(redis_server.url, redis_client) as running:
        api = running.app.state.api
        api.workers = Workers(first_wait_s=0.01)
        api.workers.start("lobby changes (test double)", fails_twice)
        async with asyncio.timeout(5):
            while runs < 3:
                await asyncio.sleep(0.01)
        response = await running.http.get("/healthz")
        await api.workers.close()

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "restarts": {"lobby changes (test double)": 2}}
    assert counted._value.get() == before + 2


async def test_accepted_command_answers_201_with_the_stored_versions(
    http: httpx.AsyncClient,
) -> None:
    coach = token(Role.SUPERVISOR, whisper=True)
    assert (await command(http, coach, {"command": "join"})).status_code == 201

    response = await command(http, coach, {"command": "start_whisper"})

    assert response.status_code == 201
    assert response.json() == {"first_version": 2, "last_version": 3, "duplicate": False}


async def test_command_that_changes_nothing_answers_200(http: httpx.AsyncClient) -> None:
    agent = token(Role.AGENT)
    await command(http, agent, {"command": "join"})

    response = await command(http, agent, {"command": "join"})

    assert (response.status_code, response.json()) == (200, {"version": 1})


async def test_customer_sending_a_cue_is_rejected_with_409(http: httpx.AsyncClient) -> None:
    customer = token(Role.CUSTOMER)
    await command(http, customer, {"command": "join"})

    response = await command(http, customer, {"command": "send_cue", "cue_id": "c1", "text": "hi"})

    assert response.status_code == 409
    assert response.json()["error"] == "rejected"
    assert "customer" in response.json()["detail"]


@pytest.mark.parametrize(
    ("headers", "status", "detail"),
    [
        ({}, 401, "send Authorization: Bearer <token>"),
        (bearer("not-a-jwt"), 401, "invalid token"),
        (
            bearer(
                jwt.encode({"sub": "x"}, "another-secret-of-at-least-32-bytes", algorithm="HS256")
            ),
            401,
            "Signature verification failed",
        ),
        (
            bearer(
                jwt.encode(
                    {"sub": "x", "room": "room-1", "role": "supervisor"}, None, algorithm="none"
                )
            ),
            401,
            "invalid token",
        ),
        (bearer(token(Role.AGENT, exp=int(time.time()) - 10)), 401, "expired"),
        (bearer(token(Role.AGENT, nbf=int(time.time()) + 600)), 401, "not yet valid"),
        (bearer(token(Role.AGENT, aud="another-service")), 401, "Audience doesn't match"),
        (bearer(token(Role.AGENT, iss="someone-else")), 401, "Invalid issuer"),
        (bearer(token(Role.AGENT, role="admin")), 401, "invalid token claims"),
        (bearer(token(Role.AGENT, room="room-2")), 403, "token is for room 'room-2', not 'room-1'"),
    ],
    ids=[
        "missing",
        "garbage",
        "forged",
        "alg-none",
        "expired",
        "not-yet-valid",
        "audience",
        "issuer",
        "unknown-role",
        "other-room",
    ],
)
async def test_bad_tokens_are_refused_and_nothing_is_stored(
    http: httpx.AsyncClient,
    redis_client: redis.Redis,
    headers: dict[str, str],
    status: int,
    detail: str,
) -> None:
    response = await http.post("/rooms/room-1/commands", json={"command": "join"}, headers=headers)

    assert response.status_code == status
    assert detail in response.json()["detail"]
    assert await redis_client.keys("*room-1*") == []


@pytest.mark.parametrize(
    ("content", "status", "error", "detail"),
    [
        (b"{not json", 400, "invalid_json", "malformed"),
        (
            b'{"command": "whisper_louder"}',
            422,
            "invalid_command",
            "Invalid value 'whisper_louder' - at `$.command`",
        ),
        (
            b'{"command": "send_cue", "cue_id": "c1", "text": 5}',
            422,
            "invalid_command",
            "Expected `str`, got `int` - at `$.text`",
        ),
        (
            b'{"command": "join", "role": "supervisor"}',
            422,
            "invalid_command",
            "unknown field `role`",
        ),
        (
            b'{"command": "send_cue", "cue_id": "c1", "text": "' + b"x" * 20_000 + b'"}',
            413,
            "too_large",
            "over 16384",
        ),
    ],
    ids=["malformed", "unknown-command", "wrong-type", "unknown-field", "oversized"],
)
async def test_bad_bodies_get_a_clear_error_and_the_service_keeps_running(
    http: httpx.AsyncClient, content: bytes, status: int, error: str, detail: str
) -> None:
    agent = token(Role.AGENT)

    response = await http.post("/rooms/room-1/commands", content=content, headers=bearer(agent))

    assert (response.status_code, response.json()["error"]) == (status, error)
    assert detail in response.json()["detail"]
    assert (await command(http, agent, {"command": "join"})).status_code == 201


async def test_room_id_that_cannot_name_a_stream_is_a_400(http: httpx.AsyncClient) -> None:
    response = await command(http, token(Role.AGENT, room="a{b}"), {"command": "join"}, room="a{b}")

    assert (response.status_code, response.json()["error"]) == (400, "invalid_room")


async def test_audit_timeline_is_served_to_supervisors_only(http: httpx.AsyncClient) -> None:
    coach = token(Role.SUPERVISOR, whisper=True)
    agent = token(Role.AGENT)
    await command(http, agent, {"command": "join"})
    await command(http, coach, {"command": "join"})
    await command(http, coach, {"command": "start_whisper"})

    deadline = time.monotonic() + 10
    while True:  # the audit projection follows the feed: wait until it has caught up
        body = (await http.get("/rooms/room-1/audit", headers=bearer(coach))).json()
        if body["verification"]["checked"] == 4 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)

    assert body["verification"]["ok"] is True
    [whisper] = body["timeline"]["whispers"]
    assert (whisper["subject"], whisper["ended"]) == ("supervisor-1", None)
    refused = await http.get("/rooms/room-1/audit", headers=bearer(agent))
    assert (refused.status_code, refused.json()["error"]) == (403, "forbidden")


async def test_audit_of_a_room_without_events_is_a_404(http: httpx.AsyncClient) -> None:
    response = await http.get(
        "/rooms/room-9/audit", headers=bearer(token(Role.SUPERVISOR, room="room-9"))
    )

    assert (response.status_code, response.json()["error"]) == (404, "not_found")


async def test_customer_command_replies_carry_no_versions(http: httpx.AsyncClient) -> None:
    coach = token(Role.SUPERVISOR, whisper=True)
    await command(http, coach, {"command": "join"})
    await command(http, coach, {"command": "start_monitor"})

    joined = await command(http, token(Role.CUSTOMER), {"command": "join"})

    assert (joined.status_code, joined.json()) == (201, {})


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("x-correlation-id", "c" * 129),
        ("idempotency-key", "k" * 30_000),
        ("idempotency-key", "two words"),
        ("x-correlation-id", "<script>"),
    ],
    ids=["long-correlation", "huge-key", "space", "markup"],
)
async def test_an_id_header_past_its_bounds_is_refused_with_400_and_stores_nothing(
    http: httpx.AsyncClient, redis_client: redis.Redis, header: str, value: str
) -> None:
    response = await http.post(
        "/rooms/room-1/commands",
        json={"command": "join"},
        headers={**bearer(token(Role.AGENT)), header: value},
    )

    assert (response.status_code, response.json()["error"]) == (400, "invalid_header")
    assert f"{header}: use 1-128 characters" in response.json()["detail"]
    assert await redis_client.xlen(EventStore(redis_client).keys.room("room-1")) == 0


async def test_idempotency_keys_are_each_senders_own(http: httpx.AsyncClient) -> None:
    # A customer who uses a key first does not block a supervisor's command under it.
    same_key = {"idempotency-key": "click-1"}
    customer = await http.post(
        "/rooms/room-1/commands",
        json={"command": "join"},
        headers={**bearer(token(Role.CUSTOMER)), **same_key},
    )
    coach = await http.post(
        "/rooms/room-1/commands",
        json={"command": "join"},
        headers={**bearer(token(Role.SUPERVISOR, whisper=True)), **same_key},
    )

    assert (customer.status_code, coach.status_code) == (201, 201)


async def test_a_participant_joined_under_one_role_is_refused_under_another(
    http: httpx.AsyncClient,
) -> None:
    assert (
        await command(http, token(Role.AGENT, sub="pat"), {"command": "join"})
    ).status_code == 201

    again = await command(http, token(Role.SUPERVISOR, sub="pat"), {"command": "join"})

    assert (again.status_code, again.json()["error"]) == (409, "rejected")
    assert "joined as agent, but the token says supervisor" in again.json()["detail"]


async def test_a_client_that_leaves_mid_body_gets_no_traceback_logged(
    service: RunningService, caplog: pytest.LogCaptureFixture
) -> None:
    host, port = service.http.base_url.host, service.http.base_url.port
    _reader, writer = await asyncio.open_connection(host, port)
    bearer_header = f"Authorization: Bearer {token(Role.AGENT)}\r\n"
    writer.write(
        (
            "POST /rooms/room-1/commands HTTP/1.1\r\nHost: x\r\n"
            f"{bearer_header}Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
            '{"command": '
        ).encode()
    )
    await writer.drain()
    writer.close()  # gone, 990 bytes short
    await writer.wait_closed()
    await asyncio.sleep(0.3)

    assert (await service.http.get("/healthz")).status_code == 200
    assert "Traceback" not in caplog.text
    assert "Exception in ASGI application" not in caplog.text


async def test_metrics_are_off_until_a_scrape_token_is_set(http: httpx.AsyncClient) -> None:
    answer = await http.get("/metrics", headers=bearer(token(Role.SUPERVISOR)))

    assert (answer.status_code, answer.json()["error"]) == (404, "not_found")
    assert "EARPIECE_METRICS_TOKEN" in answer.json()["detail"]


async def test_metrics_answer_only_the_scrape_token(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    async with running_service(redis_server.url, redis_client, metrics_token="scrape") as service:
        refused = [
            await service.http.get("/metrics", headers=headers)
            for headers in ({}, bearer("scrapes"), bearer(token(Role.SUPERVISOR)))
        ]
        joined = await command(service.http, token(Role.AGENT), {"command": "join"})
        scraped = await service.http.get("/metrics", headers=bearer("scrape"))

    assert [answer.status_code for answer in refused] == [401, 401, 401]
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    assert "earpiece_fenced_writes_total" in scraped.text
    assert "earpiece_forbidden_routes_total" in scraped.text
    assert joined.status_code == 201
    metrics = dict(
        line.rsplit(" ", 1) for line in scraped.text.splitlines() if not line.startswith("#")
    )
    assert metrics["earpiece_rooms"] == "0.0"  # a join without media hosts nothing
    assert metrics['earpiece_sessions{direction="publish"}'] == "0.0"
    assert float(metrics["earpiece_append_seconds_count"]) >= 1
    for lag in ("earpiece_follow_lag_seconds_count", "earpiece_audit_lag_seconds_count"):
        assert lag in metrics
