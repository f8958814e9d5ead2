"""``earpiece bench media``: the media plane against aiortc's usual relay, side by side.

The server under test runs in a child process (``media_servers``) so that its CPU and memory
can be read apart from the clients' (``media_clients``), which run in this process. Two
servers take turns, each in a fresh child: the whole Earpiece app, on a redis-server started
here in a temporary directory, and aiortc's ``MediaRelay`` as the baseline. The phases
(``media_phases``) run in order, each printing its table (``media_report``) as it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import platform
import secrets
import signal
import tempfile
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import av
import httpx

from services.bench.media_clients import CannedOpus
from services.bench.media_phases import (
    PHASES,
    MediaBenchOptions,
    capacity,
    click_to_whisper,
    direct_latency,
    idle_cpu,
    server_latency,
    soak,
)
from services.bench.media_report import (
    CAPACITY_HEADER,
    CapacityStep,
    MediaReport,
    capacity_row,
    print_capacity_summary,
    print_click,
    print_latency,
    print_soak,
)
from services.bench.media_servers import ServerKind, ServerProcess
from services.bench.media_signaling import EarpieceSignaling, RelaySignaling, ServerSignaling
from services.media.ice import gather_on
from services.redis_server import RedisServer


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
                    signaling: ServerSignaling = (
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
