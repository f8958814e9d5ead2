"""What every HTTP route shares: bearer authentication, bounded bodies, JSON errors.

Errors are JSON ``{"error": <code>, "detail": <sentence>}``, with the status and code that
``services.errors.answer_for`` gives the error raised (the tree in services/errors.py).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from typing import Any

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from events.keys import check_room_id
from services.auth import Claims, TokenVerifier
from services.errors import (
    INTERNAL,
    ClientGone,
    InvalidHeader,
    RateLimited,
    RequestTimeout,
    TokenRefused,
    TooLarge,
    answer_for,
)
from services.logs import log_about

log = logging.getLogger(__name__)

_encoder = msgspec.json.Encoder()


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_encoder.encode(body), status, headers, media_type="application/json")


async def authenticate(verifier: TokenVerifier, request: Request, room_id: str | None) -> Claims:
    """The verified claims of the request's bearer token, which must be good for ``room_id``
    (None: for any room, as the supervisors' lobby asks)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TokenRefused("send Authorization: Bearer <token>")
    if room_id is None:
        claims = await verifier.claims_async(token.strip())
    else:
        claims = await verifier.verify_async(token.strip(), room_id)
    log_about(
        room=room_id, subject=claims.sub, correlation_id=header_id(request, "x-correlation-id")
    )
    return claims


def room_id_of(request: Request) -> str:
    room_id: str = request.path_params["room_id"]
    return check_room_id(room_id)


async def bounded_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The request's body: TooLarge past ``limit`` bytes, RequestTimeout if it takes longer
    than ``timeout_s`` to arrive (a body sent a byte at a time holds a connection)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"body of {declared} bytes is over {limit}")
    body = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise TooLarge(f"body is over {limit} bytes")
    except ClientDisconnect as exc:
        raise ClientGone("the client went away before its request's body was in") from exc
    except TimeoutError as exc:
        raise RequestTimeout(f"the body took over {timeout_s:g} s to arrive") from exc
    return bytes(body)


HEADER_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
"""What an id a client sends in a header may be (it is stored with every event it causes)."""


def header_id(request: Request, name: str) -> str | None:
    """The id in header ``name``, if sent; InvalidHeader unless it matches ``HEADER_ID``."""
    value = request.headers.get(name)
    if value is not None and not HEADER_ID.fullmatch(value):
        raise InvalidHeader(f"{name}: use 1-128 characters from A-Z a-z 0-9 . _ : -")
    return value


async def error_response(request: Request, exc: Exception) -> Response:
    """The JSON answer for an error of ours (services/errors.py says which)."""
    answer = answer_for(exc)
    if answer is INTERNAL:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    headers = None
    if isinstance(exc, RateLimited):
        headers = {"Retry-After": str(math.ceil(exc.retry_after_s))}
    return json_response({"error": answer.error, "detail": str(exc)}, answer.status, headers)


_STARLETTE_ERRORS = {404: "not_found", 405: "method_not_allowed"}


async def starlette_error(request: Request, exc: Exception) -> Response:
    """Starlette's own HTTPException (no route for a path or a method), in the same shape."""
    if not isinstance(exc, HTTPException):
        return await error_response(request, exc)
    error = _STARLETTE_ERRORS.get(exc.status_code, "http")
    return json_response({"error": error, "detail": exc.detail}, exc.status_code)
