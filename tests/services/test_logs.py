"""JSON log lines (services/logs.py): each names what its request was about, and only its own."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from services.logs import JsonLines, log_about


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    written = io.StringIO()
    handler = logging.StreamHandler(written)
    handler.setFormatter(JsonLines())
    logger = logging.getLogger("earpiece.test-logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield written
    logger.removeHandler(handler)


async def test_each_line_names_the_room_subject_and_correlation_id_of_its_own_request(
    lines: io.StringIO,
) -> None:
    log = logging.getLogger("earpiece.test-logs")

    async def request(room: str, subject: str, correlation_id: str | None) -> None:
        log_about(room=room, subject=subject, correlation_id=correlation_id)
        await asyncio.sleep(0.01)  # the other request runs meanwhile
        log.warning("handled %s", room)

    await asyncio.gather(request("r1", "agent-1", "call-7"), request("r2", "cust-2", None))
    try:
        raise ValueError("broken")
    except ValueError:
        log.exception("outside any request")

    first, second, third = (json.loads(line) for line in lines.getvalue().splitlines())
    assert {k: first[k] for k in ("level", "logger", "message")} == {
        "level": "WARNING",
        "logger": "earpiece.test-logs",
        "message": "handled r1",
    }
    assert (first["room"], first["subject"], first["correlation_id"]) == ("r1", "agent-1", "call-7")
    assert (second["room"], second["subject"]) == ("r2", "cust-2")
    assert "correlation_id" not in second
    assert "room" not in third
    assert "ValueError: broken" in third["exception"]
    assert first["time"].endswith("+00:00")
