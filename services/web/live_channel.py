"""The pages' live channel: one WebSocket per page at ``/rooms/{room}/live``.

    page → server   {"type": "auth", "token": "<jwt>"}                      first, within 5 s
                    {"type": "command", "id": "c7", "command": {"command": "press_talk"}}
    server → page   {"type": "hello", "role": "agent", "receive_slots": ["customer", ...]}
                                                         once, after auth, before any view
                    {"type": "view", "view": {...}}      the room as this role may see it
                    {"type": "ack", "id": "c7", "outcome": "accepted" | "unchanged"}
                    {"type": "error", "id": "c7", "error": "<code>", "detail": "<sentence>"}
                    {"type": "resume", "token": "<jwt>"}   customers and agents: now, then
                                                         every 5 minutes

The token travels in the first message, never in the URL (URLs land in logs). ``hello`` tells the
page its role and receive slots (a WHEP offer has one recvonly section per slot, in this order)
and, to supervisors only, ``opened_at``: when the room's first event was stored. A command's ack
only says it was taken; what it changed reaches every open page the same way, as a new view
from the room's stream, so two supervisors and the agent always agree. A view is sent only
when it changed: the customer's view carries nothing of supervisors, and neither does the
timing of its updates.

Lifetimes (services/auth.py): a customer's or an agent's socket stays open past the expiry of
the token it was opened with, and hands the page resume tokens to reconnect with (its socket
and its media), so nobody on a call loses it, or its views, to an expiring token. A supervisor's
socket closes with 4401 when their token expires.

Recoverable mistakes (bad JSON, a binary frame, an unknown command, a wrong field, a rejected
or rate-limited command) are answered with an ``error`` and the socket stays open; a flood over
the rate is slowed down by reading the socket less (``REFUSALS_BEFORE_PAUSE``).
Close codes are those of ``services/web/sockets.py``; here 4403 means a token for another room.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
import time
from collections import Counter

import msgspec
from starlette.websockets import WebSocket

from events.errors import EarpieceError, InvalidRoomId
from events.keys import check_room_id
from events.room import Role
from events.store import EventStore
from projections.commands import (
    Leave,
    PressTalk,
    ReleaseTalk,
    RoomCommand,
    StopMonitor,
    StopWhisper,
)
from projections.decider import Rejection
from projections.views import RoomView, view_for
from services.auth import RESUME_TTL_S, Claims, TokenVerifier
from services.errors import RateLimited, TooManyOpen
from services.media.ice import IceServer, ice_servers_for
from services.media.router import slot_names
from services.settings import Settings
from services.streams.command_handler import Accepted, CommandHandler
from services.streams.room_followers import RoomFollowers
from services.web.rate_limits import Rates
from services.web.sockets import (
    NOT_TEXT,
    ErrorMessage,
    authenticate,
    close_for,
    closed_as_it_ends,
    expire_after,
    receive_text,
    send_message,
)

MAX_SOCKETS = 4
"""Live sockets one participant may hold on a room at once (each is sent every view)."""
REFUSALS_BEFORE_PAUSE = 10
PAUSE_S = 1.0
"""After this many messages in a row over the rate, the socket is not read for about
``PAUSE_S`` (jittered, so that many flooded sockets do not resume in step).
(Closing it instead would cost more: its close frame waits behind all the sender has
buffered, which the worker would read to find it.)"""


class CommandMessage(msgspec.Struct, frozen=True, tag="command", forbid_unknown_fields=True):
    command: RoomCommand
    id: str = ""


class Hello(msgspec.Struct, frozen=True, tag="hello", omit_defaults=True):
    role: Role
    receive_slots: tuple[str, ...]
    opened_at: dt.datetime | None = None
    ice_servers: tuple[IceServer, ...] = ()
    """TURN servers for the page's peer connections, with credentials minted for it."""
    ice_transport_policy: str = "all"


class ResumeMessage(msgspec.Struct, frozen=True, tag="resume"):
    token: str


class ViewMessage(msgspec.Struct, frozen=True, tag="view"):
    view: RoomView


class Ack(msgspec.Struct, frozen=True, tag="ack"):
    id: str
    outcome: str


log = logging.getLogger(__name__)

_command_decoder = msgspec.json.Decoder(CommandMessage)


class PushToTalk:
    """Whether this socket's page holds the push-to-talk button: pressed through it and not
    released since. When the socket ends with it held, the server releases it."""

    def __init__(self) -> None:
        self.held = False

    def follow(self, command: RoomCommand, outcome: object) -> None:
        if isinstance(outcome, Rejection):
            return
        if isinstance(command, PressTalk):
            self.held = True
        elif isinstance(command, ReleaseTalk | StopWhisper | StopMonitor | Leave):
            self.held = False


class LiveChannel:
    def __init__(
        self,
        store: EventStore,
        followers: RoomFollowers,
        commands: CommandHandler,
        verifier: TokenVerifier,
        rates: Rates,
        settings: Settings,
    ) -> None:
        self.store = store
        self.followers = followers
        self.commands = commands
        self.verifier = verifier
        self.rates = rates
        self.settings = settings
        self._open: Counter[tuple[str, str]] = Counter()
        """Live sockets per (room, subject)."""

    async def endpoint(self, websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            room_id = check_room_id(websocket.path_params["room_id"])
        except InvalidRoomId as exc:
            await close_for(websocket, exc)
            return
        claims = await authenticate(websocket, lambda token: self._admitted(token, room_id))
        if claims is None:
            return
        talk = PushToTalk()
        self._open[room_id, claims.sub] += 1
        try:
            async with closed_as_it_ends(websocket, log_as=f"live {room_id}"):
                await send_message(websocket, await self._hello(room_id, claims))
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._send_views(websocket, room_id, claims))
                    if self.verifier.resumable(claims):
                        group.create_task(self._send_resume_tokens(websocket, claims))
                    else:
                        group.create_task(expire_after(self.verifier.expires_in_s(claims)))
                    await self._serve_commands(websocket, room_id, claims, talk)
        finally:
            self._open[room_id, claims.sub] -= 1
            if not self._open[room_id, claims.sub]:
                del self._open[room_id, claims.sub]
            if talk.held:  # a press never outlives the page that made it
                await self._release_talk(room_id, claims)

    async def _admitted(self, token: str, room_id: str) -> Claims:
        """The token's claims, if its participant may open one more socket on the room now."""
        claims = await self.verifier.verify_async(token, room_id)
        self.rates.sockets.take(room_id, claims.sub)
        if self._open[room_id, claims.sub] >= MAX_SOCKETS:
            raise TooManyOpen(f"{claims.sub} has {MAX_SOCKETS} live sockets on the room: close one")
        return claims

    async def _hello(self, room_id: str, claims: Claims) -> Hello:
        opened_at = None  # for a supervisor only: the first event may be a supervisor's
        if claims.role is Role.SUPERVISOR:
            first = await self.store.read(room_id, count=1)
            opened_at = first[0].time if first else None
        return Hello(
            claims.role,
            slot_names(claims.role, self.settings.coach_slots),
            opened_at,
            ice_servers_for(self.settings, claims.sub, time.time()),
            self.settings.ice_transport_policy,
        )

    async def _send_views(self, websocket: WebSocket, room_id: str, claims: Claims) -> None:
        """The role's view now, then again each time an event of the room changes it."""
        sent: RoomView | None = None
        async with contextlib.aclosing(self.followers.watch(room_id)) as states:
            async for state in states:
                view = view_for(state, claims.sub, claims.role, claims.name)
                if view != sent:
                    await send_message(websocket, ViewMessage(view))
                    sent = view

    async def _send_resume_tokens(self, websocket: WebSocket, claims: Claims) -> None:
        """A fresh resume token now, and again before each runs out, while the socket lives."""
        while (resume := self.verifier.resume_token(claims)) is not None:
            await send_message(websocket, ResumeMessage(resume))
            await asyncio.sleep(RESUME_TTL_S / 2)

    async def _release_talk(self, room_id: str, claims: Claims) -> None:
        try:
            await self.commands.handle(room_id, ReleaseTalk(), claims.actor())
        except EarpieceError as exc:  # the store is away: the worker's presence ends it later
            log.warning("live %s: could not release %s's talk: %s", room_id, claims.sub, exc)

    async def _serve_commands(
        self, websocket: WebSocket, room_id: str, claims: Claims, talk: PushToTalk
    ) -> None:
        actor = claims.actor()
        refused = 0
        while True:  # until the page goes: WebSocketDisconnect
            text = await receive_text(websocket)
            try:
                self.rates.commands.take(room_id, claims.sub)
            except RateLimited as exc:
                await send_message(websocket, ErrorMessage(error="rate_limited", detail=str(exc)))
                refused += 1
                if refused == REFUSALS_BEFORE_PAUSE:
                    # A flood: each refusal costs a read and a reply. Unread, the socket's
                    # buffers fill and hold the sender back, at no cost to anyone else.
                    await asyncio.sleep(PAUSE_S * random.uniform(0.5, 1.5))
                    refused = 0
                continue
            refused = 0
            if text is None:
                await send_message(websocket, NOT_TEXT)
                continue
            try:
                message = _command_decoder.decode(text)
            except msgspec.DecodeError as exc:
                await send_message(
                    websocket, ErrorMessage(error="invalid_message", detail=str(exc))
                )
                continue
            outcome = await self.commands.handle(room_id, message.command, actor)
            talk.follow(message.command, outcome)
            if isinstance(outcome, Rejection):
                reply: Ack | ErrorMessage = ErrorMessage(
                    error="rejected", detail=outcome.reason, id=message.id
                )
            else:
                accepted = isinstance(outcome, Accepted)
                reply = Ack(id=message.id, outcome="accepted" if accepted else "unchanged")
            await send_message(websocket, reply)
