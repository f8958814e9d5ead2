"""What the media bench measured, and the Markdown tables it prints of it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from services.bench.media_servers import ServerKind
from services.bench.workload import percentile


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


def slope_mb_per_min(samples: Sequence[SoakSample]) -> float:
    if len(samples) < 2:
        return math.nan
    t = np.array([s.at_s for s in samples])
    rss = np.array([s.rss_mb for s in samples])
    return float(np.polyfit(t, rss, 1)[0] * 60)
