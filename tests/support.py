"""Helpers the test modules share: development tokens and a real service on loopback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import NamedTuple

import httpx
import jwt
from starlette.applications import Starlette

from events.room import Role
from events.store import RedisClient
from services.auth import mint_token
from services.redis_server import free_loopback_port
from services.settings import Settings
from services.web.app import create_app
from services.web.server import WorkerServer, server_config

SECRET = "test-secret-of-at-least-32-bytes!"

REPO = Path(__file__).resolve().parent.parent
"""The work tree the tests run in."""


def token(
    role: Role,
    /,
    *,
    room: str = "room-1",
    sub: str | None = None,
    whisper: bool = False,
    **claims: object,
) -> str:
    """A token as the service expects it; extra keyword arguments override its claims."""
    subject = sub or f"{role}-1"
    minted = mint_token(
        SECRET,
        subject=subject,
        name=subject.title(),
        room=room,
        role=role,
        whisper=whisper,
        audience="earpiece",
        issuer="earpiece",
    )
    if not claims:
        return minted
    payload = jwt.decode(minted, options={"verify_signature": False}) | claims
    return jwt.encode(payload, SECRET, algorithm="HS256")


class RunningService(NamedTuple):
    http: httpx.AsyncClient
    """A client whose base URL is the service."""
    app: Starlette


@contextlib.asynccontextmanager
async def running_service(
    redis_url: str, client: RedisClient, **settings: object
) -> AsyncIterator[RunningService]:
    """The whole app under a real uvicorn on a free loopback port, with a client for it."""
    port = free_loopback_port()
    config = Settings(redis_url=redis_url, jwt_secret=SECRET, port=port, **settings)  # type: ignore[arg-type]
    app = create_app(config, client)
    server = WorkerServer(server_config(config, app, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    async with asyncio.timeout(10):
        while not server.started:
            await asyncio.sleep(0.01)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            yield RunningService(http, app)
    finally:
        server.should_exit = True
        await serving


SALES_COACH = token(Role.SUPERVISOR, sub="sup-1", room="*", queues=["sales"], whisper=True)
"""A supervisor's token for every room of the sales queue."""


async def send(http: httpx.AsyncClient, room: str, bearer: str, command: str) -> httpx.Response:
    """POST ``command`` (a bare name) to ``room``'s commands with ``bearer``."""
    return await http.post(
        f"/rooms/{room}/commands",
        json={"command": command},
        headers={"authorization": f"Bearer {bearer}"},
    )


async def open_call(http: httpx.AsyncClient, room: str, queue: str) -> None:
    """A customer and an agent of ``queue`` join ``room`` over HTTP."""
    for role, name in ((Role.CUSTOMER, "cust"), (Role.AGENT, "agent")):
        bearer = token(role, room=room, sub=f"{name}-{room}", queue=queue)
        assert (await send(http, room, bearer, "join")).status_code == 201
