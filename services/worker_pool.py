"""``earpiece serve --workers N``: N worker processes on one machine, on one Redis.

Each worker is ``earpiece serve`` in a child process on a port of its own (``EARPIECE_PORT``,
``EARPIECE_PORT`` + 1 ...), all on the same Redis: REDIS_URL, or a local redis-server started
here for all of them. Any worker answers any request (README, "Scale"), so a round-robin front,
or clients that pick any port, are enough. A worker that exits is started again a second later,
under a new identity: the rooms it hosted are placed again as their clients reconnect. SIGTERM
or SIGINT stops every worker (each ends its presences), then the local redis-server.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from services.cli import redis_url_for
from services.errors import SettingsError
from services.settings import Settings

log = logging.getLogger("earpiece")

RESTART_S = 1.0
STOP_S = 30.0
"""How long a worker may take to end its presences before it is killed."""


async def serve_workers(settings: Settings, count: int) -> None:
    if settings.worker_url is not None:
        raise SettingsError(
            "EARPIECE_WORKER_URL", "it names one worker: leave it unset with --workers"
        )
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    async with redis_url_for(settings) as url:
        ports = [settings.port + n for n in range(count)]
        await asyncio.gather(*(_keep_worker(url, port, stopping) for port in ports))


async def _keep_worker(redis_url: str, port: int, stopping: asyncio.Event) -> None:
    env = {**os.environ, "REDIS_URL": redis_url, "EARPIECE_PORT": str(port)}
    while not stopping.is_set():
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.cli", "serve", env=env
        )
        log.info("worker on port %d started (pid %d)", port, child.pid)
        exited = asyncio.create_task(child.wait())
        stop = asyncio.create_task(stopping.wait())
        await asyncio.wait({exited, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if stopping.is_set():
            await _stop(child, exited, port)
            return
        log.warning(
            "worker on port %d (pid %d) exited with %s; starting it again in %.0f s",
            *(port, child.pid, child.returncode, RESTART_S),
        )
        await asyncio.sleep(RESTART_S)


async def _stop(child: asyncio.subprocess.Process, exited: asyncio.Task[int], port: int) -> None:
    if child.returncode is None:
        child.terminate()
    try:
        await asyncio.wait_for(exited, STOP_S)
    except TimeoutError:
        log.warning("worker on port %d did not stop within %.0f s; killing it", port, STOP_S)
        child.kill()
        await exited
