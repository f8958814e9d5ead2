"""The media bench's four phases, each against one running server (or none, for the floor)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from events.room import Role
from services.bench.media_clients import (
    PACKET_S,
    CannedOpus,
    PacketTrack,
    SendLog,
    Stream,
    connected,
    peer_connection,
    time_receives,
    time_sends,
    until,
)
from services.bench.media_report import CapacityStep, ClickSamples, Latency, SoakSample
from services.bench.media_servers import ServerKind, ServerProcess
from services.bench.media_signaling import EarpieceSignaling, Person, Room, ServerSignaling
from services.bench.workload import percentile

PHASES = ("latency", "click", "capacity", "soak")


@dataclass
class MediaBenchOptions:
    phases: tuple[str, ...] = PHASES
    packets: int = 1000
    """Packets measured per path in phase 1 (after ``warmup`` more)."""
    warmup: int = 50
    switches: int = 50
    """press_talk → first packet samples in phase 2."""
    earpiece_rooms: tuple[int, ...] = (1, 2, 4, 8, 12, 16, 20, 24, 32, 40, 48)
    relay_rooms: tuple[int, ...] = (1, 2, 3, 4, 6, 8)
    window_s: float = 5.0
    """Measuring window of each capacity step."""
    degraded_ms: float = 20.0
    """A step is degraded when its p99 exceeds the 1-room p99 by more than this."""
    soak_seconds: float = 60.0
    soak_rooms: int = 3
    """Rooms alive at once during the soak; each lives 2-5 s and is replaced."""
    soak_sample_s: float = 2.0

    @classmethod
    def quick(cls) -> MediaBenchOptions:
        return cls(
            packets=200,
            warmup=25,
            switches=10,
            earpiece_rooms=(1, 4),
            relay_rooms=(1,),
            window_s=2.0,
            soak_seconds=8.0,
            soak_rooms=2,
            soak_sample_s=1.0,
        )


# ---------------------------------------------------------------------------------------------
# Phase 1: one-way latency


async def direct_latency(canned: CannedOpus, warmup: int, packets: int) -> Latency:
    """Client → client on loopback, no server: the network (and SRTP) floor."""
    sender, receiver = peer_connection(), peer_connection()
    track = PacketTrack(canned)
    log = SendLog(len(canned.payloads))
    try:
        sender.addTransceiver(track, direction="sendonly")
        await sender.setLocalDescription(await sender.createOffer())
        await receiver.setRemoteDescription(sender.localDescription)
        await receiver.setLocalDescription(await receiver.createAnswer())
        await sender.setRemoteDescription(receiver.localDescription)
        time_sends(sender, log)
        stream = Stream(canned, log)
        time_receives(receiver, [stream])
        await until(connected(sender, receiver), 15, "the direct connection")
        await asyncio.sleep(0.5)
        track.gate.set()
        await collect(stream, warmup + packets)
    finally:
        track.stop()
        await sender.close()
        await receiver.close()
    return measured("direct client → client (floor)", stream, warmup, packets, "both")


async def server_latency(
    signaling: ServerSignaling, canned: CannedOpus, warmup: int, packets: int, path: str
) -> Latency:
    room = f"latency-{secrets.token_hex(3)}"
    customer = Person("cust", Role.CUSTOMER, canned)
    agent = Person("agent", Role.AGENT, canned)
    try:
        await signaling.publish(room, customer)
        [stream, *_] = await signaling.receive(room, agent, [customer])
        await until(connected(customer.publisher, agent.listener), 15, f"{path} connections")
        await asyncio.sleep(0.5)
        customer.track.gate.set()
        await collect(stream, warmup + packets)
    finally:
        for person in (customer, agent):
            await signaling.hang_up(room, person)
    check: Literal["both", "timestamp"] = "both" if signaling.kind == "earpiece" else "timestamp"
    return measured(path, stream, warmup, packets, check)


async def collect(stream: Stream, packets: int) -> None:
    await until(lambda: stream.packets >= packets, packets * PACKET_S * 2 + 10, "packets")


def measured(
    path: str, stream: Stream, warmup: int, packets: int, match: Literal["both", "timestamp"]
) -> Latency:
    if match == "timestamp":
        return Latency(path, stream.by_timestamp[warmup : warmup + packets])
    pairs = stream.pairs[warmup : warmup + packets]
    disagreements = sum(1 for p, t in pairs if not abs(p - t) <= 0.1)
    return Latency(path, [p for p, _ in pairs], disagreements)


# ---------------------------------------------------------------------------------------------
# Phase 2: press_talk → first whisper packet at the agent


async def click_to_whisper(
    signaling: EarpieceSignaling, canned: CannedOpus, switches: int
) -> ClickSamples:
    room = f"click-{secrets.token_hex(3)}"
    customer = Person("cust", Role.CUSTOMER, canned)
    agent = Person("agent", Role.AGENT, canned)
    coach = Person("sup-1", Role.SUPERVISOR, canned)
    samples = ClickSamples()
    try:
        await signaling.publish(room, customer)
        await signaling.publish(room, coach)
        [heard_customer, whisper, *_] = await signaling.receive(room, agent, [customer, coach])
        await signaling.command(room, coach, "start_whisper")  # push-to-talk: not audible yet
        await until(connected(customer.publisher, coach.publisher, agent.listener), 15, "click")
        customer.track.gate.set()
        coach.track.gate.set()
        await until(lambda: heard_customer.packets > 10, 10, "the customer's audio")
        if whisper.packets:
            raise RuntimeError("the agent hears the coach before any press_talk")
        for _ in range(switches):
            await asyncio.sleep(random.uniform(0, PACKET_S))  # any phase of the 20 ms cadence
            whisper.reset()
            clicked = time.perf_counter()
            await signaling.command(room, coach, "press_talk")
            samples.command_rtt_ms.append((time.perf_counter() - clicked) * 1000)
            async with asyncio.timeout(2):
                await whisper.arrived.wait()
            arrived = whisper.first_arrival
            if arrived is None or whisper.first_index is None:
                raise RuntimeError("the first whisper packet is not one the coach sent")
            samples.first_packet_ms.append((arrived - clicked) * 1000)
            sent = coach.sends.by_payload[whisper.first_index]
            samples.sent_after_click_ms.append((sent - clicked) * 1000)
            await signaling.command(room, coach, "release_talk")
            await until(lambda: time.perf_counter() - whisper.last_arrival > 0.1, 5, "release")
    finally:
        for person in (customer, coach, agent):
            await signaling.hang_up(room, person)
    return samples


# ---------------------------------------------------------------------------------------------
# Phase 3: CPU per forwarded stream, capacity


async def idle_cpu(server: ServerProcess, seconds: float) -> float:
    before, started = server.cpu_seconds(), time.perf_counter()
    await asyncio.sleep(seconds)
    return (server.cpu_seconds() - before) / (time.perf_counter() - started)


async def capacity(
    signaling: ServerSignaling,
    server: ServerProcess,
    canned: CannedOpus,
    steps: Sequence[int],
    options: MediaBenchOptions,
    report: Callable[[CapacityStep], None],
) -> list[CapacityStep]:
    rooms: list[Room] = []
    results: list[CapacityStep] = []
    try:
        for n in steps:
            while len(rooms) < n:
                room = Room(signaling, f"load-{len(rooms)}", canned)
                rooms.append(room)
                await room.open()
            await asyncio.sleep(min(1.0, options.window_s))  # the new rooms' start-up passes
            streams = [s for room in rooms for s in room.streams]
            for stream in streams:
                stream.reset()
            server_before, client_before = server.cpu_seconds(), time.process_time()
            started = time.perf_counter()
            await asyncio.sleep(options.window_s)
            elapsed = time.perf_counter() - started
            step = window_step(signaling.kind, n, streams, elapsed)
            step.server_cpu = (server.cpu_seconds() - server_before) / elapsed
            step.client_cpu = (time.process_time() - client_before) / elapsed
            step.degraded = degradation(step, results[0] if results else None, options)
            results.append(step)
            report(step)
            if step.degraded:
                break
    finally:
        for room in rooms:
            with contextlib.suppress(Exception):
                await room.close()
    return results


def window_step(
    kind: ServerKind, rooms: int, streams: list[Stream], elapsed: float
) -> CapacityStep:
    latencies = [
        x for s in streams for x in (s.by_payload if kind == "earpiece" else s.by_timestamp)
    ]
    received = sum(s.window_packets for s in streams)
    lost = sum(s.window_lost for s in streams)
    return CapacityStep(
        server=kind,
        rooms=rooms,
        streams=sum(1 for s in streams if s.window_packets),
        packets=received,
        server_cpu=0.0,
        client_cpu=0.0,
        p50_ms=percentile(latencies, 50) if len(latencies) > 1 else math.nan,
        p99_ms=percentile(latencies, 99) if len(latencies) > 1 else math.nan,
        loss=lost / max(1, received + lost),
    )


def degradation(step: CapacityStep, first: CapacityStep | None, options: MediaBenchOptions) -> str:
    expected_streams = step.rooms * 5
    if step.streams < expected_streams:
        return f"only {step.streams} of {expected_streams} streams carried packets"
    if first is not None and step.p99_ms > first.p99_ms + options.degraded_ms:
        return f"p99 > 1-room p99 + {options.degraded_ms:g} ms"
    if step.loss > 0.01:
        return "loss > 1 %"
    if step.server_cpu >= 0.95:
        return "server at one core"
    if step.client_cpu >= 0.95:
        return "client process at one core"
    return ""


# ---------------------------------------------------------------------------------------------
# Phase 4: memory soak


async def soak(
    signaling: ServerSignaling,
    server: ServerProcess,
    canned: CannedOpus,
    options: MediaBenchOptions,
) -> list[SoakSample]:
    samples: list[SoakSample] = []
    counts = {"opened": 0, "closed": 0}
    started = time.perf_counter()
    stop_at = started + options.soak_seconds

    def sample() -> None:
        samples.append(
            SoakSample(
                time.perf_counter() - started,
                counts["opened"],
                counts["closed"],
                server.rss_mb(),
                server.fds(),
            )
        )

    async def rooms_coming_and_going(slot: int) -> None:
        k = 0
        while time.perf_counter() < stop_at:
            room = Room(signaling, f"soak-{slot}-{k}", canned)
            try:
                await room.open(settle_s=0.1)
                counts["opened"] += 1
                await asyncio.sleep(
                    min(random.uniform(2, 5), max(0, stop_at - time.perf_counter()))
                )
            finally:
                await room.close()
            counts["closed"] += 1
            k += 1

    async def sampler() -> None:
        while True:
            sample()
            await asyncio.sleep(options.soak_sample_s)

    sampling = asyncio.ensure_future(sampler())
    try:
        await asyncio.gather(*(rooms_coming_and_going(i) for i in range(options.soak_rooms)))
    finally:
        sampling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampling
    await asyncio.sleep(min(2.0, options.soak_seconds))  # the server closes the last ones
    sample()
    return samples
