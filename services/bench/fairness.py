"""``earpiece bench fairness``: room B's command latency alone, and while room A is flooded.

One fresh local redis-server and the whole service in a child process (``ServerProcess``, the
rate limits as shipped). In room B three coaches take turns switching their monitor on and
off, at a steady pace well under the limits, and every command is timed from request to
answer. Side by side in one run:

* alone: nothing else runs;
* HTTP flood on A: a child process runs 32 HTTP clients, 32 participants of room A, each
  posting commands as fast as they are answered (refused ones included);
* socket flood on A: a child process opens 20 live sockets on room A, 20 participants, and
  sends commands on each as fast as it can write;
* openings flood on A: a child process opens live sockets on room A for 20 participants, each
  closed as soon as it is open and authenticated (or refused), as fast as it can.

The goal is B's p99 under each flood within 2x of its p99 alone. The conditions are measured in
interleaved rounds, so that a slow spell of this noisy machine falls on each alike. The flooders
are child processes at the lowest priority (nice 19), so that their own work is not counted in
B's latencies, as it would not be in production: they still take whatever CPU is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import websockets

from events.room import Role
from services.auth import mint_token
from services.bench.media_servers import ServerProcess
from services.bench.workload import percentile
from services.redis_server import RedisServer

FLOODS = {"http": 32, "sockets": 20, "openings": 20}
"""Participants of room A flooding it, per kind of flood."""
ROUNDS = 2
"""Each condition is measured this many times, interleaved with the others."""
ROOM_B_ADDRESS = "127.0.0.2"
"""Room B's client address; the flooders' is 127.0.0.1."""


def token_for(secret: str, room_id: str, subject: str, role: Role = Role.SUPERVISOR) -> str:
    return mint_token(
        secret,
        subject=subject,
        name=subject,
        room=room_id,
        role=role,
        whisper=role is Role.SUPERVISOR,
        audience="earpiece",
        issuer="earpiece",
    )


async def timed_command(
    http: httpx.AsyncClient, room_id: str, headers: dict[str, str], command: str
) -> float:
    """Milliseconds from sending ``command`` to its answer, which must be 200 or 201. A sender
    not (or no longer) in the room joins first, untimed: an HTTP join with no media lapses
    after 15 s."""
    path = f"/rooms/{room_id}/commands"
    sent = time.perf_counter()
    answer = await http.post(path, json={"command": command}, headers=headers)
    if answer.status_code == 409 and "not in room" in answer.text:
        await http.post(path, json={"command": "join"}, headers=headers)
        sent = time.perf_counter()
        answer = await http.post(path, json={"command": command}, headers=headers)
    if answer.status_code not in (200, 201):
        raise RuntimeError(f"{command} in {room_id}: {answer.status_code} {answer.text}")
    return (time.perf_counter() - sent) * 1000


async def room_b_latencies(url: str, secret: str, commands: int, per_s: float) -> list[float]:
    """``commands`` monitor switches in room B at ``per_s``, each timed (ms)."""
    coaches = [f"coach-{n}" for n in range(3)]
    headers = {c: {"authorization": f"Bearer {token_for(secret, 'room-b', c)}"} for c in coaches}
    latencies: list[float] = []
    # Room B's people are somewhere else than room A's flooders: another client address.
    elsewhere = httpx.AsyncHTTPTransport(local_address=ROOM_B_ADDRESS)
    async with httpx.AsyncClient(base_url=url, timeout=30, transport=elsewhere) as http:
        started = time.perf_counter()
        for n in range(commands):
            await asyncio.sleep(max(0.0, started + n / per_s - time.perf_counter()))
            command = "start_monitor" if (n // 3) % 2 == 0 else "stop_monitor"
            latencies.append(await timed_command(http, "room-b", headers[coaches[n % 3]], command))
    return latencies


async def flood_http(url: str, secret: str, until: float) -> Counter[str]:
    answers: Counter[str] = Counter()

    async def participant(http: httpx.AsyncClient, n: int) -> None:
        headers = {"authorization": f"Bearer {token_for(secret, 'room-a', f'flooder-{n}')}"}
        commands = ["join", "start_monitor", "stop_monitor"]
        i = 0
        while time.perf_counter() < until:
            answer = await http.post(
                "/rooms/room-a/commands", json={"command": commands[i % 3]}, headers=headers
            )
            answers[str(answer.status_code)] += 1
            i += 1

    limits = httpx.Limits(max_connections=FLOODS["http"])
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as http:
        await asyncio.gather(*(participant(http, n) for n in range(FLOODS["http"])))
    return answers


async def flood_sockets(url: str, secret: str, until: float) -> Counter[str]:
    """Each participant sends on its socket as fast as it can write, and opens another as soon
    as one is closed (a flood is closed with 4429), until ``until``."""
    counted: Counter[str] = Counter()
    live = url.replace("http", "ws", 1) + "/rooms/room-a/live"
    message = json.dumps({"type": "command", "command": {"command": "start_monitor"}})

    async def participant(n: int) -> None:
        auth = json.dumps({"type": "auth", "token": token_for(secret, "room-a", f"flooder-{n}")})
        while time.perf_counter() < until:
            try:
                async with websockets.connect(live, max_queue=None) as socket:
                    counted["sockets opened"] += 1
                    await socket.send(auth)
                    drain = asyncio.create_task(_drain(socket))
                    while time.perf_counter() < until:
                        await socket.send(message)
                        counted["messages sent"] += 1
                        await asyncio.sleep(0)  # let the replies be read
                    drain.cancel()
            except websockets.ConnectionClosed as closed:
                counted[f"closed {closed.rcvd.code if closed.rcvd else 'without a code'}"] += 1
            except OSError:
                counted["connect failed"] += 1
                await asyncio.sleep(0.05)

    await asyncio.gather(*(participant(n) for n in range(FLOODS["sockets"])))
    return counted


async def flood_openings(url: str, secret: str, until: float) -> Counter[str]:
    """Each participant opens a socket, authenticates and closes it, again and again."""
    counted: Counter[str] = Counter()
    live = url.replace("http", "ws", 1) + "/rooms/room-a/live"

    async def participant(n: int) -> None:
        auth = json.dumps({"type": "auth", "token": token_for(secret, "room-a", f"flooder-{n}")})
        while time.perf_counter() < until:
            try:
                async with websockets.connect(live) as socket:
                    await socket.send(auth)
                    await socket.recv()  # its first view, or its refusal
                    counted["opened"] += 1
            except websockets.ConnectionClosed as closed:
                counted[f"closed {closed.rcvd.code if closed.rcvd else 'without a code'}"] += 1
            except (OSError, websockets.InvalidHandshake):
                counted["connect failed"] += 1

    await asyncio.gather(*(participant(n) for n in range(FLOODS["openings"])))
    return counted


async def _drain(socket: websockets.ClientConnection) -> None:
    with contextlib.suppress(websockets.ConnectionClosed):  # counted by the sender
        async for _ in socket:
            pass


def flood_main(kind: str, url: str, secret: str, seconds: float) -> int:
    # In production an attacker floods from machines of its own; here it shares the service's
    # two cores, so it runs at the lowest priority: what it sends is the load, not its CPU.
    os.nice(19)
    until = time.perf_counter() + seconds
    flood = {"http": flood_http, "sockets": flood_sockets, "openings": flood_openings}[kind]
    counted = asyncio.run(flood(url, secret, until))
    print(json.dumps(dict(counted)))
    return 0


async def run_fairness_bench(commands: int, per_s: float, rounds: int = ROUNDS) -> int:
    secret = secrets.token_urlsafe(32)
    per_round = max(1, commands // rounds)
    seconds = per_round / per_s + 2
    conditions = ["alone", *FLOODS]
    samples: dict[str, list[float]] = {name: [] for name in conditions}
    floods: dict[str, Counter[str]] = {kind: Counter() for kind in FLOODS}
    with tempfile.TemporaryDirectory(prefix="earpiece-fairness-") as scratch:
        redis_server = RedisServer(Path(scratch) / "redis")
        redis_server.start()
        try:
            async with ServerProcess("earpiece", redis_server.url, secret, Path(scratch)) as server:
                for _ in range(rounds):  # interleaved, so that a slow spell of the machine
                    for name in conditions:  # falls on every condition alike
                        if name == "alone":
                            latencies = await room_b_latencies(server.url, secret, per_round, per_s)
                        else:
                            latencies, counted = await _flooded(
                                name, server.url, secret, seconds, per_round, per_s
                            )
                            floods[name].update(counted)
                        samples[name].extend(latencies)
        finally:
            redis_server.stop()
    base_p99 = percentile(samples["alone"], 99)
    print(
        f"room B: {per_round * rounds} commands at {per_s:g}/s per condition, in {rounds} "
        f"interleaved rounds; flooders (niced): {FLOODS}"
    )
    print("| room B while | p50 ms | p99 ms | max ms | p99 / alone | room A's flood |")
    print("|---|---|---|---|---|---|")
    for name in conditions:
        b = samples[name]
        label = "alone" if name == "alone" else f"{name} flood on A"
        flood = json.dumps(dict(floods[name])) if name in floods else ""
        print(
            f"| {label} | {percentile(b, 50):.1f} | {percentile(b, 99):.1f} | "
            f"{max(b):.1f} | {percentile(b, 99) / base_p99:.2f} | {flood} |"
        )
    return 0


async def _flooded(
    kind: str, url: str, secret: str, seconds: float, commands: int, per_s: float
) -> tuple[list[float], Counter[str]]:
    """Room B's latencies while a flooder child process floods room A with ``kind``."""
    flooder = subprocess.Popen(  # noqa: ASYNC220 (returns at once)
        [sys.executable, "-m", "services.bench.fairness", kind, url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert flooder.stdin is not None
    assert flooder.stdout is not None
    flooder.stdin.write(f"{secret}\n{seconds}\n")
    flooder.stdin.close()
    await asyncio.sleep(1.0)  # the flood is under way
    latencies = await room_b_latencies(url, secret, commands, per_s)
    output = await asyncio.to_thread(flooder.stdout.read)
    flooder.wait()
    return latencies, Counter(json.loads(output))


if __name__ == "__main__":
    # python -m services.bench.fairness KIND URL, the secret and the seconds on stdin.
    secret_line, seconds_line = sys.stdin.read().split()
    sys.exit(flood_main(sys.argv[1], sys.argv[2], secret_line, float(seconds_line)))
