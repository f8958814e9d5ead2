"""Whisper switching as the agent sees and hears it, measured in real Chromium pages.

    .venv/bin/python tests/bench_browser.py [--switches 60]

A customer, an agent and a supervisor (open mic) are on their pages, each in a Chromium of
their own with a tone for a microphone, against a real service and redis-server on loopback.
The supervisor clicks Whisper, then Stop whisper, ``--switches`` times. Each click is stamped
in the console page (a capturing listener); the agent page stamps when the coach's
"Whisper active" badge enters or leaves its DOM (a MutationObserver) and when the coach slots'
audio starts or stops (a ScriptProcessor over 256-sample blocks, ~5 ms). The pages' clocks are
``performance.timeOrigin + performance.now()``: the same machine's wall clock. The
instrumentation is injected by Playwright; the pages are the product's, unchanged.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import redis.asyncio as redis
from playwright.async_api import Page, Playwright, async_playwright, expect

from events.room import Role
from services.media.ice import gather_on
from services.redis_server import RedisServer
from tests.support import running_service, token
from tests.system.browser_support import PROBE, launch_speaker, write_tone

CONSOLE_PROBE = """
(() => {
  window.__bench = { clicks: [] };
  const now = () => performance.timeOrigin + performance.now();
  document.querySelector("#whisper")
    .addEventListener("click", () => window.__bench.clicks.push(now()), { capture: true });
})();
"""

AGENT_PROBE = """
(() => {
  const bench = (window.__bench = { badgeOn: [], badgeOff: [], audioOn: [], audioOff: [] });
  const now = () => performance.timeOrigin + performance.now();
  const selector = '.badge[data-coach="sup-1"] .whisper-active';
  let shown = Boolean(document.querySelector(selector));
  new MutationObserver(() => {
    const visible = Boolean(document.querySelector(selector));
    if (visible !== shown) (visible ? bench.badgeOn : bench.badgeOff).push(now());
    shown = visible;
  }).observe(document.body, { subtree: true, childList: true });

  const receiving = window.__probe.connections.find(
    (pc) => pc.getTransceivers().length > 1 && pc.connectionState !== "closed");
  const coachTracks = receiving.getTransceivers().slice(1).map((t) => t.receiver.track);
  const ctx = new AudioContext({ sampleRate: 48000 });
  const sum = ctx.createGain();
  for (const track of coachTracks) {
    ctx.createMediaStreamSource(new MediaStream([track])).connect(sum);
  }
  const processor = ctx.createScriptProcessor(256, 1, 1);
  let audible = false;
  let quietBlocks = 0;
  let quietSince = 0;
  processor.onaudioprocess = (event) => {
    const samples = event.inputBuffer.getChannelData(0);
    let energy = 0;
    for (const s of samples) energy += s * s;
    const rms = Math.sqrt(energy / samples.length);
    const t = now();
    if (!audible && rms > 0.02) {
      audible = true;
      bench.audioOn.push(t);
    } else if (audible && rms < 0.005) {
      if (quietBlocks++ === 0) quietSince = t;
      if (quietBlocks >= 10) {
        audible = false;
        bench.audioOff.push(quietSince);
      }
    } else quietBlocks = 0;
  };
  sum.connect(processor);
  processor.connect(ctx.destination);
  ctx.resume();
})();
"""


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return cuts[49], cuts[98], max(samples)


async def open_page(pw: Playwright, base: str, tmp: Path, who: str, hz: float, role: Role) -> Page:
    browser = await launch_speaker(pw, write_tone(tmp / f"{who}.wav", hz))
    context = await browser.new_context(bypass_csp=True)
    await context.add_init_script(PROBE)
    page = await context.new_page()
    path = {Role.CUSTOMER: "call", Role.AGENT: "desk", Role.SUPERVISOR: "console"}[role]
    credential = token(role, sub=who, name=who.title(), whisper=role is Role.SUPERVISOR)
    await page.goto(f"{base}/{path}#room=room-1&token={credential}")
    return page


async def run(switches: int) -> None:
    gather_on(["127.0.0.1"])
    with tempfile.TemporaryDirectory() as directory:
        tmp = Path(directory)
        server = RedisServer(tmp / "redis")
        server.start()
        client = redis.Redis.from_url(server.url)
        try:
            async with running_service(server.url, client) as service, async_playwright() as pw:
                base = str(service.http.base_url)
                customer = await open_page(pw, base, tmp, "cust", 500, Role.CUSTOMER)
                agent = await open_page(pw, base, tmp, "agent", 800, Role.AGENT)
                for page in (customer, agent):
                    await page.get_by_role("button", name="Join the call").click()
                await expect(agent.get_by_text("On the call.")).to_be_visible()
                console = await open_page(pw, base, tmp, "sup-1", 1300, Role.SUPERVISOR)
                await console.get_by_role("button", name="Join and monitor").click()
                await expect(console.get_by_text("Monitoring: you hear the call.")).to_be_visible()
                await console.get_by_label("Open mic").check()
                await expect(console.get_by_label("Open mic")).to_be_checked()
                await console.evaluate(CONSOLE_PROBE)
                await agent.evaluate(AGENT_PROBE)
                whisper = console.locator("#whisper")
                for n in range(1, switches + 1):
                    for edge in ("On", "Off"):
                        await whisper.click()
                        seen_both = (
                            f"badge{edge}.length >= {n} && __bench.audio{edge}.length >= {n}"
                        )
                        await agent.wait_for_function(f"__bench.{seen_both}", timeout=10_000)
                clicks = await console.evaluate("__bench.clicks")
                seen = await agent.evaluate("__bench")
        finally:
            await client.aclose()
            server.stop()

    on_clicks, off_clicks = clicks[0::2], clicks[1::2]
    rows = {
        "click → badge shown": [b - c for b, c in zip(seen["badgeOn"], on_clicks, strict=True)],
        "click → first whisper audio": [
            a - c for a, c in zip(seen["audioOn"], on_clicks, strict=True)
        ],
        "click → badge hidden": [b - c for b, c in zip(seen["badgeOff"], off_clicks, strict=True)],
        "click → whisper audio stops": [
            a - c for a, c in zip(seen["audioOff"], off_clicks, strict=True)
        ],
    }
    print(
        f"{switches} switches on and {switches} off; {platform.platform()}, {os.cpu_count()} cores"
    )
    print("| measured in the agent's page | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|")
    for name, samples in rows.items():
        p50, p99, worst = percentiles(samples)
        print(f"| {name} | {p50:.0f} | {p99:.0f} | {worst:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--switches", type=int, default=60)
    options = parser.parse_args()
    if options.switches < 2:
        sys.exit("--switches must be at least 2")
    asyncio.run(run(options.switches))


if __name__ == "__main__":
    main()
