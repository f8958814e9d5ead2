"""Opus forwarding without decoding (services/media/opus_forwarding.py), and its aiortc hooks.

The first tests are the guard: the module patches private parts of aiortc 1.16, and an aiortc
upgrade that moves them must fail here, saying what to re-check, rather than silently decode
again (or stop forwarding). Then a real loopback: publisher → server receiver tapped with
``tap_opus`` → ``SlotTrack`` → subscriber, proving the bytes arrive unchanged, nothing is
decoded on the server and RTCP still flows back to the publisher. Then the pure parts.
"""

from __future__ import annotations

import asyncio
import fractions
import inspect
import itertools
from collections.abc import AsyncIterator
from typing import Any

import av
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver, RTCRtpSender
from aiortc.codecs.opus import OpusDecoder, OpusEncoder
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from services.bench.participants import ToneTrack
from services.media.opus_forwarding import (
    FRAME_SAMPLES,
    TIME_BASE,
    OpusPacket,
    SlotTrack,
    _Unwrapper,
    tap_opus,
)

RECHECK = (
    "aiortc changed under services/media/opus_forwarding.py: re-check its hooks against the new "
    "RTCRtpReceiver/RTCRtpSender before raising the pin in pyproject.toml"
)

# --- the guard: aiortc still has what the hooks patch and call ---------------------------------


def parameters(function: Any) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_receiver_handles_rtp_packets_in_the_coroutine_the_tap_wraps() -> None:
    handle = getattr(RTCRtpReceiver, "_handle_rtp_packet", None)

    assert handle is not None, f"{RECHECK}: RTCRtpReceiver._handle_rtp_packet is gone"
    assert inspect.iscoroutinefunction(handle), f"{RECHECK}: _handle_rtp_packet is not async"
    assert parameters(handle) == ["self", "packet", "arrival_time_ms"], (
        f"{RECHECK}: _handle_rtp_packet{inspect.signature(handle)} is not "
        "(packet, arrival_time_ms), which tap_opus passes through"
    )


def test_receiver_starts_its_decoder_in_receive_and_can_stop_it() -> None:
    receive = RTCRtpReceiver.receive
    stop_decoder = getattr(RTCRtpReceiver, "_RTCRtpReceiver__stop_decoder", None)

    assert inspect.iscoroutinefunction(receive), f"{RECHECK}: RTCRtpReceiver.receive is not async"
    assert parameters(receive) == ["self", "parameters"], (
        f"{RECHECK}: RTCRtpReceiver.receive{inspect.signature(receive)} is not (parameters)"
    )
    assert stop_decoder is not None, (
        f"{RECHECK}: RTCRtpReceiver.__stop_decoder is gone; without it every received packet "
        "is decoded on the server"
    )
    assert parameters(stop_decoder) == ["self"], f"{RECHECK}: __stop_decoder takes arguments"
    assert "__decoder_thread" in inspect.getsource(receive), (
        f"{RECHECK}: receive() no longer starts the decoder thread that tap_opus stops"
    )


def test_sender_sends_a_packet_from_its_track_through_encoder_pack() -> None:
    source = inspect.getsource(RTCRtpSender._next_encoded_frame)

    assert "isinstance(data, Frame)" in source, (
        f"{RECHECK}: RTCRtpSender no longer tells frames (to encode) from packets"
    )
    assert ".pack(data)" in source, (
        f"{RECHECK}: RTCRtpSender no longer sends a track's av.Packet through encoder.pack, "
        "which SlotTrack relies on to forward without re-encoding"
    )


def test_opus_encoder_pack_keeps_the_payload_and_takes_the_timestamp_from_pts() -> None:
    packet = av.Packet(b"\x78opus")
    packet.pts = 2**32 + 960
    packet.time_base = TIME_BASE

    payloads, timestamp = OpusEncoder().pack(packet)

    assert payloads == [b"\x78opus"], f"{RECHECK}: OpusEncoder.pack changes the payload"
    assert timestamp == 2**32 + 960, f"{RECHECK}: OpusEncoder.pack does not use pts at 48 kHz"


# --- a real loopback: publisher → server (tap_opus → SlotTrack) → subscriber --------------------


async def negotiate(offerer: RTCPeerConnection, answerer: RTCPeerConnection) -> None:
    await offerer.setLocalDescription(await offerer.createOffer())
    await answerer.setRemoteDescription(offerer.localDescription)
    await answerer.setLocalDescription(await answerer.createAnswer())
    await offerer.setRemoteDescription(answerer.localDescription)


class Loopback:
    def __init__(self) -> None:
        self.publisher = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.server_in = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.server_out = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.subscriber = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.slot = SlotTrack()
        self.forwarded: list[OpusPacket] = []
        """What the server's tap handed on."""
        self.received: list[OpusPacket] = []
        """What the subscriber's receiver got."""
        self.server_receiver: RTCRtpReceiver | None = None

    async def start(self) -> None:
        # The subscriber's side first, so that the slot is being sent before packets come.
        self.subscriber.addTransceiver("audio", direction="recvonly")

        @self.subscriber.on("track")
        def on_subscriber_track(track: MediaStreamTrack) -> None:
            receiver = self.receiver_of(self.subscriber, track)
            tap_opus(receiver, self.received.append)

        await self.subscriber.setLocalDescription(await self.subscriber.createOffer())
        await self.server_out.setRemoteDescription(self.subscriber.localDescription)
        self.server_out.addTrack(self.slot)
        await self.server_out.setLocalDescription(await self.server_out.createAnswer())
        await self.subscriber.setRemoteDescription(self.server_out.localDescription)

        @self.server_in.on("track")
        def on_server_track(track: MediaStreamTrack) -> None:
            self.server_receiver = self.receiver_of(self.server_in, track)
            tap_opus(self.server_receiver, self.forward)

        self.publisher.addTransceiver(ToneTrack(440), direction="sendonly")
        await negotiate(self.publisher, self.server_in)

    def forward(self, packet: OpusPacket) -> None:
        self.forwarded.append(packet)
        self.slot.push(packet, source="publisher")

    @staticmethod
    def receiver_of(pc: RTCPeerConnection, track: MediaStreamTrack) -> RTCRtpReceiver:
        return next(r for r in pc.getReceivers() if r.track is track)

    async def close(self) -> None:
        for pc in (self.publisher, self.server_in, self.server_out, self.subscriber):
            await pc.close()


@pytest.fixture
async def encoded(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every payload an Opus encoder produces in the test: only the publisher encodes."""
    produced: list[bytes] = []
    encode = OpusEncoder.encode

    def recording_encode(self: OpusEncoder, frame: Any, force_keyframe: bool = False) -> Any:
        payloads, timestamp = encode(self, frame, force_keyframe)
        produced.extend(payloads)
        return payloads, timestamp

    monkeypatch.setattr(OpusEncoder, "encode", recording_encode)
    return produced


@pytest.fixture
async def decoded(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many frames any Opus decoder decodes in the test: both receivers are tapped."""
    calls: list[int] = []
    decode = OpusDecoder.decode

    def counting_decode(self: OpusDecoder, encoded_frame: Any) -> Any:
        calls.append(1)
        return decode(self, encoded_frame)

    monkeypatch.setattr(OpusDecoder, "decode", counting_decode)
    return calls


@pytest.fixture
async def loopback(encoded: list[bytes], decoded: list[int]) -> AsyncIterator[Loopback]:
    loop = Loopback()
    await loop.start()
    yield loop
    await loop.close()


async def until(condition: Any, seconds: float = 10) -> None:
    async with asyncio.timeout(seconds):
        while not await condition():
            await asyncio.sleep(0.02)


async def test_forwarded_payloads_reach_the_subscriber_byte_identical(
    loopback: Loopback, encoded: list[bytes]
) -> None:
    async def enough() -> bool:
        return len(loopback.received) >= 50  # one second of 20 ms packets

    await until(enough)

    received = [packet.payload for packet in loopback.received]
    assert loopback.slot.dropped == 0, "the server's sender fell behind: packets were dropped"
    assert len(set(received)) > 1, "every packet carried the same bytes: not a real stream"
    first = encoded.index(received[0])
    assert received == encoded[first : first + len(received)]
    timestamps = [packet.timestamp for packet in loopback.received]
    assert {b - a for a, b in itertools.pairwise(timestamps)} == {FRAME_SAMPLES}


async def test_server_receiver_decodes_nothing(loopback: Loopback, decoded: list[int]) -> None:
    async def forwarding() -> bool:
        return len(loopback.forwarded) >= 25

    await until(forwarding)
    receiver = loopback.server_receiver
    assert receiver is not None

    assert receiver._RTCRtpReceiver__decoder_thread is None  # type: ignore[attr-defined]
    assert decoded == []
    # The stopped decoder ended the track before any frame was queued for it.
    with pytest.raises(MediaStreamError):
        await asyncio.wait_for(receiver.track.recv(), 1)


async def test_server_receiver_still_sends_receiver_reports_to_the_publisher(
    loopback: Loopback,
) -> None:
    async def reported() -> bool:
        stats = await loopback.publisher.getStats()
        return any(s.type == "remote-inbound-rtp" and s.packetsReceived > 0 for s in stats.values())

    await until(reported)


# --- _Unwrapper --------------------------------------------------------------------------------

WRAP = 2**32


def test_unwrapper_returns_the_first_timestamp_as_it_is() -> None:
    assert _Unwrapper()(123_456) == 123_456


def test_unwrapper_counts_on_past_2_to_the_32() -> None:
    unwrap = _Unwrapper()
    timestamps = [WRAP - 1920, WRAP - 960, 0, 960, 1920]

    assert [unwrap(t) for t in timestamps] == [
        WRAP - 1920,
        WRAP - 960,
        WRAP,
        WRAP + 960,
        WRAP + 1920,
    ]


def test_unwrapper_places_a_late_packet_from_before_the_wrap_before_it() -> None:
    unwrap = _Unwrapper()
    unwrap(WRAP - 960)
    unwrap(960)  # the wrap

    assert unwrap(WRAP - 480) == WRAP - 480
    assert unwrap(1920) == WRAP + 1920  # a late packet does not move the newest back


def test_unwrapper_places_a_packet_just_after_the_wrap_after_it_when_it_arrives_early() -> None:
    unwrap = _Unwrapper()
    unwrap(WRAP - 960)

    assert unwrap(480) == WRAP + 480
    assert unwrap(WRAP - 480) == WRAP - 480


def test_unwrapper_keeps_counting_over_several_wraps() -> None:
    unwrap = _Unwrapper()
    step = 2**30
    seen = [unwrap((n * step) % WRAP) for n in range(10)]

    assert seen == [n * step for n in range(10)]


# --- SlotTrack ---------------------------------------------------------------------------------


def packet(timestamp: int, arrival: float, payload: bytes = b"opus") -> OpusPacket:
    return OpusPacket(payload, timestamp, arrival)


async def drain(track: SlotTrack) -> list[av.Packet[Any]]:
    out = []
    while not track._queue.empty():
        out.append(await track.recv())
    return out


async def test_slot_track_starts_at_pts_0_and_keeps_the_speakers_spacing() -> None:
    track = SlotTrack()
    for n in range(3):
        track.push(packet(1_000_000 + n * 960, 10 + n * 0.02, bytes([n])), source="a")

    sent = await drain(track)

    assert [p.pts for p in sent] == [0, 960, 1920]
    assert [bytes(p) for p in sent] == [b"\x00", b"\x01", b"\x02"]
    assert {p.time_base for p in sent} == {fractions.Fraction(1, 48_000)}


async def test_slot_track_rebases_a_new_speaker_after_the_real_pause() -> None:
    track = SlotTrack()
    track.push(packet(5_000, 10.00), source="a")
    track.push(packet(5_960, 10.02), source="a")
    track.push(packet(3_000_000_000, 10.52), source="b")  # 0.5 s later, another clock
    track.push(packet(3_000_000_960, 10.54), source="b")

    assert [p.pts for p in await drain(track)] == [0, 960, 960 + 24_000, 960 + 24_960]


async def test_slot_track_puts_at_least_one_frame_between_speakers() -> None:
    track = SlotTrack()
    track.push(packet(5_000, 10.0), source="a")
    track.push(packet(77, 10.0001), source="b")  # a switch at once: no overlap

    assert [p.pts for p in await drain(track)] == [0, FRAME_SAMPLES]


async def test_slot_track_rebases_again_when_the_first_speaker_comes_back() -> None:
    track = SlotTrack()
    track.push(packet(5_000, 10.0), source="a")
    track.push(packet(9_000, 10.1), source="b")
    track.push(packet(5_960 + 48_000, 11.1), source="a")

    assert [p.pts for p in await drain(track)] == [0, 4_800, 4_800 + 48_000]


async def test_slot_track_keeps_a_late_packet_of_the_same_speaker_in_place() -> None:
    track = SlotTrack()
    track.push(packet(10_000, 1.0), source="a")
    track.push(packet(11_920, 1.04), source="a")
    track.push(packet(10_960, 1.05), source="a")  # reordered on the way

    assert [p.pts for p in await drain(track)] == [0, 1_920, 960]


async def test_slot_track_switches_speakers_after_the_newest_packet_even_after_a_late_one() -> None:
    track = SlotTrack()
    track.push(packet(10_000, 1.0), source="a")
    track.push(packet(11_920, 1.04), source="a")
    track.push(packet(10_960, 1.05), source="a")  # late: pts 960, but 1920 was already sent
    track.push(packet(77, 1.06), source="b")

    assert [p.pts for p in await drain(track)] == [0, 1_920, 960, 1_920 + FRAME_SAMPLES]


async def test_slot_track_drops_the_oldest_packet_when_its_sender_lags() -> None:
    track = SlotTrack(queue_packets=3)
    for n in range(5):
        track.push(packet(n * 960, n * 0.02, bytes([n])), source="a")

    sent = await drain(track)

    assert [bytes(p) for p in sent] == [b"\x02", b"\x03", b"\x04"]
    assert track.dropped == 2


async def test_slot_track_recv_after_stop_raises_media_stream_error() -> None:
    track = SlotTrack()
    track.stop()

    with pytest.raises(MediaStreamError):
        await track.recv()
