"""The HTTP face of Earpiece (Starlette): commands in, WHIP/WHEP signaling, audit out.

Every route but ``/healthz``, ``/livez`` and ``/metrics`` (its own scrape token) needs
``Authorization: Bearer <token>`` for the room in its path; errors are answered as
``services/web/http.py`` describes.
"""

from __future__ import annotations

import contextlib
import functools
import hmac
from collections.abc import AsyncIterator

import httpx
import msgspec
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute

from events.errors import EarpieceError, StoreUnavailable
from events.keys import KeySpace
from events.room import Role
from events.store import EventStore, RedisClient
from events.stream_reader import StreamReader
from projections.audit import timeline_of, verify_against_stream
from projections.commands import RoomCommand
from projections.decider import Rejection
from services.auth import verifier_from_settings
from services.errors import (
    AccessDenied,
    CommandRejected,
    InvalidCommand,
    InvalidJson,
    NotFound,
    TokenRefused,
)
from services.media.plane import MediaPlane, PlaneMetrics
from services.media.route_log import RouteLog
from services.redis_clients import dedicated_client
from services.settings import Settings
from services.streams.audit_trail import AuditTrail, run_audit_projection
from services.streams.command_handler import Accepted, CommandHandler
from services.streams.feed_trimming import trim_feeds
from services.streams.lobby import Lobby, LobbyChanges, run_lobby
from services.streams.presence import Presence, new_worker_id
from services.streams.room_followers import RoomFollowers
from services.streams.room_states import RoomStates
from services.streams.workers import Workers
from services.web import pages
from services.web.http import (
    authenticate,
    bounded_body,
    error_response,
    header_id,
    json_response,
    room_id_of,
    starlette_error,
)
from services.web.live_channel import LiveChannel
from services.web.lobby_socket import LobbySocket, check_lobby_access
from services.web.rate_limits import Rates
from services.web.signaling import Signaling

_command_decoder = msgspec.json.Decoder(RoomCommand)


class Api:
    def __init__(self, settings: Settings, client: RedisClient, worker_id: str) -> None:
        self.settings = settings
        self.client = client
        self.store = EventStore(
            client,
            KeySpace(settings.namespace, settings.partitions),
            wait_replicas=settings.redis_wait_replicas,
            wait_timeout_ms=settings.redis_wait_replicas_ms,
        )
        self.states = RoomStates(self.store, snapshot_every=settings.snapshot_every)
        self.commands = CommandHandler(self.store, self.states)
        self.audit = AuditTrail(self.store)
        self.lobby = Lobby(self.store, self.states)
        self.presence = Presence(
            client,
            self.store.keys,
            self.commands,
            self.states,
            worker_id=worker_id,
            url=settings.own_url,
        )
        self.commands.on_join_without_session = self.presence.expect_session
        self.verifier = verifier_from_settings(settings, queue_of=self.queue_of)
        self.rates = Rates(settings)
        self.workers = Workers()
        """The projections and watchers running beside the app, restarted if they fail."""
        self.metrics_registry = CollectorRegistry()
        """This app's own metrics, beside the process's counters."""

    async def queue_of(self, room_id: str) -> str:
        return (await self.states.current(room_id)).queue

    async def healthz(self, request: Request) -> Response:
        """200 while Redis answers; restarted workers are named, with how often. A worker that
        fails is started again, so a liveness probe need never restart the process for it."""
        try:
            await self.client.ping()
        except RedisError as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
        restarts = self.workers.restarts
        return json_response(
            {"status": "ok", "restarts": restarts} if restarts else {"status": "ok"}
        )

    async def metrics(self, request: Request) -> Response:
        """The process's metrics in Prometheus's text format, for the scraper's token only."""
        if self.settings.metrics_token is None:
            raise NotFound("metrics are off: set EARPIECE_METRICS_TOKEN")
        given = request.headers.get("authorization", "").removeprefix("Bearer ")
        if not hmac.compare_digest(given.encode(), self.settings.metrics_token.encode()):
            raise TokenRefused("send Authorization: Bearer <EARPIECE_METRICS_TOKEN>")
        body = generate_latest(REGISTRY) + generate_latest(self.metrics_registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def livez(self, request: Request) -> Response:
        """200 while the worker's event loop answers, whatever Redis does: a liveness probe on
        it never restarts a worker for a Redis blip (``/healthz`` is its readiness)."""
        return json_response({"status": "ok"})

    async def post_command(self, request: Request) -> Response:
        room_id = room_id_of(request)
        claims = await authenticate(self.verifier, request, room_id)
        self.rates.commands.take(room_id, claims.sub)
        settings = self.settings
        body = await bounded_body(request, settings.max_command_bytes, settings.head_timeout_s)
        try:
            command = _command_decoder.decode(body)
        except msgspec.ValidationError as exc:
            raise InvalidCommand(str(exc)) from exc
        except msgspec.DecodeError as exc:
            raise InvalidJson(str(exc)) from exc
        outcome = await self.commands.handle(
            room_id,
            command,
            claims.actor(),
            idempotency_key=header_id(request, "idempotency-key"),
            correlation_id=header_id(request, "x-correlation-id"),
        )
        if isinstance(outcome, Rejection):
            raise CommandRejected(outcome.reason)
        status = 201 if isinstance(outcome, Accepted) else 200
        if claims.role is Role.CUSTOMER:
            # Versions count every event of the room, supervisors' included: not for customers.
            return json_response({}, status)
        return json_response(outcome, status)

    async def get_lobby(self, request: Request) -> Response:
        claims = await authenticate(self.verifier, request, None)
        check_lobby_access(claims)
        return json_response({"rooms": await self.lobby.rooms(claims.queues)})

    async def get_audit(self, request: Request) -> Response:
        room_id = room_id_of(request)
        claims = await authenticate(self.verifier, request, room_id)
        if claims.role is not Role.SUPERVISOR:
            raise AccessDenied(f"only supervisors may read the audit log, not the {claims.role}")
        records = await self.audit.records(room_id)
        if not records:
            raise NotFound(f"room {room_id!r} has no audit records (yet)")
        envelopes = [envelope async for envelope in self.store.read_all(room_id)]
        routes = await RouteLog(self.client, self.store.keys, room_id).read()
        return json_response(
            {
                "verification": verify_against_stream(records, envelopes),
                "timeline": timeline_of(records),
                "routes": routes,
            }
        )


def create_app(settings: Settings, client: RedisClient, worker_id: str | None = None) -> Starlette:
    """The app of one worker; ``client`` is its pool of short requests (redis_clients.py)."""
    worker_id = worker_id or new_worker_id()
    api = Api(settings, client, worker_id)

    def own(purpose: str, connections: int = 1) -> RedisClient:
        return dedicated_client(client, f"earpiece:{worker_id}:{purpose}", connections)

    partitions = settings.partitions
    blocking = [own("reader", partitions), own("audit", partitions), own("lobby", partitions)]
    blocking.append(own("changes"))
    reader_client, audit_client, lobby_client, changes_client = blocking
    reader = StreamReader(api.store, reader_client)
    media = MediaPlane(settings, reader, client, worker_id)
    api.presence.load = lambda: len(media.rooms)
    api.metrics_registry.register(PlaneMetrics(media))
    # WHIP/WHEP of rooms hosted elsewhere go on to their worker, which may take a while to answer.
    forwarding = httpx.AsyncClient(timeout=settings.connect_timeout_s)
    signaling = Signaling(media, api.commands, api.verifier, api.presence, api.rates, forwarding)
    followers = RoomFollowers(reader, api.states)
    live = LiveChannel(api.store, followers, api.commands, api.verifier, api.rates, settings)
    lobby_changes = LobbyChanges(api.lobby, changes_client)
    lobby_socket = LobbySocket(lobby_changes, api.verifier, api.rates)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        consumer = worker_id  # one identity per worker, for groups, leases and connections
        for own_client in blocking:  # a cluster's client learns its slots before any use
            await own_client.initialize()
        await api.presence.start()  # before any session: its lease holds them
        workers = api.workers
        workers.start("presence", api.presence.run)
        workers.start("room leases", media.keep_leases)
        workers.start(
            "audit projection",
            functools.partial(run_audit_projection, audit_client, api.store, consumer=consumer),
        )
        workers.start(
            "lobby projection",
            functools.partial(run_lobby, lobby_client, api.lobby, consumer=consumer),
        )
        workers.start("lobby changes", lobby_changes.run)
        workers.start(
            "feed trimming",
            functools.partial(trim_feeds, client, api.store.keys, settings.feed_retention_s),
        )
        try:
            yield
        finally:
            await api.presence.stop()
            await media.close()
            await followers.close()
            await reader.close()
            await workers.close()
            for own_client in blocking:
                await own_client.aclose()
            await forwarding.aclose()

    app = Starlette(
        routes=[
            Route("/healthz", api.healthz),
            Route("/livez", api.livez),
            Route("/metrics", api.metrics),
            Route("/lobby", api.get_lobby),
            Route("/rooms/{room_id}/commands", api.post_command, methods=["POST"]),
            Route("/rooms/{room_id}/audit", api.get_audit),
            *signaling.routes(),
            WebSocketRoute("/rooms/{room_id}/live", live.endpoint),
            WebSocketRoute("/lobby/live", lobby_socket.endpoint),
            *pages.routes(),
        ],
        exception_handlers={EarpieceError: error_response, HTTPException: starlette_error},
        lifespan=lifespan,
    )
    app.state.api = api
    app.state.media = media
    return app
