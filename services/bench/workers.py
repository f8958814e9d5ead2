"""``earpiece bench workers``: the cost of the forwarding hop, and the time a failover takes.

One fresh local redis-server and two workers, each ``earpiece`` in a child process
(``ServerProcess``). A room is hosted by the first worker. Side by side, interleaved:

* direct: a WHIP offer posted to the room's host, timed from the POST to its 201;
* forwarded: the same posted to the other worker, which forwards it to the host.

Each offer is a fresh aiortc peer connection of a coach of its own, hung up after its answer.
Then failover, ``rounds`` times: the room's host is killed with SIGKILL, and a client posts its
offer to the surviving worker every 100 ms until one answers 201 (the room's lease lapses, the
survivor takes the room); the time from the kill to that 201. A new worker replaces the dead one
before the next round, and the room's new host is the next to be killed.
"""

from __future__ import annotations

import asyncio
import secrets
import tempfile
import time
from pathlib import Path

import httpx
from aiortc import RTCPeerConnection

from services.bench.fairness import token_for
from services.bench.media_clients import peer_connection
from services.bench.media_servers import ServerProcess
from services.bench.workload import percentile
from services.media.ice import gather_on
from services.redis_server import RedisServer

ROOM = "room-bench"
PACE_S = 0.1
"""Between offers: the room's session rate (20 a second) is not what is measured."""


async def offer_ms(url: str, secret: str, subject: str) -> tuple[int, float]:
    """A coach's WHIP offer to the worker at ``url``: its status and milliseconds to answer."""
    pc: RTCPeerConnection = peer_connection()
    pc.addTransceiver("audio", direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    bearer = token_for(secret, ROOM, subject)
    headers = {"authorization": f"Bearer {bearer}", "content-type": "application/sdp"}
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            sent = time.perf_counter()
            answer = await http.post(
                f"/rooms/{ROOM}/whip", content=pc.localDescription.sdp, headers=headers
            )
            elapsed_ms = (time.perf_counter() - sent) * 1000
            if answer.status_code == 201:  # hung up through the worker it was set up through
                await http.delete(answer.headers["location"], headers=headers)
        return answer.status_code, elapsed_ms
    finally:
        await pc.close()


async def run_workers_bench(offers: int, rounds: int) -> int:
    gather_on(["127.0.0.1"])
    secret = secrets.token_urlsafe(32)
    with tempfile.TemporaryDirectory(prefix="earpiece-workers-") as scratch:
        redis_server = RedisServer(Path(scratch) / "redis")
        redis_server.start()
        workers = [ServerProcess("earpiece", redis_server.url, secret, Path(scratch)) for _ in "ab"]
        try:
            for worker in workers:
                await worker.__aenter__()
            host, other = workers
            status, _ = await offer_ms(host.url, secret, "coach-first")  # the room goes to it
            assert status == 201, status
            direct: list[float] = []
            forwarded: list[float] = []
            for n in range(offers):
                for url, samples, kind in ((host.url, direct, "d"), (other.url, forwarded, "f")):
                    status, elapsed = await offer_ms(url, secret, f"coach-{kind}{n}")
                    if status != 201:
                        raise RuntimeError(f"offer {kind}{n}: {status}")
                    samples.append(elapsed)
                    await asyncio.sleep(PACE_S)
            failovers: list[float] = []
            for n in range(rounds):
                host.kill()
                killed = time.monotonic()
                for _ in range(300):  # 30 s at most
                    if (await offer_ms(other.url, secret, f"coach-after{n}"))[0] == 201:
                        break
                    await asyncio.sleep(0.1)
                else:
                    raise RuntimeError("the surviving worker did not take the room in 30 s")
                failovers.append(time.monotonic() - killed)
                replacement = ServerProcess("earpiece", redis_server.url, secret, Path(scratch))
                await replacement.__aenter__()
                workers.append(replacement)
                host, other = other, replacement
        finally:
            for worker in workers:
                worker.stop()
            redis_server.stop()
    print(f"two workers, one redis-server; {offers} offers each way, interleaved")
    print("| WHIP offer → 201 | p50 ms | p99 ms | max ms | p50 / direct |")
    print("|---|---|---|---|---|")
    base = percentile(direct, 50)
    for name, samples in (("direct to the host", direct), ("through the other worker", forwarded)):
        print(
            f"| {name} | {percentile(samples, 50):.1f} | {percentile(samples, 99):.1f} | "
            f"{max(samples):.1f} | {percentile(samples, 50) / base:.2f} |"
        )
    seconds = ", ".join(f"{s:.1f}" for s in failovers)
    print(f"failover, SIGKILL of the host → 201 through the survivor: {seconds} s")
    return 0
