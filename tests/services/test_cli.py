"""The README's run command as a newcomer uses it: `earpiece serve` with its embedded Redis."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.redis_server import RedisServer, free_loopback_port


def earpiece(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, dict[str, str], subprocess.Popen[str]]]:
    port = free_loopback_port()
    # As a newcomer runs it: the default data directory, "data", relative to where they are.
    unset = {"REDIS_URL", "EARPIECE_DATA_DIR"}
    env = {k: v for k, v in os.environ.items() if k not in unset} | {"EARPIECE_PORT": str(port)}
    process = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "serve"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{base}/healthz").status_code == 200:
                break
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"earpiece serve did not come up:\n{process.communicate()[0]}")
        time.sleep(0.05)
    yield base, env, process
    if process.poll() is None:  # the test failed before stopping it
        process.terminate()
        try:
            process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            stop_orphaned_redis(tmp_path / "data" / "redis" / "redis-server.json")


def stop_orphaned_redis(pid_file: Path) -> None:
    """The redis-server a killed `earpiece serve` left behind (started by this test, by PID)."""
    if pid_file.exists():
        with contextlib.suppress(ProcessLookupError):
            os.kill(json.loads(pid_file.read_text())["pid"], signal.SIGTERM)


def test_serve_runs_its_own_redis_and_stops_it_on_exit(
    served: tuple[str, dict[str, str], subprocess.Popen[str]], tmp_path: Path
) -> None:
    base, env, process = served
    redis_pid = json.loads((tmp_path / "data" / "redis" / "redis-server.json").read_text())["pid"]
    token = earpiece(
        "token", "--room", "demo", "--role", "supervisor", "--whisper", env=env, cwd=tmp_path
    )

    joined = httpx.post(
        f"{base}/rooms/demo/commands",
        json={"command": "join"},
        headers={"authorization": f"Bearer {token.stdout.strip()}"},
    )
    # `audit verify` on the same data dir uses the running redis-server, not a second one.
    deadline = time.monotonic() + 10
    while '"checked": 1' not in (
        verified := earpiece("audit", "verify", "demo", env=env, cwd=tmp_path).stdout
    ):
        assert time.monotonic() < deadline, verified
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)

    assert joined.status_code == 201
    assert '"ok": true' in verified
    assert process.returncode == 0, output
    assert "started" in output
    assert "stopped the local redis-server" in output
    assert not Path(f"/proc/{redis_pid}").exists()
    assert (tmp_path / "data" / "redis" / "appendonlydir").exists() or (
        tmp_path / "data" / "redis" / "appendonly.aof"
    ).exists()


def test_serve_with_a_bad_setting_says_which(tmp_path: Path) -> None:
    env = os.environ | {"EARPIECE_DATA_DIR": str(tmp_path), "EARPIECE_PORT": "eighty"}

    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "serve"], env=env, capture_output=True, text=True
    )

    assert result.returncode != 0
    assert "bad setting EARPIECE_PORT" in result.stderr


def test_redis_server_running_in_ignores_a_stale_pid_file(tmp_path: Path) -> None:
    (tmp_path / "redis-server.json").write_text(
        json.dumps({"pid": 1, "port": free_loopback_port()})
    )

    assert RedisServer.running_in(tmp_path) is None


def earpiece_fails(*args: str, env: dict[str, str], cwd: Path) -> str:
    """What a failing ``earpiece`` command says on stderr: one line, no traceback."""
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    return lines[-1] if lines else ""


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("audit", "verify", "no/such room"), "earpiece audit: invalid room id 'no/such room'"),
        (("audit", "verify", "room-z"), "earpiece audit: room 'room-z' has no events"),
        (("audit", "replay", "room-z"), "earpiece audit: room 'room-z' has no events"),
        (
            ("audit", "replay", "room-z", "--time", "2026-11-26T10:00:00"),
            "has no time zone: add one, e.g. 2026-11-26T10:00:00+00:00 (UTC)",
        ),
    ],
    ids=["bad-room", "unknown-room", "unknown-room-replay", "time-without-zone"],
)
def test_audit_commands_say_what_is_wrong_in_one_line(
    args: tuple[str, ...], said: str, redis_server: RedisServer, tmp_path: Path
) -> None:
    env = {**os.environ, "REDIS_URL": redis_server.url}

    assert said in earpiece_fails(*args, env=env, cwd=tmp_path)


def test_audit_verify_with_redis_down_says_so_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "REDIS_URL": f"redis://127.0.0.1:{free_loopback_port()}/0"}

    said = earpiece_fails("audit", "verify", "room-1", env=env, cwd=tmp_path)

    assert said.startswith("earpiece audit: reading the audit of room 'room-1'"), said
    assert "Connect" in said or "refused" in said, said
