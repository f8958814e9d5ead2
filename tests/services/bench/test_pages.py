"""The pages benchmark's smallest run: both followers measured, on a real redis-server."""

from __future__ import annotations

import pytest

from services.bench.pages import run_pages_bench


async def test_bench_pages_compares_one_shared_follower_with_one_per_page(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert await run_pages_bench([3], events=5) == 0

    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines()]
    measured = {row[1]: row for row in rows if row[0] == "| 3"}
    assert measured.keys() == {"one per page", "shared"}
    assert measured["one per page"][4] == "3"  # blocking reads: one per page,
    assert measured["shared"][4] == "1"  # and one for all of them
