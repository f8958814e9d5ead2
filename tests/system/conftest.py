"""Fixtures of the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as redis

from services.redis_server import RedisServer
from tests.system.processes import ServiceProcess


@pytest.fixture
def served(
    redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path
) -> Iterator[ServiceProcess]:
    """``earpiece serve`` as a child process on the test's Redis, stopped after the test."""
    # After redis_client, which empties the test's Redis: the service's lease must survive.
    service = ServiceProcess(redis_server.url, tmp_path)
    service.start()
    yield service
    service.stop()
