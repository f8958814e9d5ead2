"""Errors raised by the services, and what the shell answers for each (events' errors included).

    EarpieceError                        events/errors.py        HTTP                        close
    ├── InvalidRoomId                                            400 invalid_room            4400
    ├── MalformedEvent                                           503 unavailable             1011
    ├── InconsistentEntry           a feed entry the stream contradicts: quarantined, never answered
    ├── StoreError
    │   ├── StoreUnavailable                                     503 unavailable             1011
    │   ├── WrongExpectedVersion        retried by the command handler, never answered
    │   ├── IdempotencyKeyReused                                 422 idempotency_key_reused
    │   └── Fenced                  a worker that lost the room  503 unavailable             1011
    └── ServiceError                     this module
        ├── RequestError                 the request cannot be served as it was sent
        │   ├── InvalidJson                                      400 invalid_json
        │   ├── InvalidHeader            an id too long, or odd  400 invalid_header
        │   ├── ClientGone               left mid-body           400 client_gone
        │   ├── RequestTimeout           a body sent too slowly  408 request_timeout
        │   ├── InvalidCommand           names the field         422 invalid_command
        │   ├── BadOffer                 an SDP offer refused    400 bad_offer
        │   ├── UnsupportedMediaType                             415 unsupported_media_type
        │   ├── TooLarge                                         413 too_large               1009
        │   ├── NotFound                                         404 not_found
        │   │   └── UnknownRoom          no event names it       404 not_found
        │   └── MethodNotAllowed                                 405 method_not_allowed
        ├── AuthError                    a token that gives no access
        │   ├── TokenRefused             a new token may do      401 unauthorized            4401
        │   │   └── TokenExpired         while a socket is open  401 unauthorized            4401
        │   ├── AccessDenied             good, but not for this  403 forbidden               4403
        │   └── IssuerUnavailable        the JWKS cannot be had  503 unavailable             1011
        ├── CommandRejected              the decider's reason    409 rejected
        ├── RateLimited                  over a rate; Retry-After 429 rate_limited            4429
        ├── TooManyOpen                  sockets of one person   429 too_many_open           4429
        ├── Contention                   too many racing writers 409 conflict
        ├── SessionReplaced              in setup, by a newer one 409 conflict
        ├── RoomElsewhere                hosted elsewhere         503 unavailable             1011
        ├── RouterError                  the media plane's; logged and recorded, never answered
        │   ├── ForbiddenRoute           whisper separation: a supervisor to a customer
        │   ├── NoFreeSlot
        │   └── UnknownEndpoint
        ├── SettingsError                the CLI says which variable to fix, and exits
        └── RedisServerError             a local redis-server that would not start

Foreign exceptions are translated where they enter, keeping their cause: redis-py's into
``StoreUnavailable``, PyJWT's into ``TokenRefused``, msgspec's into ``InvalidJson`` or
``InvalidCommand``, aiortc's SDP parsing and refusals into ``BadOffer`` or ``SessionReplaced``.
``answer_for`` is the one mapping from an error to its HTTP answer and WebSocket close code;
the app and the sockets both use it. An error it does not know is a bug: 500, logged.
"""

from __future__ import annotations

from typing import NamedTuple

from events.errors import (
    EarpieceError,
    Fenced,
    IdempotencyKeyReused,
    InvalidRoomId,
    MalformedEvent,
    StoreUnavailable,
)
from events.room_leases import Lease


class ServiceError(EarpieceError):
    """Base of every error the services raise on purpose."""


class RequestError(ServiceError):
    """The request cannot be served as it was sent; the sentence says what to change."""


class InvalidJson(RequestError):
    pass


class InvalidHeader(RequestError):
    pass


class ClientGone(RequestError):
    """The client disconnected before its request's body was in (nobody reads the answer)."""


class RequestTimeout(RequestError):
    pass


class InvalidCommand(RequestError):
    pass


class BadOffer(RequestError, ValueError):
    """An offer the service will not answer; ``reason`` is written for the client to read."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnsupportedMediaType(RequestError):
    pass


class TooLarge(RequestError):
    pass


class NotFound(RequestError):
    pass


class UnknownRoom(NotFound):
    def __init__(self, room_id: str) -> None:
        super().__init__(f"room {room_id!r} has no events: no such room (yet)")
        self.room_id = room_id


class MethodNotAllowed(RequestError):
    pass


class AuthError(ServiceError):
    """Why a token was refused."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TokenRefused(AuthError):
    pass


class TokenExpired(TokenRefused):
    """Raised in a socket's task group when its token expires; the endpoint then closes it."""

    def __init__(self, reason: str = "the token has expired: open the page with a new link"):
        super().__init__(reason)


class AccessDenied(AuthError):
    pass


class IssuerUnavailable(AuthError):
    """The token may well be good: retry later, rather than sign in again."""


class CommandRejected(ServiceError):
    """The room decider's ``Rejection``: the command cannot happen in the room's state."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RateLimited(ServiceError):
    """A participant or a room over one of its rates (services/web/rate_limits.py)."""

    def __init__(self, reason: str, retry_after_s: float) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


class TooManyOpen(ServiceError):
    """One participant holding as many live sockets of a room as they may at once."""


class Contention(ServiceError):
    def __init__(self, room_id: str, attempts: int) -> None:
        super().__init__(f"room {room_id!r} changed under {attempts} attempts in a row; retry")
        self.room_id = room_id


class SessionReplaced(ServiceError):
    """A WebRTC session ended while it was being set up (aiortc's InvalidStateError)."""


class RoomElsewhere(ServiceError):
    """The room's lease is another worker's: its media (WHIP/WHEP) is set up there."""

    def __init__(self, lease: Lease) -> None:
        super().__init__(
            f"room {lease.room_id!r} is hosted by worker {lease.worker} (epoch {lease.epoch})"
        )
        self.lease = lease


class RouterError(ServiceError):
    pass


class ForbiddenRoute(RouterError):
    def __init__(self, room_id: str, producer: str, consumer: str, reason: str) -> None:
        super().__init__(f"room {room_id!r}: refused {producer} → {consumer}: {reason}")
        self.producer = producer
        self.consumer = consumer


class NoFreeSlot(RouterError):
    pass


class UnknownEndpoint(RouterError):
    pass


class SettingsError(ServiceError, ValueError):
    """A setting the service cannot start with; ``variable`` is the environment variable to fix."""

    def __init__(self, variable: str, reason: str) -> None:
        super().__init__(f"{variable}: {reason}")
        self.variable = variable
        self.reason = reason


class RedisServerError(ServiceError, RuntimeError):
    pass


class Answer(NamedTuple):
    """How the shell answers an error: HTTP status and error code, and a WebSocket close code."""

    status: int
    error: str
    close_code: int | None = None
    """None: the socket says it in an error message and stays open."""


UNAVAILABLE = Answer(503, "unavailable", 1011)  # 1011: the server cannot now; reconnect
INTERNAL = Answer(500, "internal", 1011)

_ANSWERS: dict[type[BaseException], Answer] = {
    InvalidRoomId: Answer(400, "invalid_room", 4400),
    MalformedEvent: UNAVAILABLE,
    StoreUnavailable: UNAVAILABLE,
    IdempotencyKeyReused: Answer(422, "idempotency_key_reused"),
    InvalidJson: Answer(400, "invalid_json"),
    InvalidHeader: Answer(400, "invalid_header"),
    ClientGone: Answer(400, "client_gone"),
    RequestTimeout: Answer(408, "request_timeout"),
    InvalidCommand: Answer(422, "invalid_command"),
    BadOffer: Answer(400, "bad_offer"),
    UnsupportedMediaType: Answer(415, "unsupported_media_type"),
    TooLarge: Answer(413, "too_large", 1009),
    NotFound: Answer(404, "not_found"),
    MethodNotAllowed: Answer(405, "method_not_allowed"),
    TokenRefused: Answer(401, "unauthorized", 4401),
    AccessDenied: Answer(403, "forbidden", 4403),
    IssuerUnavailable: UNAVAILABLE,
    CommandRejected: Answer(409, "rejected"),
    RateLimited: Answer(429, "rate_limited", 4429),
    TooManyOpen: Answer(429, "too_many_open", 4429),
    Contention: Answer(409, "conflict"),
    SessionReplaced: Answer(409, "conflict"),
    RoomElsewhere: UNAVAILABLE,
    Fenced: UNAVAILABLE,
}


def answer_for(error: BaseException) -> Answer:
    """The answer for ``error``: its class's, or its nearest base's; INTERNAL for a bug."""
    for cls in type(error).__mro__:
        if cls in _ANSWERS:
            return _ANSWERS[cls]
    return INTERNAL
