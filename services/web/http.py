"""What every HTTP route shares: JSON errors, bearer authentication, bounded bodies.

Errors are JSON ``{"error": <code>, "detail": <sentence>}`` with a fitting status:

    400 invalid_json / invalid_room / bad_offer   401 unauthorized   403 forbidden
    404 not_found      409 rejected / conflict    413 too_large      415 unsupported_media_type
    422 invalid_command / idempotency_key_reused  503 unavailable
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from events.errors import InvalidRoomId
from events.keys import check_room_id
from services.auth import AuthError, Claims, TokenVerifier

_encoder = msgspec.json.Encoder()


class ApiError(HTTPException):
    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(status, detail)
        self.error = error


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_encoder.encode(body), status, headers, media_type="application/json")


async def authenticate(verifier: TokenVerifier, request: Request, room_id: str | None) -> Claims:
    """The verified claims of the request's bearer token, which must be good for ``room_id``
    (None: for any room, as the supervisors' lobby asks)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthorized", "send Authorization: Bearer <token>")
    try:
        if room_id is None:
            return await verifier.claims_async(token.strip())
        return await verifier.verify_async(token.strip(), room_id)
    except AuthError as exc:
        error = {403: "forbidden", 503: "unavailable"}.get(exc.status, "unauthorized")
        raise ApiError(exc.status, error, exc.reason) from exc


def room_id_of(request: Request) -> str:
    room_id: str = request.path_params["room_id"]
    try:
        return check_room_id(room_id)
    except InvalidRoomId as exc:
        raise ApiError(400, "invalid_room", str(exc)) from exc


async def bounded_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "too_large", f"body of {declared} bytes is over {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, "too_large", f"body is over {limit} bytes")
    return bytes(body)


async def http_error(request: Request, exc: Exception) -> Response:
    error = exc.error if isinstance(exc, ApiError) else "http"
    detail = exc.detail if isinstance(exc, HTTPException) else str(exc)
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    return json_response({"error": error, "detail": detail}, status)


async def store_unavailable(request: Request, exc: Exception) -> Response:
    return json_response({"error": "unavailable", "detail": str(exc)}, 503)
