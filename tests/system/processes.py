"""The service as a child process, for the fault tests: killed with SIGKILL, started again."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from services.redis_server import free_loopback_port
from tests.support import SECRET


class ServiceProcess:
    """``earpiece serve`` as a child process on a fixed port; ended only by its PID."""

    def __init__(
        self,
        redis_url: str,
        data_dir: Path,
        *,
        descriptors: int | None = None,
        **settings: str,
    ) -> None:
        """``descriptors``: the child's descriptor limit; ``settings``: EARPIECE_* variables,
        by name without the prefix (``HEAD_TIMEOUT_S="2"``). Its log goes to ``log_path``."""
        self.port = free_loopback_port()
        self.descriptors = descriptors
        self.log_path = data_dir / "service.log"
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "EARPIECE_PORT": str(self.port),
            "EARPIECE_JWT_SECRET": SECRET,
            "EARPIECE_DATA_DIR": str(data_dir),
            **{f"EARPIECE_{name}": value for name, value in settings.items()},
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "services.cli", "serve"],
                env=self.env,
                stdout=log,
                stderr=log,
                preexec_fn=self._limit_descriptors,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert self.process.poll() is None, "earpiece serve exited on start"
            time.sleep(0.05)
        raise AssertionError("earpiece serve did not answer /healthz within 30 s")

    def _limit_descriptors(self) -> None:
        if self.descriptors is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (self.descriptors, self.descriptors))

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
