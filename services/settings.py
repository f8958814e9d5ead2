"""Service settings, read from the environment once, at the edge (the CLI), into a frozen Struct.

A Settings that exists is consistent: ``__post_init__`` refuses, with a SettingsError naming the
environment variable to fix, JWT settings that would verify the wrong tokens.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

import msgspec
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from services.errors import SettingsError

SYMMETRIC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
"""Verified with the shared secret (development, or a trusted issuer sharing it)."""
ASYMMETRIC_ALGORITHMS = frozenset({"RS256", "ES256", "EdDSA"})
"""Verified with the identity provider's public key, given as a PEM or published as a JWKS."""

PublicKey = RSAPublicKey | EllipticCurvePublicKey | Ed25519PublicKey
_KEY_TYPES: dict[str, type[PublicKey]] = {
    "RS256": RSAPublicKey,
    "ES256": EllipticCurvePublicKey,
    "EdDSA": Ed25519PublicKey,
}


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    redis_url: str | None = None
    """None: start a local redis-server with its data in ``data_dir/redis``."""
    data_dir: str = "data"
    host: str = "127.0.0.1"
    port: int = 8000
    worker_url: str | None = None
    """How the other workers reach this one's HTTP (they forward the WHIP/WHEP of the rooms it
    hosts to it); None: ``http://<host>:<port>``."""
    namespace: str = "earpiece"
    partitions: int = 1
    snapshot_every: int = 500
    redis_appendfsync: str = "always"
    log_format: str = "text"
    """``json``: one JSON object a line, naming the room, subject and correlation id."""
    redis_cluster: bool = False
    """REDIS_URL names one node of a Redis Cluster (set ``partitions`` to spread the rooms)."""
    redis_wait_replicas: int = 0
    """An append is acknowledged only once this many replicas have it (Redis ``WAIT``), else
    503 and the client retries with its Idempotency-Key; one Redis with replicas, not a cluster."""
    redis_wait_replicas_ms: int = 1000
    """How long an append waits for those replicas."""
    redis_connections: int = 16
    """The pool of short requests (services/redis_clients.py says what else a worker holds)."""
    redis_wait_s: float = 2.0
    """How long a request waits for a free connection of the pool before it answers 503."""
    jwt_secret: str | None = None
    """HS* key for development; None: one is made and kept in ``data_dir/jwt-secret``."""
    resume_secret: str | None = None
    """Key of the resume tokens the service gives the customers and agents on a call; None:
    derived from ``jwt_secret``, or (with an issuer's public keys) a random one of this process,
    so that several workers behind one front need it set, the same for all."""
    jwt_audience: str = "earpiece"
    jwt_issuer: str = "earpiece"
    jwt_algorithms: tuple[str, ...] = ("HS256",)
    """All from SYMMETRIC_ALGORITHMS, or all from ASYMMETRIC_ALGORITHMS, never both."""
    jwt_public_key: str | None = None
    """The issuer's public key for the asymmetric algorithms: PEM text or the path of a PEM file."""
    jwt_jwks_url: str | None = None
    """The issuer's JWKS (https, or http on loopback); each token's ``kid`` picks a key in it."""
    jwt_leeway_s: float = 0
    """Clock skew tolerated on ``exp`` and ``nbf``."""
    max_command_bytes: int = 16 * 1024
    commands_per_s: float = 10
    """Commands one participant may send a second (HTTP and live channel together; a burst
    of twice as many); services/web/rate_limits.py."""
    room_commands_per_s: float = 40
    """Commands all the participants of one room may send a second, together."""
    max_connections: int = 10_000
    """HTTP connections at once (fewer if the descriptor limit needs it; services/web/server.py)."""
    head_timeout_s: float = 10.0
    """A connection that has not sent its request head by then is closed; a body, likewise."""
    connections_per_s: float = 100
    """New HTTP connections (WebSockets included) one client address may open a second, bursts
    of twice as many; 0 for none, behind a proxy (all its connections come from its address)."""
    feed_retention_s: float = 24 * 3600
    """How long the partition feeds keep entries every group has handled (room streams: always)."""
    ice_addresses: tuple[str, ...] = ("127.0.0.1",)
    """Where peer connections listen: their host candidates (mediasoup's listen ``ip``)."""
    ice_announced_address: str | None = None
    """The address clients must use instead, behind 1:1 NAT (mediasoup's announcedAddress)."""
    ice_allowed_networks: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    """Remote candidates outside these are dropped before any connectivity check is sent."""
    turn_urls: tuple[str, ...] = ()
    """TURN servers the pages may relay through (``turn:host:3478?transport=udp``...): coturn
    with ``use-auth-secret``, credentials minted here (services/media/ice.py)."""
    turn_secret: str | None = None
    """coturn's ``static-auth-secret``, which the credentials are signed with."""
    turn_ttl_s: float = 12 * 3600
    """How long a minted TURN credential lasts: past the longest call (relays refresh with it)."""
    ice_transport_policy: str = "all"
    """``relay``: pages use TURN relays only (their own addresses never reach anyone)."""
    connect_timeout_s: float = 15.0
    """A WebRTC session not connected this long after its answer is ended (and its seat freed)."""
    metrics_token: str | None = None
    """The bearer token Prometheus scrapes ``/metrics`` with; unset, ``/metrics`` is off."""
    lease_s: float = 3.0
    """A room's lease lapses this long after its worker last renewed it (events/room_leases.py)."""
    lease_renew_s: float = 1.0
    """How often a worker renews the leases of the rooms it hosts."""
    coach_slots: int = 4
    """How many coaches the agent can hear at once: its receive slots besides the customer's."""

    @property
    def own_url(self) -> str:
        """Where the other workers reach this one."""
        return self.worker_url or f"http://{self.host}:{self.port}"

    def __post_init__(self) -> None:
        self._check_media()
        if self.log_format not in ("text", "json"):
            raise SettingsError("EARPIECE_LOG_FORMAT", "text or json")
        if self.redis_cluster and self.redis_url is None:
            raise SettingsError("EARPIECE_REDIS_CLUSTER", "name a node of the cluster in REDIS_URL")
        if self.redis_wait_replicas and self.redis_cluster:
            raise SettingsError("EARPIECE_REDIS_WAIT_REPLICAS", "not on a Redis Cluster yet")
        if self.redis_wait_replicas < 0 or self.redis_wait_replicas_ms < 1:
            raise SettingsError("EARPIECE_REDIS_WAIT_REPLICAS", "0 or more replicas, over 0 ms")
        if self.redis_connections < 1:
            raise SettingsError("EARPIECE_REDIS_CONNECTIONS", "the pool needs one connection")
        if min(self.commands_per_s, self.room_commands_per_s) <= 0:
            raise SettingsError("EARPIECE_COMMANDS_PER_S", "command rates must be above 0")
        if self.max_connections < 1:
            raise SettingsError("EARPIECE_MAX_CONNECTIONS", "serve at least one connection")
        if self.connections_per_s < 0:
            raise SettingsError("EARPIECE_CONNECTIONS_PER_S", "0 (no limit) or a rate above 0")
        if self.turn_urls and not self.turn_secret:
            raise SettingsError("EARPIECE_TURN_SECRET", "TURN servers need coturn's auth secret")
        if any(not url.startswith(("turn:", "turns:")) for url in self.turn_urls):
            raise SettingsError("EARPIECE_TURN_URLS", "each is turn:host[:port] or turns:...")
        if self.ice_transport_policy not in ("all", "relay"):
            raise SettingsError("EARPIECE_ICE_TRANSPORT_POLICY", "all or relay")
        if self.ice_transport_policy == "relay" and not self.turn_urls:
            raise SettingsError("EARPIECE_ICE_TRANSPORT_POLICY", "relay needs EARPIECE_TURN_URLS")
        if not 0 < self.lease_renew_s < self.lease_s:
            raise SettingsError("EARPIECE_LEASE_RENEW_S", "renew more often than leases lapse")
        if self.head_timeout_s <= 0:
            raise SettingsError("EARPIECE_HEAD_TIMEOUT_S", f"{self.head_timeout_s} is not above 0")
        if self.redis_wait_s <= 0:
            raise SettingsError("EARPIECE_REDIS_WAIT_S", f"{self.redis_wait_s} is not above 0")
        algorithms = set(self.jwt_algorithms)
        if not algorithms:
            raise SettingsError("EARPIECE_JWT_ALGORITHMS", "name at least one algorithm")
        if any(name.lower() == "none" for name in algorithms):
            raise SettingsError("EARPIECE_JWT_ALGORITHMS", "'none' would accept unsigned tokens")
        unknown = algorithms - SYMMETRIC_ALGORITHMS - ASYMMETRIC_ALGORITHMS
        if unknown:
            allowed = sorted(SYMMETRIC_ALGORITHMS | ASYMMETRIC_ALGORITHMS)
            raise SettingsError(
                "EARPIECE_JWT_ALGORITHMS", f"unsupported {sorted(unknown)}; choose from {allowed}"
            )
        if algorithms & SYMMETRIC_ALGORITHMS and algorithms & ASYMMETRIC_ALGORITHMS:
            raise SettingsError(
                "EARPIECE_JWT_ALGORITHMS",
                f"mixes shared-secret and public-key algorithms {sorted(algorithms)}: a public "
                "key could then be used as an HMAC secret (algorithm confusion)",
            )
        key_sources = [self.jwt_public_key, self.jwt_jwks_url]
        if algorithms <= SYMMETRIC_ALGORITHMS and any(key_sources):
            raise SettingsError(
                "EARPIECE_JWT_ALGORITHMS",
                f"{sorted(algorithms)} verify with the shared secret, yet EARPIECE_JWT_PUBLIC_KEY "
                "or EARPIECE_JWT_JWKS_URL is set: name the issuer's algorithms (e.g. RS256)",
            )
        if algorithms <= ASYMMETRIC_ALGORITHMS and not any(key_sources):
            raise SettingsError(
                "EARPIECE_JWT_PUBLIC_KEY",
                f"{sorted(algorithms)} need the issuer's public key: set EARPIECE_JWT_PUBLIC_KEY "
                "or EARPIECE_JWT_JWKS_URL",
            )
        if all(key_sources):
            raise SettingsError(
                "EARPIECE_JWT_JWKS_URL", "set EARPIECE_JWT_PUBLIC_KEY or this one, not both"
            )
        if self.jwt_jwks_url is not None:
            _check_jwks_url(self.jwt_jwks_url)
        if self.jwt_leeway_s < 0:
            raise SettingsError("EARPIECE_JWT_LEEWAY_S", f"{self.jwt_leeway_s} is negative")

    def _check_media(self) -> None:
        try:
            for address in (*self.ice_addresses, self.ice_announced_address or "127.0.0.1"):
                ipaddress.ip_address(address)
        except ValueError as exc:
            raise SettingsError("EARPIECE_ICE_ADDRESSES", str(exc)) from exc
        if not self.ice_addresses:
            raise SettingsError("EARPIECE_ICE_ADDRESSES", "name at least one address")
        if self.ice_announced_address is not None and len(self.ice_addresses) != 1:
            raise SettingsError(
                "EARPIECE_ICE_ANNOUNCED_ADDRESS", "announcing needs exactly one listen address"
            )
        try:
            self.allowed_networks()
        except ValueError as exc:
            raise SettingsError("EARPIECE_ICE_ALLOWED_NETWORKS", str(exc)) from exc
        if not 0 <= self.coach_slots <= 16:
            raise SettingsError("EARPIECE_COACH_SLOTS", f"{self.coach_slots} is not in 0-16")

    def allowed_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(network) for network in self.ice_allowed_networks]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        names = {
            "REDIS_URL": "redis_url",
            "EARPIECE_DATA_DIR": "data_dir",
            "EARPIECE_HOST": "host",
            "EARPIECE_WORKER_URL": "worker_url",
            "EARPIECE_PORT": "port",
            "EARPIECE_NAMESPACE": "namespace",
            "EARPIECE_PARTITIONS": "partitions",
            "EARPIECE_SNAPSHOT_EVERY": "snapshot_every",
            "EARPIECE_REDIS_APPENDFSYNC": "redis_appendfsync",
            "EARPIECE_REDIS_CLUSTER": "redis_cluster",
            "EARPIECE_LOG_FORMAT": "log_format",
            "EARPIECE_REDIS_CONNECTIONS": "redis_connections",
            "EARPIECE_REDIS_WAIT_REPLICAS": "redis_wait_replicas",
            "EARPIECE_REDIS_WAIT_REPLICAS_MS": "redis_wait_replicas_ms",
            "EARPIECE_REDIS_WAIT_S": "redis_wait_s",
            "EARPIECE_JWT_SECRET": "jwt_secret",
            "EARPIECE_RESUME_SECRET": "resume_secret",
            "EARPIECE_JWT_AUDIENCE": "jwt_audience",
            "EARPIECE_JWT_ISSUER": "jwt_issuer",
            "EARPIECE_JWT_ALGORITHMS": "jwt_algorithms",
            "EARPIECE_JWT_PUBLIC_KEY": "jwt_public_key",
            "EARPIECE_JWT_JWKS_URL": "jwt_jwks_url",
            "EARPIECE_JWT_LEEWAY_S": "jwt_leeway_s",
            "EARPIECE_MAX_COMMAND_BYTES": "max_command_bytes",
            "EARPIECE_COMMANDS_PER_S": "commands_per_s",
            "EARPIECE_ROOM_COMMANDS_PER_S": "room_commands_per_s",
            "EARPIECE_MAX_CONNECTIONS": "max_connections",
            "EARPIECE_HEAD_TIMEOUT_S": "head_timeout_s",
            "EARPIECE_CONNECTIONS_PER_S": "connections_per_s",
            "EARPIECE_FEED_RETENTION_S": "feed_retention_s",
            "EARPIECE_ICE_ADDRESSES": "ice_addresses",
            "EARPIECE_ICE_ANNOUNCED_ADDRESS": "ice_announced_address",
            "EARPIECE_ICE_ALLOWED_NETWORKS": "ice_allowed_networks",
            "EARPIECE_COACH_SLOTS": "coach_slots",
            "EARPIECE_LEASE_S": "lease_s",
            "EARPIECE_METRICS_TOKEN": "metrics_token",
            "EARPIECE_LEASE_RENEW_S": "lease_renew_s",
            "EARPIECE_CONNECT_TIMEOUT_S": "connect_timeout_s",
            "EARPIECE_TURN_URLS": "turn_urls",
            "EARPIECE_TURN_SECRET": "turn_secret",
            "EARPIECE_TURN_TTL_S": "turn_ttl_s",
            "EARPIECE_ICE_TRANSPORT_POLICY": "ice_transport_policy",
        }
        lists = {"jwt_algorithms", "ice_addresses", "ice_allowed_networks", "turn_urls"}
        given: dict[str, object] = {
            field: environ[name] for name, field in names.items() if environ.get(name)
        }
        for field in lists & given.keys():
            listed = str(given[field]).split(",")
            given[field] = [item.strip() for item in listed if item.strip()]
        try:
            return msgspec.convert(given, cls, strict=False)
        except msgspec.ValidationError as exc:
            if isinstance(exc.__cause__, SettingsError):
                raise SystemExit(f"bad setting {exc.__cause__}") from exc
            field = str(exc).rsplit("`$.", 1)[-1].rstrip("`")
            variable = next((n for n, f in names.items() if f == field), field)
            raise SystemExit(f"bad setting {variable}: {exc}") from exc

    def signing_secret(self) -> str:
        """The HS* secret: the configured one, else the development one kept in data_dir."""
        if self.jwt_secret:
            return self.jwt_secret
        path = Path(self.data_dir) / "jwt-secret"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(secrets.token_urlsafe(32))
        return path.read_text().strip()

    def resume_key(self) -> str:
        """The key of resume tokens: the configured one; with a shared JWT secret, one derived
        from it (so that every worker sharing it agrees); else a random one."""
        if self.resume_secret:
            return self.resume_secret
        if self.public_key() is None and self.jwt_jwks_url is None:
            derived = hmac.new(self.signing_secret().encode(), b"earpiece-resume", "sha256")
            return derived.hexdigest()
        return secrets.token_urlsafe(32)  # this process only: set it for several workers

    def public_key(self) -> PublicKey | None:
        """The issuer's key from ``jwt_public_key`` (read once, at startup), checked against the
        algorithms; None when the keys come from the JWKS URL or the shared secret is used."""
        if self.jwt_public_key is None:
            return None
        text = self.jwt_public_key.strip()
        if text.startswith("-----BEGIN"):
            pem = text.replace("\\n", "\n").encode()  # one-line env values escape newlines
        else:
            try:
                pem = Path(text).read_bytes()
            except OSError as exc:
                reason = f"neither a PEM nor a readable file: {exc}"
                raise SettingsError("EARPIECE_JWT_PUBLIC_KEY", reason) from exc
        try:
            key = load_pem_public_key(pem)
        except (ValueError, TypeError) as exc:
            raise SettingsError("EARPIECE_JWT_PUBLIC_KEY", f"not a PEM public key: {exc}") from exc
        # Every algorithm, not one: a token's header picks the algorithm, and one the key
        # does not fit would fail inside PyJWT on every request that names it.
        misfits = [name for name in self.jwt_algorithms if not isinstance(key, _KEY_TYPES[name])]
        if not misfits and isinstance(key, PublicKey):
            return key
        raise SettingsError(
            "EARPIECE_JWT_PUBLIC_KEY",
            f"a {type(key).__name__} cannot verify {sorted(misfits or self.jwt_algorithms)}",
        )


def _check_jwks_url(url: str) -> None:
    """https, or plain http to this machine only: a JWKS fetched in clear could be replaced."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname:
        if parts.hostname == "localhost":
            return
        try:
            if ipaddress.ip_address(parts.hostname).is_loopback:
                return
        except ValueError:
            pass
    raise SettingsError(
        "EARPIECE_JWT_JWKS_URL", f"{url!r} is not an https URL (plain http only on loopback)"
    )
