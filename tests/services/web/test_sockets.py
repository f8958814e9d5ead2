"""The sockets' shared first-message authentication and close codes, on a minimal app."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
import uvicorn
import websockets
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from events.room import Role
from services.auth import Claims
from services.errors import AccessDenied, IssuerUnavailable, TokenRefused
from services.redis_server import free_loopback_port
from services.web.sockets import SEND_AUTH_FIRST, authenticate

GOOD = Claims(sub="sup-1", name="Sam", room="*", role=Role.SUPERVISOR, exp=2_000_000_000)


async def verify(token: str) -> Claims:
    """A verifier whose answer is the token itself: good, or the AuthError of a status."""
    if token == "good":
        return GOOD
    status, _, reason = token.partition(":")
    refusal = {"401": TokenRefused, "403": AccessDenied, "503": IssuerUnavailable}[status]
    raise refusal(reason)


async def endpoint(websocket: WebSocket) -> None:
    await websocket.accept()
    claims = await authenticate(websocket, verify)
    if claims is not None:
        await websocket.send_json({"sub": claims.sub})
        await websocket.close()


@pytest.fixture
async def url() -> AsyncIterator[str]:
    """The endpoint under a real uvicorn on a free loopback port."""
    port = free_loopback_port()
    app = Starlette(routes=[WebSocketRoute("/socket", endpoint)])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    async with asyncio.timeout(10):
        while not server.started:
            await asyncio.sleep(0.01)
    yield f"ws://127.0.0.1:{port}/socket"
    server.should_exit = True
    await serving


async def test_a_good_token_in_the_first_message_opens_the_socket(url: str) -> None:
    async with websockets.connect(url) as socket:
        await socket.send('{"type": "auth", "token": "good"}')
        assert json.loads(await socket.recv()) == {"sub": "sup-1"}


@pytest.mark.parametrize(
    ("first", "code", "reason"),
    [
        ('{"type": "auth", "token": "401:expired"}', 4401, "expired"),
        ('{"type": "auth", "token": "403:another room"}', 4403, "another room"),
        ('{"type": "auth", "token": "503:the key set is unreachable"}', 1011, "unreachable"),
        ('{"type": "command"}', 4401, SEND_AUTH_FIRST),
        ("not json", 4401, SEND_AUTH_FIRST),
        (b'{"type": "auth", "token": "good"}', 4401, SEND_AUTH_FIRST),
    ],
    ids=["refused", "no-access", "issuer-down", "not-auth", "not-json", "binary"],
)
async def test_a_first_message_that_does_not_authenticate_closes_with_its_code(
    url: str, first: str | bytes, code: int, reason: str
) -> None:
    async with websockets.connect(url) as socket:
        await socket.send(first)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(socket.recv(), 10)

    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == code
    assert reason in closed.value.rcvd.reason
