"""``earpiece bench media`` at its smallest: every phase runs and reports what it measured.

Structure only (packets arrived, rows present, processes stopped), never timing: the figures
belong to docs/BENCHMARKS.md, measured on a quiet machine.
"""

from __future__ import annotations

import dataclasses
import os

import pytest

from services.bench.media import run_media_bench
from services.bench.media_phases import MediaBenchOptions

SMALLEST = dataclasses.replace(
    MediaBenchOptions.quick(),
    packets=20,
    warmup=5,
    switches=3,
    earpiece_rooms=(1,),
    relay_rooms=(1,),
    window_s=0.5,
    soak_seconds=1.0,
    soak_rooms=1,
    soak_sample_s=0.5,
)


def children() -> set[int]:
    with open(f"/proc/{os.getpid()}/task/{os.getpid()}/children") as listing:
        return {int(pid) for pid in listing.read().split()}


async def test_bench_media_smallest_run_measures_every_phase_and_stops_its_servers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = children()

    report = await run_media_bench(SMALLEST)

    printed = capsys.readouterr().out
    assert [r.path.split()[0] for r in report.latency] == ["direct", "earpiece", "relay"]
    assert all(len(r.latencies_ms) == 20 for r in report.latency)
    assert report.latency[1].disagreements == 0
    assert report.click is not None
    assert len(report.click.first_packet_ms) == 3
    assert [(s.server, s.rooms, s.streams) for s in report.capacity] == [
        ("earpiece", 1, 5),
        ("relay", 1, 5),
    ]
    assert all(s.packets > 0 for s in report.capacity)
    assert report.soak[-1].opened >= 1
    assert report.soak[-1].closed == report.soak[-1].opened
    assert "| earpiece (tap_opus → Router → SlotTrack) |" in printed
    assert "Forwarded streams per core" in printed
    assert children() <= before
