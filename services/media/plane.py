"""The media plane of one worker process: its rooms, and the peer connections of their people.

Each participant has up to two sessions, one peer connection each: *publish* (their microphone,
a Producer of the room's Router) and *receive* (their ears, a Consumer with fixed slots). A
room lives in one worker, with its Router and the RouteReconciler that keeps the Router's
connections equal to what the room's events say. This module only sets connections up and
tears them down; who hears whom is never decided here.

A worker hosts a room only under the room's lease (events/room_leases.py), renewed every
``lease_renew_s``; what it writes about its sessions carries the lease's epoch. A room whose
lease another worker took (this one was paused or cut off past it) is dropped at once: its
sessions end without a word from here (the new owner and the sweep write what follows), and
their clients reconnect to the new owner. A room whose last session ends is not released: its
lease lapses by itself, so that a session coming back within ``lease_s`` keeps its epoch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import Any, Literal, NamedTuple

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.exceptions import InvalidAccessError, InvalidStateError
from aiortc.mediastreams import MediaStreamTrack
from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from events.errors import StoreUnavailable
from events.retry import Backoff
from events.room import LeaveReason, Role
from events.room_leases import Lease, RoomLeases
from events.store import RedisClient
from events.stream_reader import StreamReader
from projections.commands import Actor
from services.errors import BadOffer, RoomElsewhere, SessionReplaced
from services.media.opus_forwarding import tap_opus
from services.media.route_log import RouteLog
from services.media.route_reconciler import RouteReconciler
from services.media.router import Router, slot_names
from services.media.sdp import (
    OPUS_FMTP,
    OfferSummary,
    announce_address,
    check_offer,
    keep_candidates_from,
    only_opus,
    with_opus_fmtp,
    with_section_directions,
)
from services.settings import Settings

log = logging.getLogger(__name__)

ROOMS_LOST = Counter("earpiece_rooms_lost", "Rooms dropped because another worker took their lease")
ROOMS_TAKEN = Counter("earpiece_rooms_taken", "Rooms this worker took the lease of to host them")

Direction = Literal["publish", "receive"]


class Offer(NamedTuple):
    """An offer's SDP with what ``sdp.check_offer`` found in it: only ``MediaPlane.check``
    makes one."""

    sdp: str
    summary: OfferSummary


class Session:
    def __init__(
        self, room: MediaRoom, actor: Actor, direction: Direction, pc: RTCPeerConnection
    ) -> None:
        self.id = uuid.uuid4().hex
        self.room_id = room.room_id
        self.epoch = room.lease.epoch
        """The room lease it was opened under: what is written about it carries it."""
        self.actor = actor
        self.direction = direction
        self.pc = pc
        self.ended_because = LeaveReason.SESSION_ENDED
        """Why it ended, for the participant's leave if it was their last."""


class MediaRoom:
    def __init__(
        self,
        lease: Lease,
        reader: StreamReader,
        client: RedisClient,
        coach_slots: int,
        on_closed: Callable[[MediaRoom], Awaitable[None]],
    ) -> None:
        room_id = lease.room_id
        self.room_id = room_id
        self.lease = lease
        self._on_closed = on_closed
        self.router = Router(room_id, coach_slots=coach_slots)
        self.route_log = RouteLog(client, reader.store.keys, room_id)
        self.reconciler = RouteReconciler(room_id, reader, self.router, self.route_log)
        self.sessions: dict[str, Session] = {}
        self._task = asyncio.get_running_loop().create_task(self._follow())

    async def _follow(self) -> None:
        """Run the reconciler until the room is closed, through any failure to follow it: while
        it cannot follow (Redis away, an entry it cannot read), no coach is heard."""
        backoff = Backoff()
        while True:
            started = time.monotonic()
            try:
                await self.reconciler.run()
            except Exception as exc:
                if time.monotonic() - started > 10:  # it followed the room for a while
                    backoff.reset()
                if isinstance(exc, StoreUnavailable):
                    log.warning(
                        "room %s: coaches silenced, following paused: %s", self.room_id, exc
                    )
                else:  # a MalformedEvent (a newer schema mid-upgrade, say), or a bug
                    log.exception("room %s: coaches silenced, cannot follow it", self.room_id)
                self.reconciler.fail_closed(f"{type(exc).__name__}: {exc}")
                await backoff.wait()
                continue
            await self._on_closed(self)  # the room was closed: hang up everyone
            return

    def session_of(self, subject: str, direction: Direction) -> Session | None:
        matching = (
            s
            for s in self.sessions.values()
            if (s.actor.subject, s.direction) == (subject, direction)
        )
        return next(matching, None)

    async def stop(self) -> None:
        if self._task is not asyncio.current_task():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        sessions, self.sessions = list(self.sessions.values()), {}
        await asyncio.gather(*(session.pc.close() for session in sessions))
        await self.route_log.flush()


class MediaPlane:
    def __init__(
        self,
        settings: Settings,
        reader: StreamReader,
        client: RedisClient,
        worker_id: str,
        on_session_lost: Callable[[Session], None] | None = None,
    ) -> None:
        self.settings = settings
        self.reader = reader
        self.client = client
        self.worker_id = worker_id
        self.leases = RoomLeases(client, reader.store.keys, lease_s=settings.lease_s)
        self.rooms: dict[str, MediaRoom] = {}
        self.on_session_lost = on_session_lost
        self.on_room_taken: Callable[[Lease], Awaitable[None]] | None = None
        """Told of each room this worker takes to host, before any session of it."""
        self._networks = settings.allowed_networks()
        self._expiries: set[asyncio.Task[None]] = set()
        # Weak: a participant's lock lives only while one of their offers is being answered.
        self._setups: weakref.WeakValueDictionary[tuple[str, str, Direction], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    async def host(self, room_id: str) -> MediaRoom:
        """The room, hosted here under its lease; RoomElsewhere if another worker holds it."""
        room = self.rooms.get(room_id)
        if room is not None:
            return room
        lease = await self.leases.acquire(room_id, self.worker_id)
        if lease.worker != self.worker_id:
            raise RoomElsewhere(lease)
        if self.on_room_taken is not None:
            await self.on_room_taken(lease)
        room = self.rooms.get(room_id)  # made by another request while this one waited
        if room is None:
            ROOMS_TAKEN.inc()
            room = self.rooms[room_id] = MediaRoom(
                lease, self.reader, self.client, self.settings.coach_slots, self._closed
            )
        return room

    async def keep_leases(self) -> None:
        """Renew the lease of every hosted room each ``lease_renew_s``, until cancelled; drop
        at once a room whose lease another worker took."""
        while True:
            await asyncio.sleep(self.settings.lease_renew_s)
            rooms = list(self.rooms.values())
            try:
                lost = await self.leases.renew([room.lease for room in rooms])
            except StoreUnavailable as exc:  # renewed next time, unless another takes them
                log.warning("room leases not renewed: %s", exc)
                continue
            for lease in lost:
                room = self.rooms.get(lease.room_id)
                if room is None or room.lease != lease:
                    continue  # closed, or hosted again, meanwhile
                log.warning(
                    "room %s: another worker holds its lease now (epoch %d was ours); "
                    "dropping its sessions here",
                    lease.room_id,
                    lease.epoch,
                )
                ROOMS_LOST.inc()
                del self.rooms[lease.room_id]
                await room.stop()

    def receive_slots(self, role: Role) -> int:
        return len(slot_names(role, self.settings.coach_slots))

    def check(self, sdp: str, role: Role, direction: Direction) -> Offer:
        """``sdp`` as an offer this plane accepts from ``role``; BadOffer if it is not one.

        Checked once, before anything is stored, and then handed to ``publish``/``receive``.
        """
        sections = 1 if direction == "publish" else self.receive_slots(role)
        return Offer(sdp, check_offer(sdp, max_audio_sections=sections, direction=direction))

    @contextlib.asynccontextmanager
    async def one_setup(
        self, room_id: str, subject: str, direction: Direction
    ) -> AsyncIterator[None]:
        """Set up ``subject``'s sessions in ``direction`` one at a time, in order: each
        ``publish`` or ``receive`` ends the session it replaces, and two at once would both
        stay. A newer offer waits for the one being answered, then replaces it (a page that
        reconnects means its latest offer); the session rate keeps the queue short."""
        setup = (room_id, subject, direction)
        async with self._setups.setdefault(setup, asyncio.Lock()):
            yield

    async def publish(self, room_id: str, actor: Actor, offer: Offer) -> tuple[Session, str]:
        """A peer connection taking ``actor``'s microphone; returns it and the SDP answer."""
        room, session = await self._replace(room_id, actor, "publish")
        producer = room.reconciler.add_producer(actor.subject, actor.role)

        @session.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            receiver = next(r for r in session.pc.getReceivers() if r.track is track)
            tap_opus(receiver, producer.deliver)

        await self._set_offer(session, offer.sdp)
        return session, await self._answer(session)

    async def receive(self, room_id: str, actor: Actor, offer: Offer) -> tuple[Session, str]:
        """A peer connection sending ``actor`` what the router routes to them."""
        room, session = await self._replace(room_id, actor, "receive")
        consumer = room.reconciler.add_consumer(actor.subject, actor.role)
        await self._set_offer(session, offer.sdp)
        # Slots in their fixed order, one per offered section: the client's first m-line is
        # the first slot. The tracks stay for the whole session; routing only feeds them.
        async with self._translated(session):  # a newer session of theirs may have closed it
            for track in list(consumer.tracks.values())[: offer.summary.audio_sections]:
                session.pc.addTrack(track)
        return session, await self._answer(session)

    async def end(self, session: Session) -> None:
        room = self.rooms.get(session.room_id)
        if room is None or room.sessions.get(session.id) is not session:
            return
        del room.sessions[session.id]
        if session.direction == "publish":
            room.reconciler.remove_producer(session.actor.subject)
        else:
            room.reconciler.remove_consumer(session.actor.subject)
        await session.pc.close()
        if not room.sessions and self.rooms.get(session.room_id) is room:
            del self.rooms[session.room_id]
            await room.stop()

    async def _closed(self, room: MediaRoom) -> None:
        if self.rooms.get(room.room_id) is room:
            del self.rooms[room.room_id]
        await room.stop()

    async def close(self) -> None:
        for expiry in self._expiries:
            expiry.cancel()
        rooms, self.rooms = list(self.rooms.values()), {}
        await asyncio.gather(*(room.stop() for room in rooms))
        for room in rooms:  # the process is going: what Redis has not taken by now is lost
            room.route_log.close()
            with contextlib.suppress(StoreUnavailable):  # else it lapses in lease_s
                await self.leases.release(room.lease)  # the next session places it at once

    async def _replace(
        self, room_id: str, actor: Actor, direction: Direction
    ) -> tuple[MediaRoom, Session]:
        """A new session, and its room; one the same participant had in this direction is
        ended first (which stops the room if it was the last: the session joins a new one)."""
        previous = (await self.host(room_id)).session_of(actor.subject, direction)
        if previous is not None:
            await self.end(previous)
        room = await self.host(room_id)
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        session = Session(room, actor, direction, pc)
        room.sessions[session.id] = session

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await self._lose(session, f"connection {pc.connectionState}")

        self._expire(self._expire_unconnected(session))
        return room, session

    @contextlib.asynccontextmanager
    async def _translated(self, session: Session) -> AsyncIterator[None]:
        """aiortc's refusals as ours: the offer's fault (BadOffer), or the session ended while
        it was being set up (SessionReplaced); the session is ended either way."""
        try:
            yield
        except (InvalidAccessError, ValueError, KeyError, IndexError) as exc:
            await self.end(session)
            raise BadOffer(f"offer refused by the media server: {exc}") from exc
        except InvalidStateError as exc:
            await self.end(session)
            raise SessionReplaced(
                "this session ended while it was being set up: a newer one of yours replaced it"
            ) from exc

    def end_at(self, session: Session, deadline: float, reason: LeaveReason) -> None:
        """End ``session`` at ``deadline`` (a Unix time) for ``reason``: its credentials end."""

        async def end_then() -> None:
            await asyncio.sleep(max(0.0, deadline - time.time()))
            session.ended_because = reason
            await self._lose(session, f"{reason} at {deadline:.0f}")

        self._expire(end_then())

    def _expire(self, expiry: Coroutine[Any, Any, None]) -> None:
        """Run a session's expiry in the background; ``close`` cancels those still waiting."""
        task = asyncio.get_running_loop().create_task(expiry)
        self._expiries.add(task)
        task.add_done_callback(self._expiries.discard)

    async def _expire_unconnected(self, session: Session) -> None:
        """A session whose client never connects must not hold the participant's seat."""
        await asyncio.sleep(self.settings.connect_timeout_s)
        if session.pc.connectionState != "connected":
            await self._lose(session, f"not connected after {self.settings.connect_timeout_s} s")

    async def _lose(self, session: Session, why: str) -> None:
        room = self.rooms.get(session.room_id)
        if room is None or session.id not in room.sessions:
            return  # already ended
        log.info("session %s of %s: %s", session.id, session.actor.subject, why)
        await self.end(session)
        if self.on_session_lost is not None:
            self.on_session_lost(session)

    async def _set_offer(self, session: Session, offer: str) -> None:
        offer = with_section_directions(keep_candidates_from(offer, self._networks))
        async with self._translated(session):
            await session.pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))

    async def _answer(self, session: Session) -> str:
        async with self._translated(session):
            await session.pc.setLocalDescription(await session.pc.createAnswer())
        answer = with_opus_fmtp(only_opus(session.pc.localDescription.sdp), OPUS_FMTP)
        announced = self.settings.ice_announced_address
        if announced is not None:
            answer = announce_address(
                answer, listen=self.settings.ice_addresses[0], announced=announced
            )
        return answer


class PlaneMetrics(Collector):
    """Prometheus's view of a media plane at each scrape: rooms hosted, sessions by direction."""

    def __init__(self, plane: MediaPlane) -> None:
        self.plane = plane

    def collect(self) -> Iterator[Metric]:
        rooms = self.plane.rooms.values()
        yield GaugeMetricFamily("earpiece_rooms", "Rooms this worker hosts", len(rooms))
        sessions = GaugeMetricFamily(
            "earpiece_sessions", "WebRTC sessions this worker hosts", labels=["direction"]
        )
        for direction in ("publish", "receive"):
            count = sum(s.direction == direction for room in rooms for s in room.sessions.values())
            sessions.add_metric([direction], count)
        yield sessions
