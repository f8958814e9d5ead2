"""The HTTP face of Earpiece (Starlette): commands in, audit out.

Every route but ``/healthz`` needs ``Authorization: Bearer <token>`` for the room in its path.
Errors are JSON ``{"error": <code>, "detail": <sentence>}`` with a fitting status:

    400 invalid_json / invalid_room      401 unauthorized     403 forbidden
    409 rejected / conflict              413 too_large        422 invalid_command
    503 unavailable
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import redis.asyncio as redis
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from events.errors import IdempotencyKeyReused, InvalidRoomId, StoreUnavailable
from events.keys import KeySpace, check_room_id
from events.room import Role
from events.store import EventStore
from projections.audit import timeline_of, verify
from projections.commands import RoomCommand
from projections.room import Rejection
from services.audit_trail import AuditTrail, run_audit_projection
from services.auth import AuthError, Claims, verifier_from_settings
from services.commands import Accepted, CommandHandler, Contention
from services.room_states import RoomStates
from services.settings import Settings

_command_decoder = msgspec.json.Decoder(RoomCommand)
_encoder = msgspec.json.Encoder()


class ApiError(HTTPException):
    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(status, detail)
        self.error = error


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_encoder.encode(body), status, headers, media_type="application/json")


class Api:
    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.settings = settings
        self.client = client
        self.store = EventStore(client, KeySpace(settings.namespace, settings.partitions))
        self.states = RoomStates(self.store, snapshot_every=settings.snapshot_every)
        self.commands = CommandHandler(self.store, self.states)
        self.audit = AuditTrail(self.store)
        self.verifier = verifier_from_settings(settings)

    async def authenticate(self, request: Request, room_id: str) -> Claims:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "unauthorized", "send Authorization: Bearer <token>")
        try:
            return await self.verifier.verify_async(token.strip(), room_id)
        except AuthError as exc:
            error = {403: "forbidden", 503: "unavailable"}.get(exc.status, "unauthorized")
            raise ApiError(exc.status, error, exc.reason) from exc

    async def healthz(self, request: Request) -> Response:
        try:
            await self.client.ping()
        except Exception as exc:
            raise ApiError(503, "unavailable", f"redis: {exc}") from exc
        return json_response({"status": "ok"})

    async def post_command(self, request: Request) -> Response:
        room_id = _room_id(request)
        claims = await self.authenticate(request, room_id)
        body = await _bounded_body(request, self.settings.max_command_bytes)
        try:
            command = _command_decoder.decode(body)
        except msgspec.ValidationError as exc:
            raise ApiError(422, "invalid_command", str(exc)) from exc
        except msgspec.DecodeError as exc:
            raise ApiError(400, "invalid_json", str(exc)) from exc
        try:
            outcome = await self.commands.handle(
                room_id,
                command,
                claims.actor(),
                idempotency_key=request.headers.get("idempotency-key"),
                correlation_id=request.headers.get("x-correlation-id"),
            )
        except IdempotencyKeyReused as exc:
            raise ApiError(422, "idempotency_key_reused", str(exc)) from exc
        except Contention as exc:
            raise ApiError(409, "conflict", str(exc)) from exc
        if isinstance(outcome, Rejection):
            raise ApiError(409, "rejected", outcome.reason)
        return json_response(outcome, 201 if isinstance(outcome, Accepted) else 200)

    async def get_audit(self, request: Request) -> Response:
        room_id = _room_id(request)
        claims = await self.authenticate(request, room_id)
        if claims.role is not Role.SUPERVISOR:
            raise ApiError(403, "forbidden", f"a {claims.role} may not read the audit log")
        records = await self.audit.records(room_id)
        return json_response({"verification": verify(records), "timeline": timeline_of(records)})


def _room_id(request: Request) -> str:
    room_id: str = request.path_params["room_id"]
    try:
        return check_room_id(room_id)
    except InvalidRoomId as exc:
        raise ApiError(400, "invalid_room", str(exc)) from exc


async def _bounded_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "too_large", f"body of {declared} bytes is over {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, "too_large", f"body is over {limit} bytes")
    return bytes(body)


async def _http_error(request: Request, exc: Exception) -> Response:
    error = exc.error if isinstance(exc, ApiError) else "http"
    detail = exc.detail if isinstance(exc, HTTPException) else str(exc)
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    return json_response({"error": error, "detail": detail}, status)


async def _store_unavailable(request: Request, exc: Exception) -> Response:
    return json_response({"error": "unavailable", "detail": str(exc)}, 503)


def create_app(
    settings: Settings, client: redis.Redis, *, run_projections: bool = True
) -> Starlette:
    api = Api(settings, client)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        consumer = f"{socket.gethostname()}-{os.getpid()}"
        projection = (
            asyncio.create_task(run_audit_projection(client, api.store, consumer=consumer))
            if run_projections
            else None
        )
        try:
            yield
        finally:
            if projection is not None:
                projection.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await projection

    app = Starlette(
        routes=[
            Route("/healthz", api.healthz),
            Route("/rooms/{room_id}/commands", api.post_command, methods=["POST"]),
            Route("/rooms/{room_id}/audit", api.get_audit),
        ],
        exception_handlers={HTTPException: _http_error, StoreUnavailable: _store_unavailable},
        lifespan=lifespan,
    )
    app.state.api = api
    return app
