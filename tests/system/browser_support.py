"""Real Chromium for the page tests: one process per speaker, each with its own fake microphone.

Chromium's fake capture device plays one WAV file per process, so every speaker (the
customer, the agent, each supervisor) gets a browser of their own, fed a pure tone of their
own frequency. Nothing here is in the product: what the tests measure in a page (the spectrum
of each received track, the RTP statistics of what it sends) comes from a script injected
before the page's own, which keeps every ``RTCPeerConnection`` the page makes.
"""

from __future__ import annotations

import os
import shutil
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, Playwright, Response, WebSocket

CHROMIUM = os.environ.get("EARPIECE_CHROMIUM", "/usr/bin/chromium")
SAMPLE_RATE = 48_000


def chromium_or_skip() -> str:
    """Debian's Chromium; CI installs it (``.ci/run``), so there its absence is a failure."""
    if Path(CHROMIUM).exists() or shutil.which(CHROMIUM):
        return CHROMIUM
    reason = f"no Chromium at {CHROMIUM}: apt-get install chromium"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def write_tone(path: Path, *hz: float, seconds: float = 2.0, amplitude: float = 0.3) -> Path:
    """A 48 kHz mono 16-bit WAV of pure tones (whole Hz: it loops without a click)."""
    frames = int(SAMPLE_RATE * seconds)
    t = np.arange(frames) / SAMPLE_RATE
    mixed = np.sin(2 * np.pi * np.outer(hz, t)).mean(axis=0)
    samples = (mixed * amplitude * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(samples.tobytes())
    return path


def chromium_args(microphone: Path) -> list[str]:
    return [
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-audio-capture={microphone}",
        "--allow-loopback-in-peer-connection",
        "--disable-features=WebRtcHideLocalIpsWithMdns",
        "--autoplay-policy=no-user-gesture-required",
        "--mute-audio",
    ]


async def launch_speaker(playwright: Playwright, microphone: Path) -> Browser:
    return await playwright.chromium.launch(
        executable_path=chromium_or_skip(), args=chromium_args(microphone)
    )


# Keeps every peer connection the page makes, and measures them from inside the page.
PROBE = """
(() => {
  const Native = window.RTCPeerConnection;
  const connections = [];
  window.RTCPeerConnection = class extends Native {
    constructor(...args) { super(...args); connections.push(this); }
  };
  // Everything the DOM ever held, not only what it holds at the end: added nodes' markup,
  // changed text and attribute values.
  const seen = [];
  new MutationObserver((records) => {
    for (const record of records) {
      const target = record.target;
      if (record.type === "attributes") seen.push(`${target.getAttribute(record.attributeName)}`);
      else if (record.type === "characterData") seen.push(target.data);
      for (const node of record.addedNodes) seen.push(node.outerHTML ?? node.textContent ?? "");
    }
  }).observe(document, { subtree: true, childList: true, characterData: true, attributes: true });
  const FFT = 8192;
  const receivedTracks = () => connections
    .filter((pc) => pc.connectionState !== "closed")
    .flatMap((pc) => pc.getTransceivers())
    .filter((t) => t.direction === "recvonly" && t.receiver.track.readyState === "live")
    .map((t) => t.receiver.track);
  window.__probe = {
    connections,
    domHistory: () => seen.join(" ") + document.documentElement.outerHTML,
    // For each received track: the share of its energy within 25 Hz of each frequency (dB),
    // averaged over `ms` of audio, and its total power (dB).
    async toneLevels(frequencies, ms) {
      const ctx = new AudioContext({ sampleRate: 48000 });
      await ctx.resume();
      const analysers = receivedTracks().map((track) => {
        const source = ctx.createMediaStreamSource(new MediaStream([track]));
        const analyser = ctx.createAnalyser();
        analyser.fftSize = FFT;
        analyser.smoothingTimeConstant = 0;
        source.connect(analyser);
        return analyser;
      });
      const sums = analysers.map(() => new Float64Array(FFT / 2));
      const bins = new Float32Array(FFT / 2);
      const end = performance.now() + ms;
      let reads = 0;
      while (performance.now() < end) {
        await new Promise((resolve) => setTimeout(resolve, 100));
        analysers.forEach((analyser, i) => {
          analyser.getFloatFrequencyData(bins);
          for (let k = 0; k < bins.length; k++) sums[i][k] += 10 ** (bins[k] / 10);
        });
        reads++;
      }
      await ctx.close();
      const binHz = 48000 / FFT;
      return sums.map((sum) => {
        let total = 0;
        for (const p of sum) total += p;
        const levels = { total: 10 * Math.log10(total / Math.max(reads, 1) + 1e-30) };
        for (const hz of frequencies) {
          let band = 0;
          for (let k = 0; k < sum.length; k++) if (Math.abs(k * binHz - hz) <= 25) band += sum[k];
          levels[hz] = 10 * Math.log10(band / (total + 1e-30) + 1e-30);
        }
        return levels;
      });
    },
    // What the page's microphone connection sends: bytes so far, and the codec in use.
    async outbound() {
      for (const pc of connections) {
        if (pc.connectionState === "closed") continue;
        const stats = await pc.getStats();
        for (const report of stats.values()) {
          if (report.type !== "outbound-rtp" || report.kind !== "audio") continue;
          const codec = stats.get(report.codecId) ?? {};
          return {
            bytesSent: report.bytesSent, packetsSent: report.packetsSent,
            timestamp: report.timestamp, mimeType: codec.mimeType,
            channels: codec.channels, clockRate: codec.clockRate,
            sdpFmtpLine: codec.sdpFmtpLine,
            remoteFmtp: (pc.remoteDescription?.sdp.match(/a=fmtp:\\d+ .*/) ?? [""])[0],
          };
        }
      }
      return null;
    },
  };
})();
"""


class PageUnderTest:
    """A page in its own browser context: every URL it requested, every WebSocket frame, and
    every error it reported (uncaught exceptions, console errors, HTTP errors)."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.frames: list[str] = []
        self.urls: list[str] = []
        self.errors: list[str] = []
        self.secret = ""
        """The token its link carried."""
        page.on("websocket", self._watch)
        page.on("request", lambda request: self.urls.append(request.url))
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))
        page.on("console", self._console)
        page.on("response", self._response)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text}")

    def _response(self, response: Response) -> None:
        if response.status >= 400:
            self.errors.append(f"HTTP {response.status}: {response.url}")

    def _watch(self, socket: WebSocket) -> None:
        self.urls.append(socket.url)

        def keep(payload: str | bytes) -> None:
            self.frames.append(payload if isinstance(payload, str) else payload.decode())

        socket.on("framereceived", keep)
        socket.on("framesent", keep)

    async def tone_levels(
        self, frequencies: list[float], ms: int = 1000
    ) -> list[dict[float, float]]:
        """Per received track: the share of each tone (dB), keyed by frequency."""
        levels: list[dict[str, float]] = await self.page.evaluate(
            "([frequencies, ms]) => window.__probe.toneLevels(frequencies, ms)",
            [frequencies, ms],
        )
        return [{float(k): v for k, v in track.items() if k != "total"} for track in levels]

    async def dom_history(self) -> str:
        """All markup and text the page's DOM ever held."""
        history: str = await self.page.evaluate("window.__probe.domHistory()")
        return history

    async def outbound(self) -> dict[str, Any] | None:
        stats: dict[str, Any] | None = await self.page.evaluate("window.__probe.outbound()")
        return stats
