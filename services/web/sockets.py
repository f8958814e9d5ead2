"""What the pages' WebSockets share: a token in the first message, JSON text frames, close codes.

Close codes, from ``services.errors.answer_for``: 4401 no, bad or expired token; 4403 a good
token that gives no access here; 4400 a room id that cannot exist; 4429 sockets opened too
often, or too many open at once; 1009 a message over the size limit (uvicorn's ``ws_max_size``);
1011 the event store or the token issuer is unavailable, so
reconnect. A socket is closed with 4401 when its token expires: a token is checked for its whole
life, not only at the start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import msgspec
from starlette.websockets import WebSocket, WebSocketDisconnect

from events.errors import EarpieceError, StoreUnavailable
from services.auth import Claims
from services.errors import TokenExpired, answer_for

log = logging.getLogger(__name__)

AUTH_TIMEOUT_S = 5.0
UNAUTHORIZED = 4401


class Auth(msgspec.Struct, frozen=True, tag="auth", forbid_unknown_fields=True):
    token: str


class ErrorMessage(msgspec.Struct, frozen=True, tag="error"):
    error: str
    detail: str
    id: str = ""


_auth_decoder = msgspec.json.Decoder(Auth)
_encoder = msgspec.json.Encoder()

NOT_TEXT = ErrorMessage(error="invalid_message", detail="send JSON in text frames, not binary ones")
SEND_AUTH_FIRST = 'send {"type": "auth", "token": "<jwt>"} first'


async def receive_text(websocket: WebSocket) -> str | None:
    """The next text frame, or None for a binary one; WebSocketDisconnect once closed."""
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
    text: str | None = message.get("text")
    return text


async def authenticate(
    websocket: WebSocket, verify: Callable[[str], Awaitable[Claims]]
) -> Claims | None:
    """The claims of the token in the socket's first message, or None once it is closed.

    ``verify`` checks the token for what the socket is for, raising AuthError if it may not
    (or another error of ours: the socket is closed with its code).
    """
    try:
        async with asyncio.timeout(AUTH_TIMEOUT_S):  # not wait_for: see services/streams/lobby.py
            first = await receive_text(websocket)
        auth = None if first is None else _auth_decoder.decode(first)
        if auth is None:  # a binary frame
            await websocket.close(UNAUTHORIZED, SEND_AUTH_FIRST)
            return None
        return await verify(auth.token)
    except (TimeoutError, msgspec.DecodeError):
        await websocket.close(UNAUTHORIZED, SEND_AUTH_FIRST)
    except EarpieceError as exc:
        await close_for(websocket, exc)
    except WebSocketDisconnect:
        pass
    return None


async def expire_after(seconds: float) -> None:
    """Raise TokenExpired in ``seconds``: run in the socket's task group, it stops the others
    before the endpoint closes the socket, so that nothing is sent after the close."""
    await asyncio.sleep(max(0.0, seconds))
    raise TokenExpired()


async def close_for(websocket: WebSocket, error: EarpieceError, reason: str = "") -> None:
    """Close the socket with the code that ``error`` is answered with, and ``reason`` (by
    default the error's sentence)."""
    code = answer_for(error).close_code or 1011  # none of its own: the server's, reconnect
    with contextlib.suppress(RuntimeError):  # the page went at the same moment
        await websocket.close(code, (reason or str(error))[:120])  # a reason holds 123 bytes


@contextlib.asynccontextmanager
async def closed_as_it_ends(websocket: WebSocket, log_as: str) -> AsyncIterator[None]:
    """Run a socket's work, then close it once with the code that says why it ended: nothing
    to do if the page went; else the code of the error that ended it (4401 if its token expired;
    1011, reconnect, if the store failed)."""
    try:
        yield
    except* WebSocketDisconnect:
        pass
    except* EarpieceError as failures:
        error = failures.exceptions[0]
        if isinstance(error, StoreUnavailable):
            log.warning("%s: %s", log_as, error)
            await close_for(websocket, error, "event store unavailable; reconnect")
        elif isinstance(error, EarpieceError):
            await close_for(websocket, error)


async def send_message(websocket: WebSocket, message: msgspec.Struct) -> None:
    await websocket.send_text(_encoder.encode(message).decode())
