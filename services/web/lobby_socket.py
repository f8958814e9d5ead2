"""The supervisors' lobby over a WebSocket, ``/lobby/live``: pushed, not polled.

    page → server   {"type": "auth", "token": "<jwt>"}          first, within 5 s
    server → page   {"type": "lobby", "rooms": [...]}           now, then each time it changes

The rooms are those of the queues the token names, as ``services.streams.lobby`` keeps them;
the socket takes no message after the token. Close codes are those of ``services/web/sockets.py``.
"""

from __future__ import annotations

import asyncio
import contextlib

import msgspec
from starlette.websockets import WebSocket

from events.room import Role
from projections.views import LiveRoom
from services.auth import ANY_ROOM, Claims, TokenVerifier
from services.errors import AccessDenied
from services.streams.lobby import LobbyChanges
from services.web.rate_limits import Rates
from services.web.sockets import (
    NOT_TEXT,
    ErrorMessage,
    authenticate,
    closed_as_it_ends,
    expire_after,
    receive_text,
    send_message,
)


class LobbyMessage(msgspec.Struct, frozen=True, tag="lobby"):
    rooms: list[LiveRoom]


NO_MESSAGES = ErrorMessage(error="invalid_message", detail="the lobby takes no messages after auth")


def check_lobby_access(claims: Claims) -> None:
    if claims.role is not Role.SUPERVISOR:
        raise AccessDenied(f"only supervisors have a lobby, not the {claims.role}")
    if claims.room != ANY_ROOM:  # a room's token, whatever queues it lists, is for that room
        raise AccessDenied(f"a token for room {claims.room!r} has no lobby: it needs room '*'")


class LobbySocket:
    def __init__(self, changes: LobbyChanges, verifier: TokenVerifier, rates: Rates) -> None:
        self.changes = changes
        self.verifier = verifier
        self.rates = rates

    async def endpoint(self, websocket: WebSocket) -> None:
        await websocket.accept()
        claims = await authenticate(websocket, self._supervisor)
        if claims is None:
            return
        async with (
            closed_as_it_ends(websocket, log_as="lobby socket"),
            asyncio.TaskGroup() as group,
        ):
            group.create_task(self._push(websocket, frozenset(claims.queues)))
            group.create_task(expire_after(self.verifier.expires_in_s(claims)))
            while True:  # the page sends nothing after auth; until it goes
                text = await receive_text(websocket)
                await send_message(websocket, NOT_TEXT if text is None else NO_MESSAGES)

    async def _supervisor(self, token: str) -> Claims:
        claims = await self.verifier.claims_async(token)
        check_lobby_access(claims)
        self.rates.sockets.take(ANY_ROOM, claims.sub)
        return claims

    async def _push(self, websocket: WebSocket, queues: frozenset[str]) -> None:
        async with contextlib.aclosing(self.changes.watch(queues)) as lobbies:
            async for rooms in lobbies:
                await send_message(websocket, LobbyMessage(rooms))
