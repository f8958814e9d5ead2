"""Service settings, read from the environment once, at the edge (the CLI), into a frozen Struct."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

import msgspec


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    redis_url: str | None = None
    """None: start a local redis-server with its data in ``data_dir/redis``."""
    data_dir: str = "data"
    host: str = "127.0.0.1"
    port: int = 8000
    namespace: str = "earpiece"
    partitions: int = 1
    snapshot_every: int = 500
    redis_appendfsync: str = "always"
    jwt_secret: str | None = None
    """HS256 key for development; None: one is made and kept in ``data_dir/jwt-secret``."""
    jwt_audience: str = "earpiece"
    jwt_issuer: str = "earpiece"
    max_command_bytes: int = 16 * 1024

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        names = {
            "REDIS_URL": "redis_url",
            "EARPIECE_DATA_DIR": "data_dir",
            "EARPIECE_HOST": "host",
            "EARPIECE_PORT": "port",
            "EARPIECE_NAMESPACE": "namespace",
            "EARPIECE_PARTITIONS": "partitions",
            "EARPIECE_SNAPSHOT_EVERY": "snapshot_every",
            "EARPIECE_REDIS_APPENDFSYNC": "redis_appendfsync",
            "EARPIECE_JWT_SECRET": "jwt_secret",
            "EARPIECE_JWT_AUDIENCE": "jwt_audience",
            "EARPIECE_JWT_ISSUER": "jwt_issuer",
            "EARPIECE_MAX_COMMAND_BYTES": "max_command_bytes",
        }
        given = {field: environ[name] for name, field in names.items() if environ.get(name)}
        try:
            return msgspec.convert(given, cls, strict=False)
        except msgspec.ValidationError as exc:
            field = str(exc).rsplit("`$.", 1)[-1].rstrip("`")
            variable = next((n for n, f in names.items() if f == field), field)
            raise SystemExit(f"bad setting {variable}: {exc}") from exc

    def signing_secret(self) -> str:
        """The HS256 secret: the configured one, else the development one kept in data_dir."""
        if self.jwt_secret:
            return self.jwt_secret
        path = Path(self.data_dir) / "jwt-secret"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(secrets.token_urlsafe(32))
        return path.read_text().strip()
