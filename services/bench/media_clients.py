"""The media bench's clients: canned Opus out, timed packets in.

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
import fractions
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import av
import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RtpPacket

FRAME = 960
"""Samples in one 20 ms Opus packet at 48 kHz: the RTP timestamp step."""
PACKET_S = 0.020
TIME_BASE = fractions.Fraction(1, 48_000)


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
