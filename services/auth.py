"""Bearer tokens: PyJWT verifies them, this module says what their claims must be.

A token names one participant of one room: ``sub``, ``name``, ``room``, ``role`` (customer,
agent or supervisor) and ``whisper`` (true only for supervisors allowed to coach), with ``exp``,
``aud`` and ``iss``. Only the configured algorithms are accepted, so ``alg: none`` and
algorithm-confusion tokens fail verification.
"""

from __future__ import annotations

import time
from typing import Any

import jwt
import msgspec

from events.errors import EarpieceError
from events.room import Role
from projections.commands import Actor

REQUIRED_CLAIMS = ["exp", "aud", "iss", "sub", "name", "room", "role"]


class Claims(msgspec.Struct, frozen=True, kw_only=True):
    sub: str
    name: str
    room: str
    role: Role
    whisper: bool = False
    exp: int

    def actor(self) -> Actor:
        return Actor(subject=self.sub, role=self.role, name=self.name, can_whisper=self.whisper)


class AuthError(EarpieceError):
    """Why a token was refused; ``status`` is the HTTP status to answer with."""

    def __init__(self, reason: str, status: int = 401) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class TokenVerifier:
    def __init__(
        self,
        key: str | bytes,
        *,
        audience: str,
        issuer: str,
        algorithms: tuple[str, ...] = ("HS256",),
        leeway_s: float = 0,
    ) -> None:
        self._key = key
        self._audience = audience
        self._issuer = issuer
        self._algorithms = list(algorithms)
        self._leeway_s = leeway_s

    def verify(self, token: str, room_id: str) -> Claims:
        """The token's claims, if it is valid and names ``room_id``; AuthError otherwise."""
        try:
            payload = jwt.decode(
                token,
                self._key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway_s,
                options={"require": REQUIRED_CLAIMS},
            )
            claims = msgspec.convert(payload, Claims)
        except jwt.PyJWTError as exc:
            raise AuthError(f"invalid token: {exc}") from exc
        except msgspec.ValidationError as exc:
            raise AuthError(f"invalid token claims: {exc}") from exc
        if claims.room != room_id:
            raise AuthError(f"token is for room {claims.room!r}, not {room_id!r}", status=403)
        return claims


def mint_token(
    key: str,
    *,
    subject: str,
    name: str,
    room: str,
    role: Role,
    whisper: bool = False,
    audience: str,
    issuer: str,
    ttl_s: int = 3600,
) -> str:
    """A development HS256 token (production tokens come from the identity provider)."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": subject,
        "name": name,
        "room": room,
        "role": role.value,
        "whisper": whisper,
        "iat": now,
        "nbf": now,
        "exp": now + ttl_s,
        "aud": audience,
        "iss": issuer,
    }
    return jwt.encode(claims, key, algorithm="HS256")
