"""WHIP (RFC 9725) to publish a microphone, WHEP-style to receive: HTTP in front of MediaPlane.

    POST   /rooms/{room}/whip          application/sdp offer → 201, Location, SDP answer
    DELETE /rooms/{room}/whip/{id}     ends that session
    POST   /rooms/{room}/whep          recvonly offer → 201, Location, SDP answer
    DELETE /rooms/{room}/whep/{id}

Either POST makes the token's subject join the room through this worker (``AttachSession``:
an event, decided like any other, so a second agent or a closed room is refused with 409); when
the last session of a participant ends, by DELETE or because its connection failed, they leave
(``session_ended``). Fail closed: a coach is heard only through a live publish session and a
whisper asked for during it, so a supervisor's new publish session, or the end of one, stops
their whisper (they stay in silent monitor while they still receive). What a
receiving participant gets is decided by their role and the room's state, never by the offer:
the offer only says how many receive slots to open, up to what the role has.
"""

from __future__ import annotations

import asyncio
import logging

import httpx
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from events.errors import Fenced, StoreUnavailable
from events.room import LeaveReason, Role
from events.room_leases import Lease
from projections.commands import (
    Actor,
    AttachSession,
    EndPresence,
    RoomCommand,
    SessionCommand,
    StopWhisper,
)
from projections.decider import Rejection
from services.auth import TokenVerifier
from services.errors import (
    BadOffer,
    CommandRejected,
    MethodNotAllowed,
    NotFound,
    RoomElsewhere,
    UnsupportedMediaType,
)
from services.media.plane import Direction, MediaPlane, Offer, Session
from services.media.sdp import MAX_SDP_BYTES
from services.streams.command_handler import Accepted, CommandHandler
from services.streams.presence import Presence
from services.web.http import authenticate, bounded_body, room_id_of
from services.web.rate_limits import Rates

log = logging.getLogger(__name__)

PATHS: dict[Direction, str] = {"publish": "whip", "receive": "whep"}
FORWARDED_BY = "x-earpiece-forwarded-by"
"""Set on a request one worker forwards to another: the room's host, which answers it itself."""
DIRECTIONS: dict[str, Direction] = {path: direction for direction, path in PATHS.items()}


class Signaling:
    def __init__(
        self,
        media: MediaPlane,
        commands: CommandHandler,
        verifier: TokenVerifier,
        presence: Presence,
        rates: Rates,
        forwarding: httpx.AsyncClient,
    ) -> None:
        self.media = media
        self.forwarding = forwarding
        self.rates = rates
        self.commands = commands
        self.verifier = verifier
        self.presence = presence
        presence.on_lease_lost = self.attach_again
        self._leaving: set[asyncio.Task[None]] = set()
        media.on_session_lost = self._session_lost
        media.on_room_taken = self._take_over

    def routes(self) -> list[Route]:
        starts = {"publish": self.publish, "receive": self.receive}
        return [
            route
            for direction, path in PATHS.items()
            for route in (
                Route(f"/rooms/{{room_id}}/{path}", starts[direction], methods=["POST"]),
                Route(f"/rooms/{{room_id}}/{path}/{{session_id}}", self.stop, methods=["DELETE"]),
                Route(f"/rooms/{{room_id}}/{path}/{{session_id}}", _no_trickle, methods=["PATCH"]),
            )
        ]

    async def publish(self, request: Request) -> Response:
        return await self.start(request, "publish")

    async def receive(self, request: Request) -> Response:
        return await self.start(request, "receive")

    async def start(self, request: Request, direction: Direction) -> Response:
        room_id = room_id_of(request)
        claims = await authenticate(self.verifier, request, room_id)
        self.rates.sessions.take(room_id, claims.sub)
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/sdp":
            raise UnsupportedMediaType("send the offer as application/sdp")
        body = await bounded_body(request, MAX_SDP_BYTES, self.media.settings.head_timeout_s)
        try:
            offer = body.decode()
        except UnicodeDecodeError as exc:
            raise BadOffer("the offer is not UTF-8 text") from exc
        actor = claims.actor()
        # A bad offer is refused before the join, so that it leaves no event in the room.
        checked = self.media.check(offer, actor.role, direction)
        host = await self._host_of(room_id, forwarded=FORWARDED_BY in request.headers)
        if host != self.presence.worker_id:
            return await self._forward(request, body, host)
        async with self.media.one_setup(room_id, actor.subject, direction):
            try:
                session, answer = await self._set_up(room_id, actor, direction, checked)
            except RoomElsewhere as elsewhere:  # another worker took it since
                return await self._forward(request, body, elsewhere.lease.worker)
        if actor.role is Role.SUPERVISOR:  # monitoring ends with the right to monitor
            self.media.end_at(session, claims.exp, LeaveReason.CREDENTIALS_EXPIRED)
            if direction == "publish":  # a whisper asked for before this session: not now
                await self.commands.handle(room_id, StopWhisper(), actor, epoch=session.epoch)
        location = f"/rooms/{room_id}/{PATHS[direction]}/{session.id}"
        return Response(answer, 201, {"Location": location}, "application/sdp")

    async def _set_up(
        self, room_id: str, actor: Actor, direction: Direction, offer: Offer
    ) -> tuple[Session, str]:
        room = await self.media.host(room_id)
        await self.presence.hold(room_id)
        attach = AttachSession(worker=self.presence.worker_id)
        joined = await self._command(room_id, attach, actor, epoch=room.lease.epoch)
        start = self.media.publish if direction == "publish" else self.media.receive
        try:
            return await start(room_id, actor, offer)
        except BadOffer:
            if joined:  # undo only the join this request made, not one made by a command
                await self._leave_if_gone(room_id, actor, direction, room.lease.epoch)
            raise

    async def stop(self, request: Request) -> Response:
        room_id = room_id_of(request)
        claims = await authenticate(self.verifier, request, room_id)
        room = self.media.rooms.get(room_id)
        session = room.sessions.get(request.path_params["session_id"]) if room else None
        direction = DIRECTIONS[request.url.path.split("/")[3]]  # /rooms/{room}/whip/{id}
        if session is None and room is None:
            owner = await self.media.leases.owner(room_id)
            if owner is not None and owner.worker != self.presence.worker_id:
                return await self._forward(request, b"", owner.worker)
        if session is None or (session.actor.subject, session.direction) != (claims.sub, direction):
            raise NotFound("no such session of yours in this room")
        await self.media.end(session)
        await self._leave_if_gone(room_id, claims.actor(), direction, session.epoch)
        return Response(status_code=200)

    async def _host_of(self, room_id: str, *, forwarded: bool) -> str:
        """The worker that hosts ``room_id``, or is to: the least loaded if none does (this
        one, for a request another worker placed here)."""
        if room_id in self.media.rooms:
            return self.presence.worker_id
        owner = await self.media.leases.owner(room_id)
        if owner is not None:
            return owner.worker
        return self.presence.worker_id if forwarded else await self.presence.least_loaded()

    async def _forward(self, request: Request, body: bytes, worker: str) -> Response:
        """``request`` answered by ``worker``, the room's host; one hop only, so that workers
        that disagree about a room (it is moving) answer 503 rather than pass it around."""
        if FORWARDED_BY in request.headers:
            room_id = request.path_params["room_id"]
            raise RoomElsewhere(await self.media.leases.owner(room_id) or Lease(room_id, worker, 0))
        info = (await self.presence.live_workers()).get(worker)
        if info is None:
            raise StoreUnavailable(f"worker {worker}, which hosts the room, is not live")
        headers = {
            name: value
            for name, value in request.headers.items()
            if name in ("authorization", "content-type")
        }
        try:
            answer = await self.forwarding.request(
                request.method,
                info.url + request.url.path,
                content=body,
                headers={**headers, FORWARDED_BY: self.presence.worker_id},
            )
        except httpx.HTTPError as exc:
            raise StoreUnavailable(f"worker {worker}, which hosts the room: {exc}") from exc
        kept = {
            name: value
            for name, value in answer.headers.items()
            if name in ("content-type", "location", "retry-after")
        }
        return Response(answer.content, answer.status_code, kept)

    async def attach_again(self) -> None:
        """Attach every live session again (this worker's lease had lapsed, and another may
        have ended the presences it held): its people rejoin, coaches in silent monitor."""
        for room_id, room in list(self.media.rooms.items()):
            await self.presence.hold(room_id)
            actors = {s.actor.subject: s.actor for s in room.sessions.values()}
            for actor in actors.values():
                attach = AttachSession(worker=self.presence.worker_id)
                try:
                    await self.commands.handle(room_id, attach, actor, epoch=room.lease.epoch)
                except Fenced as exc:  # the room is another worker's now: dropped here soon
                    log.warning("%s not attached again in %s: %s", actor.subject, room_id, exc)
                    break

    async def _command(
        self, room_id: str, command: RoomCommand | SessionCommand, actor: Actor, *, epoch: int
    ) -> bool:
        """Whether ``command`` stored events (False: it changed nothing); 409 if rejected."""
        outcome = await self.commands.handle(room_id, command, actor, epoch=epoch)
        if isinstance(outcome, Rejection):
            raise CommandRejected(outcome.reason)
        return isinstance(outcome, Accepted)

    async def _leave_if_gone(
        self,
        room_id: str,
        actor: Actor,
        ended: Direction,
        epoch: int,
        reason: LeaveReason = LeaveReason.SESSION_ENDED,
    ) -> None:
        """The participant leaves once none of their sessions is left in the room; a coach
        whose publish session ended stops whispering (silent monitor, while they receive).
        Written under the ``epoch`` the session was opened in: refused (and only logged) if
        another worker took the room since, which ends what this one held there."""
        room = self.media.rooms.get(room_id)
        sessions = room.sessions.values() if room is not None else ()
        if not any(s.actor.subject == actor.subject for s in sessions):
            command: RoomCommand | SessionCommand = EndPresence(
                subject=actor.subject,
                reason=reason,
                worker=self.presence.worker_id,
            )
        elif ended == "publish" and actor.role is Role.SUPERVISOR:
            command = StopWhisper()
        else:
            return
        try:
            outcome = await self.commands.handle(room_id, command, actor, epoch=epoch)
        except Fenced as exc:
            log.warning("%s's session ended in %s, but %s", actor.subject, room_id, exc)
            return
        if isinstance(outcome, Rejection):
            log.info("%s could not leave %s: %s", actor.subject, room_id, outcome.reason)

    async def _take_over(self, lease: Lease) -> None:
        await self.presence.take_over(lease.room_id, lease.epoch)

    def _session_lost(self, session: Session) -> None:
        leave = self._leave_if_gone(
            session.room_id, session.actor, session.direction, session.epoch, session.ended_because
        )
        task = asyncio.get_running_loop().create_task(leave)
        self._leaving.add(task)
        task.add_done_callback(self._leaving.discard)


async def _no_trickle(request: Request) -> Response:
    raise MethodNotAllowed("no trickle ICE: the answer carries every candidate")
