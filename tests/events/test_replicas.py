"""Appends that wait for a replica (``WAIT``), on a real master and its replica."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aredis

from events.errors import StoreUnavailable
from events.room import CueSent
from events.store import EventStore
from services.redis_server import RedisServer


@pytest.fixture
def master_and_replica(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer]]:
    master = RedisServer(tmp_path / "master")
    master.start()
    replica = RedisServer(
        tmp_path / "replica", options=("--replicaof", "127.0.0.1", str(master.port))
    )
    replica.start()
    watching = redis.Redis(port=replica.port)
    deadline = time.monotonic() + 15
    while watching.info("replication").get("master_link_status") != "up":
        assert time.monotonic() < deadline, "the replica did not sync"
        time.sleep(0.05)
    watching.close()
    yield master, replica
    if replica.process is not None and replica.process.poll() is None:
        os.kill(replica.process.pid, signal.SIGCONT)
    replica.stop()
    master.stop()


def cue(n: int) -> CueSent:
    return CueSent(cue_id=f"c{n}", coach="sup-1", text=f"cue {n}")


async def test_an_append_is_acknowledged_once_the_replica_has_it_and_refused_while_it_does_not(
    master_and_replica: tuple[RedisServer, RedisServer],
) -> None:
    master, replica = master_and_replica
    client = aredis.Redis.from_url(master.url)
    store = EventStore(client, wait_replicas=1, wait_timeout_ms=300)
    on_replica = EventStore(aredis.Redis.from_url(replica.url))
    try:
        await store.append("room-1", [cue(1)], expected_version=0, actor="a")
        assert await on_replica.version("room-1") == 1  # acknowledged: the replica had it

        assert replica.process is not None
        os.kill(replica.process.pid, signal.SIGSTOP)
        with pytest.raises(StoreUnavailable, match="0 of 1 replicas had it within 300 ms"):
            await store.append(
                "room-1", [cue(2)], expected_version=1, actor="a", idempotency_key="k"
            )
        os.kill(replica.process.pid, signal.SIGCONT)
        again = await store.append(
            "room-1", [cue(2)], expected_version=1, actor="a", idempotency_key="k"
        )
    finally:
        await client.aclose()
        await on_replica.client.aclose()

    assert (again.first_version, again.duplicate) == (2, True)  # stored once, now replicated
