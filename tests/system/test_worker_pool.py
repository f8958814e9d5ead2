"""``earpiece serve --workers 2`` as a child process: two workers on consecutive ports, one Redis;
a worker killed with SIGKILL is started again; SIGTERM stops them all."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from services.redis_server import RedisServer, free_loopback_port
from tests.support import SECRET

pytestmark = pytest.mark.newest_redis


def two_free_ports() -> int:
    """A port free on loopback whose next one is free too."""
    for _ in range(50):
        port = free_loopback_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise AssertionError("no two consecutive free ports")


def listener_pid(port: int) -> int | None:
    listening = subprocess.run(
        ["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    found = re.search(r"pid=(\d+)", listening)
    return int(found.group(1)) if found else None


def healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def wait_for(condition: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {seconds} s")


def test_two_workers_run_one_killed_is_started_again_and_sigterm_stops_both(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    port = two_free_ports()
    env = {
        **os.environ,
        "REDIS_URL": redis_server.url,
        "EARPIECE_PORT": str(port),
        "EARPIECE_JWT_SECRET": SECRET,
        "EARPIECE_DATA_DIR": str(tmp_path),
    }
    with (tmp_path / "pool.log").open("wb") as log:
        pool = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "serve", "--workers", "2"],
            env=env,
            stdout=log,
            stderr=log,
        )
    try:
        wait_for(lambda: healthy(port) and healthy(port + 1), 30)
        first, second = listener_pid(port), listener_pid(port + 1)
        assert first is not None
        assert second is not None
        assert len({first, second, pool.pid}) == 3  # a process each

        os.kill(first, signal.SIGKILL)
        wait_for(lambda: listener_pid(port) not in (None, first) and healthy(port), 30)
        assert listener_pid(port + 1) == second  # the other worker went on

        pool.send_signal(signal.SIGTERM)
        assert pool.wait(40) == 0
    finally:
        if pool.poll() is None:
            pool.kill()
            pool.wait(10)
    assert listener_pid(port) is None
    assert listener_pid(port + 1) is None
    log_text = (tmp_path / "pool.log").read_text()
    assert "exited with -9; starting it again" in log_text
    assert "Traceback" not in log_text
