"""Bearer tokens: PyJWT verifies them, this module says what their claims must be.

A token names one participant of one room: ``sub``, ``name``, ``room``, ``role`` (customer,
agent or supervisor) and ``whisper`` (true only for supervisors allowed to coach), with ``exp``,
``aud`` and ``iss``; a customer's or agent's may name its call's ``queue``. A supervisor's may
instead name ``"room": "*"`` with ``queues``: it is then good for every room of those queues.
Only the configured algorithms are accepted, so ``alg: none`` and
algorithm-confusion tokens fail verification; a verifier holds either a shared secret (HS*) or
public keys (RS256, ES256, EdDSA), never both.

Public keys come from a PEM or from the issuer's JWKS (``JwksKeys``): PyJWKClient caches the set
and the token's ``kid`` picks the key. Fetching the set is blocking I/O, so async code calls
``TokenVerifier.verify_async``, which goes to a thread only when the cache cannot answer.

Lifetimes. A token is checked when a request or socket comes in, and a socket's for its whole
life. Customers and agents must not lose their call when the token they joined with expires:
their live socket stays open and hands them *resume tokens* (``RESUME_AUDIENCE``, HS256 with the
service's own resume key, ``RESUME_TTL_S`` long, renewed while the socket lives), good for their
own room and role only, with which the page reconnects its socket and media. Supervisors get
none: their authorization is the issuer's to extend, so their socket closes and their media
sessions end when their token expires (a compliance product stops monitoring when the right
to monitor ends).

A refusal is an ``AuthError`` (services/errors.py): ``TokenRefused`` for a token to refuse (a
new token may do), ``AccessDenied`` for a valid token of another room, ``IssuerUnavailable`` when
the JWKS cannot be fetched: the token may well be good, the client should retry later rather
than sign in again, and monitoring should count it as an outage.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import jwt
import msgspec

from events.room import Role
from projections.commands import Actor
from services.errors import AccessDenied, IssuerUnavailable, TokenRefused
from services.settings import ASYMMETRIC_ALGORITHMS, SYMMETRIC_ALGORITHMS, PublicKey, Settings

REQUIRED_CLAIMS = ["exp", "aud", "iss", "sub", "name", "room", "role"]

RESUME_AUDIENCE = "earpiece-resume"
"""The ``aud`` of the service's own resume tokens (never an issuer's audience)."""
RESUME_ISSUER = "earpiece"
RESUME_TTL_S = 600
"""A resume token's life: the live socket hands out a new one every half of it."""
RESUMABLE = frozenset({Role.CUSTOMER, Role.AGENT})


ANY_ROOM = "*"
"""A supervisor token's ``room`` for every room of its ``queues``."""


Text = Annotated[str, msgspec.Meta(max_length=128)]
"""A claim stored in events and shown on pages: bounded, whoever signed it."""


class Claims(msgspec.Struct, frozen=True, kw_only=True):
    sub: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    name: Text
    room: Text
    role: Role
    whisper: bool = False
    exp: int
    queue: Text = ""
    """The queue a customer's or agent's call belongs to."""
    queues: Annotated[tuple[Text, ...], msgspec.Meta(max_length=64)] = ()
    """The queues a supervisor coaches: their lobby, and their rooms with ``room: "*"``."""

    def actor(self) -> Actor:
        return Actor(
            subject=self.sub,
            role=self.role,
            name=self.name,
            can_whisper=self.whisper,
            queue=self.queue,
        )


class JwksKeys:
    """The issuer's signing keys, published as a JWK Set at ``url``.

    The set is kept for ``lifespan_s``; a ``kid`` missing from it makes PyJWKClient fetch the set
    again, at most once per ``cooldown_s``, so tokens with made-up kids cannot hammer the issuer
    (a rotated-in key is therefore seen within ``cooldown_s`` of its first use, or at once if the
    issuer publishes it before signing with it, as issuers do). PyJWKClient counts that cooldown
    from successful fetches only; while the endpoint fails, a fetch is tried at most once per
    ``retry_s`` here, and tokens in between are answered 503 without one.
    """

    def __init__(
        self,
        url: str,
        *,
        lifespan_s: float = 300,
        cooldown_s: float = 30,
        retry_s: float = 5,
        timeout_s: float = 5,
    ) -> None:
        self.url = url
        self.retry_s = retry_s
        self._client = jwt.PyJWKClient(
            url, lifespan=lifespan_s, cooldown_duration=cooldown_s, timeout=timeout_s
        )
        self._failed: tuple[float, str] | None = None
        """When the last fetch failed, and why (None once one succeeds)."""
        self._lock = threading.Lock()  # fetches run in threads (asyncio.to_thread)

    def cached(self, kid: str) -> jwt.PyJWK | None:
        """The signing key ``kid`` if the unexpired cached set has it; never does I/O."""
        jwk_set = self._cached_set()
        signing = (key for key in jwk_set or () if key.public_key_use in ("sig", None))
        return next((key for key in signing if key.key_id == kid), None)

    def fetch(self, kid: str) -> jwt.PyJWK:
        """The signing key ``kid``, fetching the set when needed: blocking I/O, up to timeout_s."""
        with self._lock:
            if self._failed is not None and self._cached_set() is None:
                failed_at, reason = self._failed
                if (ago := time.monotonic() - failed_at) < self.retry_s:
                    raise IssuerUnavailable(
                        f"signing keys unavailable from {self.url}: {reason} "
                        f"({ago:.1f} s ago; trying again {self.retry_s - ago:.1f} s from now)"
                    )
            try:
                key = self._client.get_signing_key(kid)
            except (jwt.PyJWKClientError, jwt.PyJWKSetError, OSError, ValueError) as exc:
                # A plain PyJWKClientError with a good set in hand means the kid is not in it;
                # any other failure (unreachable, not JSON, no usable keys) is the endpoint's.
                if type(exc) is jwt.PyJWKClientError and self._cached_set() is not None:
                    raise TokenRefused(f"invalid token: no signing key with kid {kid!r}") from exc
                self._failed = (time.monotonic(), str(exc))
                raise IssuerUnavailable(f"signing keys unavailable from {self.url}: {exc}") from exc
            self._failed = None
            return key

    def _cached_set(self) -> jwt.PyJWKSet | None:
        cache = self._client.jwk_set_cache
        return None if cache is None else cache.get()


Key = str | bytes | PublicKey | JwksKeys


class TokenVerifier:
    def __init__(
        self,
        key: Key,
        *,
        audience: str,
        issuer: str,
        algorithms: tuple[str, ...] = ("HS256",),
        leeway_s: float = 0,
        queue_of: Callable[[str], Awaitable[str]] | None = None,
        resume_key: str | None = None,
    ) -> None:
        allowed = SYMMETRIC_ALGORITHMS if isinstance(key, str | bytes) else ASYMMETRIC_ALGORITHMS
        if not algorithms or not set(algorithms) <= allowed:
            raise ValueError(
                f"a {type(key).__name__} key verifies {sorted(allowed)}, not {list(algorithms)}"
            )
        self._key = key
        self._audience = audience
        self._issuer = issuer
        self._algorithms = list(algorithms)
        self._leeway_s = leeway_s
        self._queue_of = queue_of
        self._resume_key = resume_key

    def verify(self, token: str, room_id: str) -> Claims:
        """The token's claims, if it is valid and names ``room_id``; AuthError otherwise.

        With a JWKS this may fetch the key set and block: async code calls ``verify_async``.
        A token for every room of its queues needs the room's queue: only ``verify_async``.
        """
        key = self._key
        claims = self._decoded(token, key.fetch(_kid(token)) if isinstance(key, JwksKeys) else key)
        _check_room(claims, room_id, room_queue=None)
        return claims

    async def verify_async(self, token: str, room_id: str) -> Claims:
        """As ``verify``, fetching a JWKS in a thread when the cached set lacks the token's key,
        and looking up the room's queue for a token with ``room: "*"``."""
        claims = await self.claims_async(token)
        room_queue = None
        if claims.room == ANY_ROOM and self._queue_of is not None:
            room_queue = await self._queue_of(room_id)
        _check_room(claims, room_id, room_queue=room_queue)
        return claims

    def expires_in_s(self, claims: Claims) -> float:
        """Seconds until a token with ``claims`` is refused (its expiry, with the leeway)."""
        return claims.exp + self._leeway_s - time.time()

    def resumable(self, claims: Claims) -> bool:
        """Whether the participant ``claims`` name gets resume tokens: customers and agents of
        one room, when the verifier has a resume key."""
        return self._resume_key is not None and _resumable(claims)

    def resume_token(self, claims: Claims) -> str | None:
        """A resume token for the participant ``claims`` name (None for supervisors)."""
        if self._resume_key is None or not _resumable(claims):
            return None
        return mint_token(
            self._resume_key,
            subject=claims.sub,
            name=claims.name,
            room=claims.room,
            role=claims.role,
            queue=claims.queue,
            audience=RESUME_AUDIENCE,
            issuer=RESUME_ISSUER,
            ttl_s=RESUME_TTL_S,
        )

    async def claims_async(self, token: str) -> Claims:
        """The claims of a valid token, whatever room it names (for the supervisors' lobby)."""
        if self._resume_key is not None and _audience_of(token) == RESUME_AUDIENCE:
            return self._resumed(token, self._resume_key)
        key = self._key
        if isinstance(key, JwksKeys):
            kid = _kid(token)
            jwk = key.cached(kid)
            if jwk is None:
                jwk = await asyncio.to_thread(key.fetch, kid)
            return self._decoded(token, jwk)
        return self._decoded(token, key)

    def _resumed(self, token: str, key: str) -> Claims:
        """A resume token's claims: HS256 with the service's own key, for customers and agents
        of one room; nothing else is accepted under that audience."""
        claims = _claims_of(
            token,
            key,
            algorithms=["HS256"],
            audience=RESUME_AUDIENCE,
            issuer=RESUME_ISSUER,
            what="resume token",
        )
        if not _resumable(claims) or claims.whisper:  # none made here carries a whisper claim
            raise TokenRefused("invalid resume token: only a customer's or an agent's, for a room")
        return claims

    def _decoded(self, token: str, key: str | bytes | PublicKey | jwt.PyJWK) -> Claims:
        claims = _claims_of(
            token,
            key,
            algorithms=self._algorithms,
            audience=self._audience,
            issuer=self._issuer,
            leeway_s=self._leeway_s,
        )
        blank_queue = claims.queue and not claims.queue.strip()
        if blank_queue or any(not queue.strip() for queue in claims.queues):
            raise TokenRefused("invalid token claims: a queue name must not be empty or blank")
        if claims.room == ANY_ROOM and (claims.role is not Role.SUPERVISOR or not claims.queues):
            raise TokenRefused(
                "invalid token claims: only a supervisor's token may name every room "
                '("room": "*"), and it must list its "queues"'
            )
        return claims


def _claims_of(
    token: str,
    key: str | bytes | PublicKey | jwt.PyJWK,
    *,
    algorithms: list[str],
    audience: str,
    issuer: str,
    leeway_s: float = 0,
    what: str = "token",
) -> Claims:
    """PyJWT's verification, then the claims' types; TokenRefused naming what is wrong."""
    try:
        payload = jwt.decode(
            token,
            key,
            algorithms=algorithms,
            audience=audience,
            issuer=issuer,
            leeway=leeway_s,
            options={"require": REQUIRED_CLAIMS},
        )
        return msgspec.convert(payload, Claims)
    except jwt.PyJWTError as exc:
        raise TokenRefused(f"invalid {what}: {exc}") from exc
    except TypeError as exc:  # PyJWT's, for a header algorithm the key cannot do
        raise TokenRefused(f"invalid {what}: its algorithm does not fit the key") from exc
    except msgspec.ValidationError as exc:
        raise TokenRefused(f"invalid {what} claims: {exc}") from exc


def _check_room(claims: Claims, room_id: str, *, room_queue: str | None) -> None:
    if claims.room == ANY_ROOM:
        if room_queue is None or room_queue not in claims.queues:
            raise AccessDenied(
                f"room {room_id!r} is not in the token's queues {list(claims.queues)}"
            )
    elif claims.room != room_id:
        raise AccessDenied(f"token is for room {claims.room!r}, not {room_id!r}")


def _resumable(claims: Claims) -> bool:
    return claims.role in RESUMABLE and claims.room != ANY_ROOM


def _audience_of(token: str) -> object:
    """The ``aud`` of a token not yet verified, only to pick the key that will verify it."""
    try:
        return jwt.decode(token, options={"verify_signature": False}).get("aud")
    except jwt.PyJWTError:
        return None  # the issuer's verification says what is wrong with it


def _kid(token: str) -> str:
    try:
        kid = jwt.get_unverified_header(token).get("kid")
    except jwt.PyJWTError as exc:
        raise TokenRefused(f"invalid token: {exc}") from exc
    if not isinstance(kid, str):
        raise TokenRefused("invalid token: no kid header to pick a key from the JWKS")
    return kid


def verifier_from_settings(
    settings: Settings, queue_of: Callable[[str], Awaitable[str]] | None = None
) -> TokenVerifier:
    """The verifier the settings describe: JWKS, else public key, else the shared secret.

    ``queue_of`` gives a room's queue, for supervisor tokens naming every room of their queues.
    """
    key: Key
    if settings.jwt_jwks_url is not None:
        key = JwksKeys(settings.jwt_jwks_url)
    elif (public_key := settings.public_key()) is not None:
        key = public_key
    else:
        key = settings.signing_secret()
    return TokenVerifier(
        key,
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
        algorithms=settings.jwt_algorithms,
        leeway_s=settings.jwt_leeway_s,
        queue_of=queue_of,
        resume_key=settings.resume_key(),
    )


def mint_token(
    key: str,
    *,
    subject: str,
    name: str,
    room: str,
    role: Role,
    whisper: bool = False,
    queue: str = "",
    queues: tuple[str, ...] = (),
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
    if queue:
        claims["queue"] = queue
    if queues:
        claims["queues"] = list(queues)
    return jwt.encode(claims, key, algorithm="HS256")
