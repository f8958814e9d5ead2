"""Slowloris and descriptor exhaustion against ``earpiece serve`` as a child process: while an
attacker holds more connections than the worker has descriptors for, ``/healthz`` answers
within a second, and the log stays a few lines long."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import httpx
import pytest
import redis.asyncio as redis

from services.redis_server import RedisServer
from tests.system.processes import ServiceProcess

pytestmark = pytest.mark.newest_redis

DESCRIPTORS = 1024
ATTACKERS = 1500
"""More connections than the worker has descriptors: it must shed, not run out."""
ATTACK_S = 12.0


async def hold_connection(port: int, until: float, opened: list[int], shed: list[int]) -> None:
    """One slowloris connection, from another loopback address: a request head sent a byte at
    a time, never finished; opened again a second after the worker closes it, until ``until``."""
    while time.monotonic() < until:
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=("127.0.0.2", 0)
            )
        except OSError:
            await asyncio.sleep(0.1)
            continue
        opened[0] += 1
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            while time.monotonic() < until:
                writer.write(b"X")
                await writer.drain()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        if not await reader.read(1024):  # the worker closed it
                            shed[0] += 1
                            break
        except OSError:
            shed[0] += 1
        finally:
            writer.close()
        await asyncio.sleep(1.0)


async def probe(url: str) -> tuple[int, float]:
    started = time.monotonic()
    try:
        async with httpx.AsyncClient(timeout=1.0) as fresh:  # a new connection each time
            status = (await fresh.get(f"{url}/healthz")).status_code
    except httpx.TransportError:
        status = 0
    return status, time.monotonic() - started


async def test_healthz_answers_within_a_second_while_an_attacker_holds_connections(
    redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path
) -> None:
    service = ServiceProcess(
        redis_server.url, tmp_path, descriptors=DESCRIPTORS, HEAD_TIMEOUT_S="2"
    )
    service.start()
    try:
        until = time.monotonic() + ATTACK_S
        opened, shed = [0], [0]
        attack = [
            asyncio.create_task(hold_connection(service.port, until, opened, shed))
            for _ in range(ATTACKERS)
        ]
        await asyncio.sleep(1.0)  # every attacker is connected, or being refused
        probes = []
        while time.monotonic() < until:
            probes.append(await probe(service.url))
            await asyncio.sleep(0.2)
        await asyncio.gather(*attack)
        after = await probe(service.url)
    finally:
        service.stop()

    slow = [
        (status, round(seconds, 2)) for status, seconds in probes if status != 200 or seconds > 1
    ]
    assert len(probes) >= 20
    assert slow == []
    assert after[0] == 200
    assert opened[0] > ATTACKERS  # held, shed, and held again
    assert shed[0] > ATTACKERS
    log = service.log_path.read_text()
    assert "Traceback" not in log
    about_the_attack = [line for line in log.splitlines() if '"GET /healthz' not in line]
    assert len(about_the_attack) < 20, log[-3000:]
    assert "closed HTTP connections over the last" in log
