"""Synthetic participants on loopback: what the isolation tests and the media benchmark use.

Each speaker publishes a pure tone of its own frequency through WHIP; each listener receives
through WHEP and records what it actually decoded, so that a spectrum can show whose voice
reached whom. These are real aiortc peer connections talking to the real service.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import time
from dataclasses import dataclass, field

import av
import httpx
import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

SAMPLE_RATE = 48_000
FRAME = 960


class ToneTrack(MediaStreamTrack):
    """A microphone that hears a pure tone, paced in real time like a live one."""

    kind = "audio"

    def __init__(self, hz: float, amplitude: float = 0.25) -> None:
        super().__init__()
        self.hz = hz
        self.amplitude = amplitude
        self._sent = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        delay = self._start + self._sent / SAMPLE_RATE - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        t = (np.arange(FRAME) + self._sent) / SAMPLE_RATE
        samples = (np.sin(2 * np.pi * self.hz * t) * self.amplitude * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._sent
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        self._sent += FRAME
        return frame


@dataclass
class Recording:
    """One received track's decoded audio as it arrived: (arrival time, mono samples)."""

    chunks: list[tuple[float, np.ndarray]] = field(default_factory=list)

    def between(self, start: float, end: float = float("inf")) -> np.ndarray:
        parts = [samples for arrived, samples in self.chunks if start <= arrived < end]
        return np.concatenate(parts) if parts else np.zeros(0)


def tone_level_db(samples: np.ndarray, hz: float, *, band_hz: float = 25.0) -> float:
    """The share of the window's energy that lies within ``band_hz`` of ``hz``, in dB.

    A tone that is there holds a large share (0 to -10 dB, with two or three tones mixed); one
    that is not holds only leakage and codec noise, tens of dB lower.
    """
    if len(samples) < SAMPLE_RATE // 4:
        raise ValueError(f"{len(samples)} samples is too short a window to measure")
    power = np.abs(np.fft.rfft(samples * np.hanning(len(samples)))) ** 2
    freqs = np.fft.rfftfreq(len(samples), 1 / SAMPLE_RATE)
    band = float(power[np.abs(freqs - hz) <= band_hz].sum())
    return float(10 * np.log10(band / (float(power.sum()) + 1e-30) + 1e-30))


class Participant:
    """One person in a room: a WHIP session for their tone, a WHEP session for their ears."""

    def __init__(self, http: httpx.AsyncClient, room_id: str, token: str) -> None:
        self.http = http
        self.room_id = room_id
        self.token = token
        self.publisher: RTCPeerConnection | None = None
        self.listener: RTCPeerConnection | None = None
        self.recordings: list[Recording] = []
        self.locations: list[str] = []
        self._readers: list[asyncio.Task[None]] = []

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}", "content-type": "application/sdp"}

    async def publish(self, track: MediaStreamTrack) -> None:
        self.publisher = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.publisher.addTransceiver(track, direction="sendonly")
        await self._negotiate(self.publisher, "whip")

    async def receive(self, sections: int) -> None:
        self.listener = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        for _ in range(sections):
            self.listener.addTransceiver("audio", direction="recvonly")
        self.listener.on("track", self._record)
        await self._negotiate(self.listener, "whep")

    async def _negotiate(self, pc: RTCPeerConnection, path: str) -> None:
        await pc.setLocalDescription(await pc.createOffer())
        response = await self.http.post(
            f"/rooms/{self.room_id}/{path}", content=pc.localDescription.sdp, headers=self.headers
        )
        response.raise_for_status()
        self.locations.append(response.headers["location"])
        await pc.setRemoteDescription(RTCSessionDescription(sdp=response.text, type="answer"))

    def hears_db(self, hz: float, since: float, until: float = float("inf")) -> float:
        """How much of what one track brought between then and ``until`` lies at ``hz`` (the
        loudest track).

        Minus infinity when no track brought a measurable stretch of audio at all.
        """
        windows = [r.between(since, until) for r in self.recordings]
        levels = [tone_level_db(w, hz) for w in windows if len(w) >= SAMPLE_RATE // 4]
        return max(levels, default=float("-inf"))

    def _record(self, track: MediaStreamTrack) -> None:
        recording = Recording()
        self.recordings.append(recording)

        async def read() -> None:
            with contextlib.suppress(MediaStreamError):
                while True:
                    frame = await track.recv()
                    if not isinstance(frame, av.AudioFrame):
                        continue
                    interleaved = frame.to_ndarray().reshape(-1)
                    mono = interleaved[:: len(frame.layout.channels)].astype(np.float64) / 32768
                    recording.chunks.append((time.monotonic(), mono))

        self._readers.append(asyncio.ensure_future(read()))

    async def hang_up(self) -> None:
        for location in self.locations:
            await self.http.delete(location, headers=self.headers)
        await self.close()

    async def close(self) -> None:
        self.locations.clear()
        for pc in (self.publisher, self.listener):
            if pc is not None:
                await pc.close()
        for reader in self._readers:
            reader.cancel()
        self._readers.clear()
