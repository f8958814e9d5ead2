"""``earpiece bench media``: the media plane against aiortc's usual relay, side by side.

The server under test runs in a child process (``python -m services.bench_media serve KIND``)
so that its CPU and memory can be read from ``/proc/PID`` apart from the clients', which run
in this process. Two servers take turns, each in a fresh child:

* ``earpiece``: the whole app (``create_app``: WHIP/WHEP, commands, room actors, Router,
  ``tap_opus`` → ``SlotTrack``) under uvicorn, on a redis-server started here in a temporary
  directory;
* ``relay``: the usual aiortc way, a few lines of Starlette: each published track is handed
  to every consumer's connection through ``aiortc.contrib.media.MediaRelay``, so the server
  decodes it (behind aiortc's receive jitter buffer) and encodes it again per consumer.

Clients are kept cheap so that a 2-core machine can load the server: publishers send Opus
packets encoded once (``CannedOpus``: every payload differs, so a payload names its packet)
and receivers count packets without decoding them.

How one packet is timed, from the publisher's ``RTCRtpSender`` to the receiving client's
``RTCRtpReceiver``: the publisher's DTLS transport ``_send_rtp`` is wrapped to note the time
each RTP packet is handed to it (before SRTP and ``sendto``), keyed by its RTP timestamp; each
client receiver's ``_handle_rtp_packet`` is replaced by one that notes the arrival time (after
``recvfrom`` and SRTP) and drops the packet (no jitter buffer, no decoding). A received packet
is matched to its send in one of two ways:

* by payload (Earpiece and the direct floor): the payload arrives byte for byte, and names the
  packet within a 60-second cycle; exact;
* by RTP timestamp (the relay re-encodes, so payloads differ): the publisher stays silent
  until both connections are up, so the first packet out is the first packet in, and from
  there the timestamp's distance from the first one counts packets on both sides (the
  relay's encoder keeps the decoded frames' pts). Phase 1 computes both for Earpiece and the
  floor and reports how often they disagree, as a check of the method.

All clocks are ``time.perf_counter()`` (CLOCK_MONOTONIC, one clock for every process).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fractions
import logging
import math
import os
import platform
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import av
import httpx
import numpy as np
import redis.asyncio as redis
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RtpPacket

from events.room import Role
from services.auth import mint_token
from services.bench_store import percentile
from services.ice import gather_on
from services.redis_server import RedisServer, free_loopback_port

FRAME = 960
"""Samples in one 20 ms Opus packet at 48 kHz: the RTP timestamp step."""
PACKET_S = 0.020
TIME_BASE = fractions.Fraction(1, 48_000)
SECRET_ENV = "EARPIECE_BENCH_JWT_SECRET"
ServerKind = Literal["earpiece", "relay"]
PHASES = ("latency", "click", "capacity", "soak")


# ---------------------------------------------------------------------------------------------
# Options and results


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


def options_from(args: Any) -> MediaBenchOptions:
    """Options from ``earpiece bench media``'s arguments: ``--quick``, then any knob given."""
    options = MediaBenchOptions.quick() if args.quick else MediaBenchOptions()

    def rooms(text: str) -> tuple[int, ...]:
        return tuple(int(n) for n in text.split(","))

    knobs: dict[str, Any] = {
        "phases": tuple(args.phases.split(",")) if args.phases else None,
        "packets": args.packets,
        "switches": args.switches,
        "earpiece_rooms": rooms(args.earpiece_rooms) if args.earpiece_rooms else None,
        "relay_rooms": rooms(args.relay_rooms) if args.relay_rooms else None,
        "window_s": args.window,
        "degraded_ms": args.degraded_ms,
        "soak_seconds": args.soak_seconds,
        "soak_rooms": args.soak_rooms,
    }
    unknown = set(knobs["phases"] or ()) - set(PHASES)
    if unknown:
        raise SystemExit(f"unknown phases {sorted(unknown)}: choose from {', '.join(PHASES)}")
    return dataclasses.replace(options, **{k: v for k, v in knobs.items() if v is not None})


@dataclass
class Latency:
    path: str
    latencies_ms: list[float]
    disagreements: int | None = None
    """Packets whose payload match and timestamp match differ by > 0.1 ms (None: not checked)."""


@dataclass
class ClickSamples:
    command_rtt_ms: list[float] = field(default_factory=list)
    first_packet_ms: list[float] = field(default_factory=list)
    sent_after_click_ms: list[float] = field(default_factory=list)
    """When the first forwarded packet left the coach, after the click: the 20 ms cadence."""


@dataclass
class CapacityStep:
    server: ServerKind
    rooms: int
    streams: int
    """Forwarded consumer streams (server → client) that carried packets in the window."""
    packets: int
    server_cpu: float
    """Share of one core, 1.0 = 100 %."""
    client_cpu: float
    p50_ms: float
    p99_ms: float
    loss: float
    degraded: str = ""


@dataclass
class SoakSample:
    at_s: float
    opened: int
    closed: int
    rss_mb: float
    fds: int


@dataclass
class MediaReport:
    latency: list[Latency] = field(default_factory=list)
    click: ClickSamples | None = None
    capacity: list[CapacityStep] = field(default_factory=list)
    idle_cpu: dict[str, float] = field(default_factory=dict)
    soak: list[SoakSample] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Clients: canned Opus out, timed packets in


class CannedOpus:
    """Mono 32 kbit/s Opus packets encoded once from noise: every payload differs, so a payload
    names its packet within a cycle of ``len(payloads)`` packets."""

    def __init__(self, count: int = 3000, seed: int = 7) -> None:
        codec: Any = av.CodecContext.create("libopus", "w")
        codec.bit_rate = 32_000
        codec.sample_rate = 48_000
        codec.layout = "mono"
        codec.format = "s16"
        codec.time_base = TIME_BASE
        noise = np.random.default_rng(seed)
        payloads: list[bytes] = []
        started = time.perf_counter()
        pts = 0
        while len(payloads) < count:
            samples = (noise.standard_normal(FRAME) * 3000).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = 48_000
            frame.pts = pts
            frame.time_base = TIME_BASE
            pts += FRAME
            payloads.extend(bytes(p) for p in codec.encode(frame))
        self.encode_us = (time.perf_counter() - started) / len(payloads) * 1e6
        self.payloads = payloads[:count]
        self.index = {payload: i for i, payload in enumerate(self.payloads)}
        if len(self.index) != count:
            raise RuntimeError("canned Opus payloads repeat: they cannot name their packets")
        self.mean_bytes = sum(map(len, self.payloads)) / count


class PacketTrack(MediaStreamTrack):
    """A microphone that sends canned Opus packets in real time once ``gate`` is set."""

    kind = "audio"

    def __init__(self, canned: CannedOpus) -> None:
        super().__init__()
        self.canned = canned
        self.gate = asyncio.Event()
        self._sent = 0
        self._start = 0.0

    async def recv(self) -> av.Packet[Any]:
        if self.readyState != "live":
            raise MediaStreamError
        if not self.gate.is_set():
            await self.gate.wait()
        if self._sent == 0:
            self._start = time.perf_counter()
        delay = self._start + self._sent * PACKET_S - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        packet = av.Packet(self.canned.payloads[self._sent % len(self.canned.payloads)])
        packet.pts = self._sent * FRAME
        packet.time_base = TIME_BASE
        self._sent += 1
        return packet


class SendLog:
    """When each packet of one publisher was handed to its DTLS transport."""

    def __init__(self, cycle: int) -> None:
        self.cycle = cycle
        self.by_order: list[float] = []
        """Index: the packet's RTP timestamp distance from the first one, in packets."""
        self.by_payload = [math.nan] * cycle
        """Index: the packet's canned payload (the latest send of it)."""
        self._first_ts: int | None = None

    def sent(self, data: bytes, at: float) -> None:
        if len(data) < 12 or 192 <= data[1] <= 208:
            return  # RTCP goes through the same call
        timestamp = int.from_bytes(data[4:8], "big")
        if self._first_ts is None:
            self._first_ts = timestamp
        n = ((timestamp - self._first_ts) % (1 << 32)) // FRAME
        if n < len(self.by_order):
            return  # a retransmission: the first send is the one that counts
        while len(self.by_order) < n:
            self.by_order.append(math.nan)
        self.by_order.append(at)
        self.by_payload[n % self.cycle] = at


class Stream:
    """One track a client receives; what came, and how late, since the last ``reset()``."""

    def __init__(self, canned: CannedOpus, source: SendLog | None) -> None:
        self.canned = canned
        self.source = source
        self.packets = 0
        self.last_arrival = 0.0
        self._first_ts: int | None = None
        self.reset()

    def reset(self) -> None:
        self.by_payload: list[float] = []
        self.by_timestamp: list[float] = []
        self.pairs: list[tuple[float, float]] = []
        self.window_packets = 0
        self._window_keys: tuple[int, int] | None = None
        self.first_arrival: float | None = None
        self.first_index: int | None = None
        self.arrived = asyncio.Event()

    def received(self, packet: RtpPacket, at: float) -> None:
        self.packets += 1
        self.window_packets += 1
        self.last_arrival = at
        index = self.canned.index.get(packet.payload)
        if self.first_arrival is None:
            self.first_arrival, self.first_index = at, index
            self.arrived.set()
        if self._first_ts is None:
            self._first_ts = packet.timestamp
        n = ((packet.timestamp - self._first_ts) % (1 << 32)) // FRAME
        low, high = self._window_keys or (n, n)
        self._window_keys = (min(low, n), max(high, n))
        if self.source is None:
            return
        by_payload = by_timestamp = math.nan
        if index is not None:
            by_payload = (at - self.source.by_payload[index]) * 1000
            if not math.isnan(by_payload):
                self.by_payload.append(by_payload)
        if n < len(self.source.by_order):
            by_timestamp = (at - self.source.by_order[n]) * 1000
            if not math.isnan(by_timestamp):
                self.by_timestamp.append(by_timestamp)
        self.pairs.append((by_payload, by_timestamp))

    @property
    def window_lost(self) -> int:
        if self._window_keys is None:
            return 0
        low, high = self._window_keys
        return max(0, high - low + 1 - self.window_packets)


def time_sends(pc: RTCPeerConnection, log: SendLog) -> None:
    """Note when each RTP packet of ``pc``'s sender reaches its transport (call once connected
    is near: after the answer is set, before any packet is sent)."""
    transport = pc.getSenders()[0].transport
    send_rtp = transport._send_rtp

    async def timed_send_rtp(data: bytes) -> None:
        log.sent(data, time.perf_counter())
        await send_rtp(data)

    transport._send_rtp = timed_send_rtp  # type: ignore[method-assign]


def time_receives(pc: RTCPeerConnection, streams: Sequence[Stream]) -> None:
    """Replace each receiver's packet handling by a note in its stream: nothing is buffered,
    decoded or reported (the server's senders need none of it)."""
    for transceiver, stream in zip(pc.getTransceivers(), streams, strict=False):

        async def note(packet: RtpPacket, arrival_time_ms: int, stream: Stream = stream) -> None:
            stream.received(packet, time.perf_counter())

        transceiver.receiver._handle_rtp_packet = note  # type: ignore[method-assign]


def peer_connection() -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


async def until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            while not condition():  # noqa: ASYNC110 (polled with a deadline, as aiortc's tests do)
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise RuntimeError(f"timed out after {timeout_s} s waiting for {what}") from None


def connected(*pcs: RTCPeerConnection | None) -> Callable[[], bool]:
    return lambda: all(pc is None or pc.connectionState == "connected" for pc in pcs)


# ---------------------------------------------------------------------------------------------
# People and the two servers' signaling


class Person:
    def __init__(self, subject: str, role: Role, canned: CannedOpus) -> None:
        self.subject = subject
        self.role = role
        self.track = PacketTrack(canned)
        self.sends = SendLog(len(canned.payloads))
        self.publisher: RTCPeerConnection | None = None
        self.listener: RTCPeerConnection | None = None
        self.streams: list[Stream] = []
        self.locations: list[str] = []

    async def close(self) -> None:
        self.track.stop()
        for pc in (self.publisher, self.listener):
            if pc is not None:
                await pc.close()


class Signaling(Protocol):
    kind: ServerKind

    async def publish(self, room: str, person: Person) -> None: ...

    async def receive(
        self, room: str, person: Person, sources: Sequence[Person | None]
    ) -> list[Stream]: ...

    async def command(self, room: str, person: Person, command: str, **fields: object) -> None: ...

    async def hang_up(self, room: str, person: Person) -> None: ...


async def offer_to(
    http: httpx.AsyncClient, url: str, pc: RTCPeerConnection, headers: dict[str, str]
) -> str:
    await pc.setLocalDescription(await pc.createOffer())
    response = await http.post(
        url, content=pc.localDescription.sdp, headers={**headers, "content-type": "application/sdp"}
    )
    response.raise_for_status()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=response.text, type="answer"))
    return str(response.headers.get("location", ""))


async def publish_with(
    http: httpx.AsyncClient, url: str, person: Person, headers: dict[str, str]
) -> None:
    person.publisher = pc = peer_connection()
    pc.addTransceiver(person.track, direction="sendonly")
    person.locations.append(await offer_to(http, url, pc, headers))
    time_sends(pc, person.sends)


async def receive_with(
    http: httpx.AsyncClient,
    url: str,
    person: Person,
    sources: Sequence[Person | None],
    headers: dict[str, str],
    canned: CannedOpus,
) -> list[Stream]:
    person.listener = pc = peer_connection()
    for _ in sources:
        pc.addTransceiver("audio", direction="recvonly")
    person.locations.append(await offer_to(http, url, pc, headers))
    person.streams = [Stream(canned, None if s is None else s.sends) for s in sources]
    time_receives(pc, person.streams)
    return person.streams


class EarpieceSignaling:
    """WHIP/WHEP and commands of the real service, with development tokens."""

    kind: ServerKind = "earpiece"
    coach_slots = 4

    def __init__(self, http: httpx.AsyncClient, secret: str, canned: CannedOpus) -> None:
        self.http = http
        self.secret = secret
        self.canned = canned

    def headers(self, room: str, person: Person) -> dict[str, str]:
        token = mint_token(
            self.secret,
            subject=person.subject,
            name=person.subject,
            room=room,
            role=person.role,
            whisper=person.role is Role.SUPERVISOR,
            audience="earpiece",
            issuer="earpiece",
        )
        return {"authorization": f"Bearer {token}"}

    async def publish(self, room: str, person: Person) -> None:
        await publish_with(self.http, f"/rooms/{room}/whip", person, self.headers(room, person))

    async def receive(
        self, room: str, person: Person, sources: Sequence[Person | None]
    ) -> list[Stream]:
        # The offer opens every slot of the role; ``sources`` says who feeds the first ones.
        slots = {Role.CUSTOMER: 1, Role.AGENT: 1 + self.coach_slots, Role.SUPERVISOR: 2}
        padded = [*sources, *[None] * (slots[person.role] - len(sources))]
        url = f"/rooms/{room}/whep"
        headers = self.headers(room, person)
        return await receive_with(self.http, url, person, padded, headers, self.canned)

    async def command(self, room: str, person: Person, command: str, **fields: object) -> None:
        response = await self.http.post(
            f"/rooms/{room}/commands",
            json={"command": command, **fields},
            headers=self.headers(room, person),
        )
        if response.status_code not in (200, 201):
            raise RuntimeError(f"{command} by {person.subject}: {response.text}")

    async def hang_up(self, room: str, person: Person) -> None:
        headers = self.headers(room, person)
        for location in person.locations:
            await self.http.delete(location, headers=headers)
        person.locations.clear()
        await person.close()


class RelaySignaling:
    """The baseline's signaling: routes are fixed by the receiver's ``from`` list."""

    kind: ServerKind = "relay"

    def __init__(self, http: httpx.AsyncClient, canned: CannedOpus) -> None:
        self.http = http
        self.canned = canned

    async def publish(self, room: str, person: Person) -> None:
        await publish_with(self.http, f"/relay/{room}/publish/{person.subject}", person, {})

    async def receive(
        self, room: str, person: Person, sources: Sequence[Person | None]
    ) -> list[Stream]:
        names = ",".join(s.subject for s in sources if s is not None)
        url = f"/relay/{room}/receive/{person.subject}?from={names}"
        return await receive_with(self.http, url, person, sources, {}, self.canned)

    async def command(self, room: str, person: Person, command: str, **fields: object) -> None:
        return None  # the relay's routes never change

    async def hang_up(self, room: str, person: Person) -> None:
        await person.close()


class Room:
    """A call: a customer and an agent talking, one coach whispering open-mic (and hearing
    both). Five forwarded streams: customer ⇄ agent, coach → agent, customer/agent → coach."""

    def __init__(self, signaling: Signaling, room_id: str, canned: CannedOpus) -> None:
        self.signaling = signaling
        self.room_id = room_id
        self.customer = Person("cust", Role.CUSTOMER, canned)
        self.agent = Person("agent", Role.AGENT, canned)
        self.coach = Person("sup-1", Role.SUPERVISOR, canned)
        self.people = (self.customer, self.agent, self.coach)

    async def open(self, settle_s: float = 0.5) -> None:
        s, room = self.signaling, self.room_id
        for person in self.people:
            await s.publish(room, person)
        await s.receive(room, self.customer, [self.agent])
        await s.receive(room, self.agent, [self.customer, self.coach])
        await s.receive(room, self.coach, [self.customer, self.agent])
        await s.command(room, self.coach, "set_coach_mode", mode="open_mic")
        await s.command(room, self.coach, "start_whisper")
        pcs = [pc for p in self.people for pc in (p.publisher, p.listener)]
        await until(connected(*pcs), 15, f"room {room} to connect")
        # The servers' senders start pulling from their tracks once connected: let them, so
        # that the first packet every receiver sees is the first one sent.
        await asyncio.sleep(settle_s)
        for person in self.people:
            person.track.gate.set()

    @property
    def streams(self) -> list[Stream]:
        return [s for p in self.people for s in p.streams if s.source is not None]

    async def close(self) -> None:
        for person in self.people:
            await self.signaling.hang_up(self.room_id, person)


# ---------------------------------------------------------------------------------------------
# The server process


class ServerProcess:
    """A server in a child process of ours, stopped by its PID (SIGTERM, then SIGKILL)."""

    def __init__(self, kind: ServerKind, redis_url: str, secret: str, log_dir: Path) -> None:
        self.kind = kind
        self.redis_url = redis_url
        self.secret = secret
        self.port = free_loopback_port()
        self.log_path = log_dir / f"{kind}-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("the server is not running")
        return self.process.pid

    async def __aenter__(self) -> ServerProcess:
        command = [sys.executable, "-m", "services.bench_media", "serve", self.kind]
        command += ["--port", str(self.port), "--redis-url", self.redis_url]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(  # noqa: ASYNC220 (returns at once)
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, SECRET_ENV: self.secret},
            )
        try:
            await self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    async def _wait_healthy(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(base_url=self.url, timeout=2) as http:
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get("/healthz")).status_code == 200:
                        return
                if self.process is None or self.process.poll() is not None:
                    raise RuntimeError(f"{self.kind} server exited:\n{self.log_tail()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.kind} server did not start:\n{self.log_tail()}")
                await asyncio.sleep(0.05)

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    async def __aexit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.pid)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS in /proc status")

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, all its threads, from ``/proc/PID/stat``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
    signaling: Signaling, canned: CannedOpus, warmup: int, packets: int, path: str
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
    signaling: Signaling,
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
    signaling: Signaling,
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


def slope_mb_per_min(samples: Sequence[SoakSample]) -> float:
    if len(samples) < 2:
        return math.nan
    t = np.array([s.at_s for s in samples])
    rss = np.array([s.rss_mb for s in samples])
    return float(np.polyfit(t, rss, 1)[0] * 60)


# ---------------------------------------------------------------------------------------------
# The run, and its tables


def ms(value: float) -> str:
    return f"{value:.2f}"


def stats_row(name: str, samples: Sequence[float], *extra: str) -> str:
    p50, p99 = percentile(list(samples), 50), percentile(list(samples), 99)
    cells = [name, f"{len(samples):,}", ms(p50), ms(p99), ms(max(samples)), *extra]
    return "| " + " | ".join(cells) + " |"


def print_latency(results: list[Latency]) -> None:
    floor = next((r for r in results if r.path.startswith("direct")), None)
    base50 = percentile(floor.latencies_ms, 50) if floor else 0.0
    base99 = percentile(floor.latencies_ms, 99) if floor else 0.0
    print("| path | packets | p50 ms | p99 ms | max ms | added p50 ms | added p99 ms | check |")
    print("|---|---|---|---|---|---|---|---|")
    added: dict[str, float] = {}
    for r in results:
        p50, p99 = percentile(r.latencies_ms, 50), percentile(r.latencies_ms, 99)
        added[r.path] = p99 - base99
        check = (
            "timestamp match only"
            if r.disagreements is None
            else f"{r.disagreements} of {len(r.latencies_ms)} disagree"
        )
        extra = ["—", "—"] if r is floor else [ms(p50 - base50), ms(p99 - base99)]
        print(stats_row(r.path, r.latencies_ms, *extra, check), flush=True)
    earpiece = next((v for k, v in added.items() if k.startswith("earpiece")), None)
    relay = next((v for k, v in added.items() if k.startswith("relay")), None)
    if earpiece is not None and relay is not None and earpiece > 0:
        print(f"\nAdded p99: relay / earpiece = {relay / earpiece:,.0f}x", flush=True)


def print_click(samples: ClickSamples) -> None:
    print("| press_talk (push-to-talk) | samples | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|")
    print(stats_row("HTTP command round trip", samples.command_rtt_ms), flush=True)
    print(stats_row("click → first whisper packet at the agent", samples.first_packet_ms))
    print(stats_row("click → that packet leaves the coach", samples.sent_after_click_ms))
    ratio = percentile(samples.first_packet_ms, 50) / percentile(samples.command_rtt_ms, 50)
    print(f"\nclick → first packet p50 = {ratio:.2f}x the command's round trip p50", flush=True)


CAPACITY_HEADER = (
    "| server | rooms | streams | server CPU % core | CPU % per stream | client CPU % | "
    "p50 ms | p99 ms | loss % | stop |\n|---|---|---|---|---|---|---|---|---|---|"
)


def capacity_row(step: CapacityStep) -> str:
    per_stream = step.server_cpu / step.streams * 100 if step.streams else math.nan
    cells = [
        step.server,
        str(step.rooms),
        str(step.streams),
        f"{step.server_cpu * 100:.1f}",
        f"{per_stream:.2f}",
        f"{step.client_cpu * 100:.1f}",
        ms(step.p50_ms),
        ms(step.p99_ms),
        f"{step.loss * 100:.2f}",
        step.degraded or "",
    ]
    return "| " + " | ".join(cells) + " |"


def per_core(steps: Sequence[CapacityStep], kind: ServerKind) -> tuple[float, float, int] | None:
    """(% of a core per stream, forwarded streams per core, rooms per core) at the largest step
    that was not degraded."""
    healthy = [s for s in steps if s.server == kind and not s.degraded and s.streams]
    if not healthy:
        return None
    best = healthy[-1]
    per_stream = best.server_cpu / best.streams
    return per_stream * 100, 1 / per_stream, int(1 / (best.server_cpu / best.rooms))


def print_capacity_summary(report: MediaReport) -> None:
    print("\n| server | idle CPU % | % core per stream | streams per core | rooms per core |")
    print("|---|---|---|---|---|")
    found: dict[str, tuple[float, float, int]] = {}
    for kind in ("earpiece", "relay"):
        figures = per_core(report.capacity, kind)
        if figures is None:
            continue
        found[kind] = figures
        idle = report.idle_cpu.get(kind, math.nan) * 100
        print(f"| {kind} | {idle:.1f} | {figures[0]:.2f} | {figures[1]:,.0f} | {figures[2]:,} |")
    if len(found) == 2:
        ratio = found["earpiece"][1] / found["relay"][1]
        print(f"\nForwarded streams per core: earpiece / relay = {ratio:,.1f}x", flush=True)


def print_soak(samples: list[SoakSample]) -> None:
    print("| t s | rooms opened | rooms closed | server RSS MB | server fds |")
    print("|---|---|---|---|---|")
    every = max(1, len(samples) // 15)
    for i, s in enumerate(samples):
        if i % every == 0 or i == len(samples) - 1:
            cells = [f"{s.at_s:.0f}", str(s.opened), str(s.closed), f"{s.rss_mb:.1f}", str(s.fds)]
            print("| " + " | ".join(cells) + " |")
    rss = [s.rss_mb for s in samples]
    half = samples[len(samples) // 2 :]
    print(
        f"\nRSS start {rss[0]:.1f} MB, end {rss[-1]:.1f} MB, peak {max(rss):.1f} MB; slope "
        f"{slope_mb_per_min(samples):+.2f} MB/min overall, "
        f"{slope_mb_per_min(half):+.2f} MB/min over the second half; "
        f"fds {samples[0].fds} → {samples[-1].fds}",
        flush=True,
    )


@contextlib.asynccontextmanager
async def client_for(server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        yield http


async def run_media_bench(options: MediaBenchOptions) -> MediaReport:
    """Run the phases; Ctrl-C (``asyncio.run`` cancels this task) or SIGTERM stops every
    server, redis-server and connection it started before it returns."""
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if task is not None and threading.current_thread() is threading.main_thread():
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await _run_phases(options)
    finally:
        if threading.current_thread() is threading.main_thread():
            loop.remove_signal_handler(signal.SIGTERM)


async def _run_phases(options: MediaBenchOptions) -> MediaReport:
    gather_on(["127.0.0.1"])
    for noisy in ("httpx", "aioice", "aiortc"):  # a line per request and ICE check otherwise
        logging.getLogger(noisy).setLevel(logging.WARNING)
    report = MediaReport()
    canned = CannedOpus()
    secret = secrets.token_urlsafe(32)
    print(
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}, Python "
        f"{platform.python_version()}, aiortc {_version('aiortc')}, PyAV {av.__version__}; "
        f"canned Opus {canned.mean_bytes:.0f} B a packet, encoded once at "
        f"{canned.encode_us:.0f} µs a packet\n",
        flush=True,
    )
    with (
        tempfile.TemporaryDirectory(prefix="bench-media-") as tmp,
        RedisServer(Path(tmp) / "redis") as redis_server,
    ):
        log_dir = Path(tmp)

        def server(kind: ServerKind) -> ServerProcess:
            return ServerProcess(kind, redis_server.url, secret, log_dir)

        def earpiece(http: httpx.AsyncClient) -> EarpieceSignaling:
            return EarpieceSignaling(http, secret, canned)

        if "latency" in options.phases or "click" in options.phases:
            async with server("earpiece") as running, client_for(running) as http:
                if "latency" in options.phases:
                    report.latency.append(
                        await direct_latency(canned, options.warmup, options.packets)
                    )
                    report.latency.append(
                        await server_latency(
                            earpiece(http),
                            canned,
                            options.warmup,
                            options.packets,
                            "earpiece (tap_opus → Router → SlotTrack)",
                        )
                    )
                if "click" in options.phases:
                    report.click = await click_to_whisper(earpiece(http), canned, options.switches)
        if "latency" in options.phases:
            async with server("relay") as running, client_for(running) as http:
                report.latency.append(
                    await server_latency(
                        RelaySignaling(http, canned),
                        canned,
                        options.warmup,
                        options.packets,
                        "relay (MediaRelay: decode + encode)",
                    )
                )
            print("### One-way latency, publisher's sender → receiving client\n")
            print_latency(report.latency)
        if report.click is not None:
            print("\n### Click → first whisper packet\n")
            print_click(report.click)

        if "capacity" in options.phases:
            print("\n### Capacity: rooms of customer + agent + one coach whispering open-mic\n")
            print(CAPACITY_HEADER, flush=True)

            def show(step: CapacityStep) -> None:
                print(capacity_row(step), flush=True)

            for kind, steps in (
                ("earpiece", options.earpiece_rooms),
                ("relay", options.relay_rooms),
            ):
                async with server(kind) as running, client_for(running) as http:  # type: ignore[arg-type]
                    report.idle_cpu[kind] = await idle_cpu(running, min(2.0, options.window_s))
                    signaling: Signaling = (
                        earpiece(http) if kind == "earpiece" else RelaySignaling(http, canned)
                    )
                    report.capacity += await capacity(
                        signaling, running, canned, steps, options, show
                    )
            print_capacity_summary(report)

        if "soak" in options.phases:
            print(
                f"\n### Memory soak: {options.soak_rooms} rooms at a time, each 2-5 s, "
                f"for {options.soak_seconds:g} s\n",
                flush=True,
            )
            async with server("earpiece") as running, client_for(running) as http:
                report.soak = await soak(earpiece(http), running, canned, options)
            print_soak(report.soak)
    return report


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


# ---------------------------------------------------------------------------------------------
# The servers, as child processes: ``python -m services.bench_media serve KIND``


def create_relay_app() -> Any:
    """The baseline: aiortc's MediaRelay hands each published track to its consumers."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    relay = MediaRelay()
    sources: dict[tuple[str, str], MediaStreamTrack] = {}
    pcs: set[RTCPeerConnection] = set()

    def connection() -> RTCPeerConnection:
        pc = peer_connection()
        pcs.add(pc)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                pcs.discard(pc)
                await pc.close()

        return pc

    async def publish(request: Request) -> Response:
        room, who = request.path_params["room"], request.path_params["who"]
        pc = connection()

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            sources[(room, who)] = track

        await pc.setRemoteDescription(
            RTCSessionDescription(sdp=(await request.body()).decode(), type="offer")
        )
        await pc.setLocalDescription(await pc.createAnswer())
        return Response(pc.localDescription.sdp, 201, media_type="application/sdp")

    async def receive(request: Request) -> Response:
        room = request.path_params["room"]
        names = request.query_params["from"].split(",")
        async with asyncio.timeout(10):
            while any((room, name) not in sources for name in names):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        pc = connection()
        await pc.setRemoteDescription(
            RTCSessionDescription(sdp=(await request.body()).decode(), type="offer")
        )
        for name in names:
            pc.addTrack(relay.subscribe(sources[(room, name)]))
        await pc.setLocalDescription(await pc.createAnswer())
        return Response(pc.localDescription.sdp, 201, media_type="application/sdp")

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await asyncio.gather(*(pc.close() for pc in list(pcs)))

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/relay/{room}/publish/{who}", publish, methods=["POST"]),
            Route("/relay/{room}/receive/{who}", receive, methods=["POST"]),
        ],
        lifespan=lifespan,
    )


async def serve(kind: ServerKind, port: int, redis_url: str) -> None:
    import uvicorn

    from services.cli import ShutdownOnSignal

    gather_on(["127.0.0.1"])
    client: redis.Redis | None = None
    if kind == "earpiece":
        from services.app import create_app
        from services.settings import Settings

        client = redis.Redis.from_url(redis_url)
        settings = Settings(redis_url=redis_url, jwt_secret=os.environ[SECRET_ENV], port=port)
        app = create_app(settings, client)
    else:
        app = create_relay_app()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    try:
        await ShutdownOnSignal(config).serve()
    finally:
        if client is not None:
            await client.aclose()


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m services.bench_media")
    commands = parser.add_subparsers(dest="command", required=True)
    serving = commands.add_parser("serve", help="a server under test (started by the bench)")
    serving.add_argument("kind", choices=["earpiece", "relay"])
    serving.add_argument("--port", type=int, required=True)
    serving.add_argument("--redis-url", required=True)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.kind, args.port, args.redis_url))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
