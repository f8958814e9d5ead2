"""The workers beside the app (projections, watchers, trimming): started, kept running, stopped.

A worker runs until it is cancelled. One that fails anyway (a bug, an error nobody translated)
is logged with its traceback, counted, and started again after a capped back-off, so that a
live process never hides a dead worker; it keeps its place in ``restarts`` for ``/healthz``.
Outages of Redis are each worker's own to ride out (events/retry.py): they are not failures.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from prometheus_client import Counter

from events.retry import Backoff

log = logging.getLogger(__name__)

WORKER_RESTARTS = Counter(
    "earpiece_worker_restarts", "Workers beside the app started again after failing", ["worker"]
)

HEALTHY_RUN_S = 60.0
"""A worker that ran this long before failing starts again after the shortest wait."""


class Workers:
    def __init__(self, *, first_wait_s: float = 0.5, max_wait_s: float = 30.0) -> None:
        self._first_wait_s = first_wait_s
        self._max_wait_s = max_wait_s
        self._tasks: list[asyncio.Task[None]] = []
        self.restarts: dict[str, int] = {}
        """How often each worker was started again after failing."""

    def start(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        """Run ``run()`` as the worker ``name``, starting it again whenever it fails."""
        self._tasks.append(asyncio.create_task(self._supervise(name, run), name=name))

    async def _supervise(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        backoff = Backoff(first_s=self._first_wait_s, max_s=self._max_wait_s)
        while True:
            started = time.monotonic()
            try:
                await run()
                log.error("%s returned, but a worker runs until stopped", name)
            except Exception:
                log.exception("%s failed; starting it again in %.1f s", name, backoff.next_s())
            if time.monotonic() - started >= HEALTHY_RUN_S:
                backoff.reset()
            self.restarts[name] = self.restarts.get(name, 0) + 1
            WORKER_RESTARTS.labels(name).inc()
            await backoff.wait()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
