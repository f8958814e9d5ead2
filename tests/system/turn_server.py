"""Debian's coturn as a child process on loopback, with the REST-API (``use-auth-secret``) scheme
whose credentials the service mints."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from services.redis_server import free_loopback_port

RELAY_PORTS = (50000, 50999)


class TurnServer:
    def __init__(self, directory: Path, secret: str) -> None:
        self.port = free_loopback_port()
        self.secret = secret
        self.log_path = directory / "turnserver.log"
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"turn:127.0.0.1:{self.port}?transport=udp"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [
            "turnserver", "-n", "--verbose", "--no-cli", "--no-tls", "--no-dtls", "--simple-log",
            "--log-file=stdout", f"--userdb={self.directory / 'turndb'}",
            f"--pidfile={self.directory / 'turnserver.pid'}",
            "--listening-ip=127.0.0.1", f"--listening-port={self.port}",
            "--relay-ip=127.0.0.1", f"--min-port={RELAY_PORTS[0]}", f"--max-port={RELAY_PORTS[1]}",
            # Everything here is on loopback, the service's media too: coturn refuses such peers
            # unless told.
            "--allow-loopback-peers",
            "--use-auth-secret", f"--static-auth-secret={self.secret}", "--realm=earpiece",
        ]  # fmt: skip
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while "DB connection success" not in self.log():  # its last step in starting
            assert self.process.poll() is None, self.log()
            assert time.monotonic() < deadline, self.log()
            time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
