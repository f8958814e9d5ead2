"""The whole service on a real Redis Cluster (tests/cluster.py: three masters with a replica
each), its rooms spread over partitions: a whispered call, its audit, and the lobby."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio as redis

from events.keys import KeySpace
from events.room import Role
from tests.cluster import RedisClusterServers
from tests.support import SALES_COACH, open_call, running_service, token
from tests.system.calls import ROOM, Call

PARTITIONS = 3


@pytest.fixture
async def http(cluster: RedisClusterServers) -> AsyncIterator[httpx.AsyncClient]:
    client = redis.RedisCluster.from_url(cluster.url)
    await client.flushall()
    settings = {"partitions": PARTITIONS, "redis_cluster": True}
    async with running_service(cluster.url, client, **settings) as service:
        yield service.http
    await client.aclose()


async def test_a_whispered_call_and_its_audit_on_a_cluster(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    call = Call(http)
    try:
        await call.connect_all()
        await call.whisper()
    finally:
        await call.close()

    coach = {"authorization": f"Bearer {token(Role.SUPERVISOR, sub='sup-1', whisper=True)}"}
    async with asyncio.timeout(15):  # the audit group catches up by itself
        while True:
            audit = await http.get(f"/rooms/{ROOM}/audit", headers=coach)
            if audit.status_code == 200 and audit.json()["verification"]["ok"]:
                break
            await asyncio.sleep(0.2)
    assert audit.json()["verification"]["checked"] >= 9  # joins, monitor, whisper, talk
    assert "Traceback" not in caplog.text


async def test_the_lobby_lists_rooms_of_every_partition_on_a_cluster(
    http: httpx.AsyncClient,
) -> None:
    keys = KeySpace(partitions=PARTITIONS)
    rooms = {keys.partition_of(f"r{n}"): f"r{n}" for n in range(30)}
    for room in rooms.values():
        await open_call(http, room, "sales")

    lobby = {"authorization": f"Bearer {SALES_COACH}"}
    async with asyncio.timeout(15):
        while True:
            listed = {
                r["room_id"] for r in (await http.get("/lobby", headers=lobby)).json()["rooms"]
            }
            if listed == set(rooms.values()):
                break
            await asyncio.sleep(0.2)
    assert len(rooms) == PARTITIONS
