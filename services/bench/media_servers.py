"""The media bench's servers under test, each in a child process of the bench.

``python -m services.bench.media_servers serve KIND`` runs one, so that its CPU and memory can
be read from ``/proc/PID`` apart from the clients', which run in the bench's process:

* ``earpiece``: the whole app (``create_app``: WHIP/WHEP, commands, route reconcilers, Router,
  ``tap_opus`` → ``SlotTrack``) under uvicorn, on the bench's redis-server;
* ``relay``: the usual aiortc way, a few lines of Starlette: each published track is handed
  to every consumer's connection through ``aiortc.contrib.media.MediaRelay``, so the server
  decodes it (behind aiortc's receive jitter buffer) and encodes it again per consumer.

``ServerProcess`` is the bench's side: it starts the child, waits until it is healthy, reads
its CPU, RSS and open files, and stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import httpx
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay

from events.store import RedisClient
from services.bench.media_clients import peer_connection
from services.media.ice import gather_on
from services.redis_server import free_loopback_port

SECRET_ENV = "EARPIECE_BENCH_JWT_SECRET"
ServerKind = Literal["earpiece", "relay"]


class ServerProcess:
    """A server in a child process of ours, stopped by its PID (SIGTERM, then SIGKILL)."""

    def __init__(
        self,
        kind: ServerKind,
        redis_url: str,
        secret: str,
        log_dir: Path,
        settings: dict[str, str] | None = None,
    ) -> None:
        """``settings``: EARPIECE_* variables for an ``earpiece`` server, beyond the bench's."""
        self.kind = kind
        self.settings = settings or {}
        self.redis_url = redis_url
        self.secret = secret
        self.port = free_loopback_port()
        self.log_path = log_dir / f"{kind}-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("the server is not running")
        return self.process.pid

    async def __aenter__(self) -> ServerProcess:
        command = [sys.executable, "-m", "services.bench.media_servers", "serve", self.kind]
        command += ["--port", str(self.port), "--redis-url", self.redis_url]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(  # noqa: ASYNC220 (returns at once)
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.settings, SECRET_ENV: self.secret},
            )
        try:
            await self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    async def _wait_healthy(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(base_url=self.url, timeout=2) as http:
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get("/healthz")).status_code == 200:
                        return
                if self.process is None or self.process.poll() is not None:
                    raise RuntimeError(f"{self.kind} server exited:\n{self.log_tail()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.kind} server did not start:\n{self.log_tail()}")
                await asyncio.sleep(0.05)

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    async def __aexit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        """SIGKILL: the worker dies with its rooms held."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.pid)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS in /proc status")

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, all its threads, from ``/proc/PID/stat``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def create_relay_app() -> Any:
    """The baseline: aiortc's MediaRelay hands each published track to its consumers."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    relay = MediaRelay()
    sources: dict[tuple[str, str], MediaStreamTrack] = {}
    pcs: set[RTCPeerConnection] = set()

    def connection() -> RTCPeerConnection:
        pc = peer_connection()
        pcs.add(pc)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                pcs.discard(pc)
                await pc.close()

        return pc

    async def publish(request: Request) -> Response:
        room, who = request.path_params["room"], request.path_params["who"]
        pc = connection()

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            sources[(room, who)] = track

        await pc.setRemoteDescription(
            RTCSessionDescription(sdp=(await request.body()).decode(), type="offer")
        )
        await pc.setLocalDescription(await pc.createAnswer())
        return Response(pc.localDescription.sdp, 201, media_type="application/sdp")

    async def receive(request: Request) -> Response:
        room = request.path_params["room"]
        names = request.query_params["from"].split(",")
        async with asyncio.timeout(10):
            while any((room, name) not in sources for name in names):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        pc = connection()
        await pc.setRemoteDescription(
            RTCSessionDescription(sdp=(await request.body()).decode(), type="offer")
        )
        for name in names:
            pc.addTrack(relay.subscribe(sources[(room, name)]))
        await pc.setLocalDescription(await pc.createAnswer())
        return Response(pc.localDescription.sdp, 201, media_type="application/sdp")

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await asyncio.gather(*(pc.close() for pc in list(pcs)))

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/relay/{room}/publish/{who}", publish, methods=["POST"]),
            Route("/relay/{room}/receive/{who}", receive, methods=["POST"]),
        ],
        lifespan=lifespan,
    )


async def serve(kind: ServerKind, port: int, redis_url: str) -> None:
    import uvicorn

    from services.web.server import WorkerServer

    gather_on(["127.0.0.1"])
    client: RedisClient | None = None
    if kind == "earpiece":
        from services.redis_clients import request_client
        from services.settings import Settings
        from services.streams.presence import new_worker_id
        from services.web.app import create_app
        from services.web.server import server_config

        given = {"REDIS_URL": redis_url, "EARPIECE_PORT": str(port)}
        settings = Settings.from_env(
            {**os.environ, **given, "EARPIECE_JWT_SECRET": os.environ[SECRET_ENV]}
        )
        worker = new_worker_id()
        client = request_client(
            redis_url,
            name=f"earpiece:{worker}:requests",
            connections=settings.redis_connections,
            wait_s=settings.redis_wait_s,
        )
        config = server_config(settings, create_app(settings, client, worker), log_level="warning")
    else:
        config = uvicorn.Config(
            create_relay_app(), host="127.0.0.1", port=port, log_level="warning"
        )
    try:
        await WorkerServer(config).serve()
    finally:
        if client is not None:
            await client.aclose()


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m services.bench.media_servers")
    commands = parser.add_subparsers(dest="command", required=True)
    serving = commands.add_parser("serve", help="a server under test (started by the bench)")
    serving.add_argument("kind", choices=["earpiece", "relay"])
    serving.add_argument("--port", type=int, required=True)
    serving.add_argument("--redis-url", required=True)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.kind, args.port, args.redis_url))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
