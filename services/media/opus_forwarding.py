"""Forward Opus RTP payloads through aiortc without decoding or re-encoding them.

aiortc relays a received track by decoding it, measuring its level in pure Python and
encoding it again for every sender: ~12 % of a core per stream and ~80 ms of receive jitter
buffer. An SFU needs none of that. Two small hooks, both on aiortc 1.16 (pinned in
pyproject.toml; ``tests/services/media/test_opus_forwarding.py`` fails loudly if an upgrade
moves them):

* receiving: the per-instance ``RTCRtpReceiver._handle_rtp_packet(packet, arrival_time_ms)``
  is wrapped so each Opus payload also goes to a sink. The original still runs, so RTCP
  receiver reports and NACKs keep flowing; the receiver's decoder thread is stopped once
  started (``_RTCRtpReceiver__stop_decoder``), and with it no frame is ever decoded.
* sending: ``RTCRtpSender`` sends an ``av.Packet`` returned by its track's ``recv()`` as is
  (``encoder.pack``), with RTP timestamp = its origin + the packet's pts. ``SlotTrack`` is such
  a track; it rebases pts so that a slot fed by one speaker, then another, stays continuous.

Jitter buffering is left to the receiving clients, where it belongs.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections.abc import Callable
from typing import Any

import av
from aiortc import MediaStreamTrack, RTCRtpReceiver
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpparameters import RTCRtpReceiveParameters
from aiortc.rtp import RtpPacket

CLOCK_RATE = 48_000
TIME_BASE = fractions.Fraction(1, CLOCK_RATE)
FRAME_SAMPLES = 960  # 20 ms, the shortest gap put between two speakers on one slot


class OpusPacket:
    """One received Opus payload: ``timestamp`` is its RTP timestamp, unwrapped past 2**32."""

    __slots__ = ("arrival", "payload", "timestamp")

    def __init__(self, payload: bytes, timestamp: int, arrival: float) -> None:
        self.payload = payload
        self.timestamp = timestamp
        self.arrival = arrival


PacketSink = Callable[[OpusPacket], None]


class _Unwrapper:
    """RTP timestamps are 32-bit and wrap every ~25 hours at 48 kHz; pts must not."""

    def __init__(self) -> None:
        self._newest: int | None = None

    def __call__(self, timestamp: int) -> int:
        if self._newest is None:
            self._newest = timestamp
            return timestamp
        # The shortest signed distance from the newest timestamp seen, modulo 2**32.
        delta = (timestamp - self._newest + (1 << 31)) % (1 << 32) - (1 << 31)
        unwrapped = self._newest + delta
        self._newest = max(self._newest, unwrapped)
        return unwrapped


def tap_opus(receiver: RTCRtpReceiver, sink: PacketSink) -> None:
    """Hand every Opus payload ``receiver`` gets to ``sink``; never decode any.

    Call it from the peer connection's ``track`` event, which fires before the receiver
    starts.
    """
    handle_rtp_packet = receiver._handle_rtp_packet
    receive = receiver.receive
    opus_payload_types: set[int] = set()
    unwrap = _Unwrapper()

    async def tapped_receive(parameters: RTCRtpReceiveParameters) -> None:
        opus_payload_types.update(
            codec.payloadType
            for codec in parameters.codecs
            if codec.name.lower() == "opus" and codec.payloadType is not None
        )
        await receive(parameters)
        receiver._RTCRtpReceiver__stop_decoder()  # type: ignore[attr-defined]

    async def tapped_handle_rtp_packet(packet: RtpPacket, arrival_time_ms: int) -> None:
        await handle_rtp_packet(packet, arrival_time_ms)  # statistics for RTCP, NACKs
        if packet.payload_type in opus_payload_types and packet.payload:
            sink(OpusPacket(packet.payload, unwrap(packet.timestamp), time.monotonic()))

    receiver.receive = tapped_receive  # type: ignore[method-assign]
    receiver._handle_rtp_packet = tapped_handle_rtp_packet  # type: ignore[method-assign]


class SlotTrack(MediaStreamTrack):
    """An outgoing audio track that sends whatever Opus packets are pushed into it.

    One per receive slot of a consumer (e.g. the agent's "coach 2"). A slot may be fed by
    different speakers over time: each switch rebases their timestamps so the slot's stream
    runs on, spaced by the real pause, as one continuous RTP stream to the client.
    """

    kind = "audio"

    def __init__(self, *, queue_packets: int = 25) -> None:
        super().__init__()
        self._queue: asyncio.Queue[av.Packet[Any]] = asyncio.Queue(maxsize=queue_packets)
        self._source: object = None
        self._offset = 0
        self._last_pts: int | None = None
        self._last_arrival = 0.0
        self.dropped = 0

    def push(self, packet: OpusPacket, source: object) -> None:
        """Queue ``packet`` from ``source`` for sending; drops the oldest if the sender lags."""
        if source is not self._source:
            self._source = source
            self._offset = self._continuation(packet) - packet.timestamp
        pts = packet.timestamp + self._offset
        # The newest pts sent: a late packet must not pull the next speaker's start back onto it.
        self._last_pts = pts if self._last_pts is None else max(self._last_pts, pts)
        self._last_arrival = packet.arrival
        out = av.Packet(packet.payload)
        out.pts = pts
        out.time_base = TIME_BASE
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(out)

    def _continuation(self, packet: OpusPacket) -> int:
        """Where a new speaker's first packet goes: after the last one, by the wall-clock pause."""
        if self._last_pts is None:
            return 0
        pause = round((packet.arrival - self._last_arrival) * CLOCK_RATE)
        return self._last_pts + max(FRAME_SAMPLES, pause)

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        return await self._queue.get()
