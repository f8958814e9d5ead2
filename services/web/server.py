"""How a worker's app is served: uvicorn, with the settings' limits, stopped by a signal.

Both ``earpiece serve`` and the benchmarks' server processes run the app this way.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator

import uvicorn
from starlette.applications import Starlette

from services.settings import Settings


def server_config(settings: Settings, app: Starlette, **options: object) -> uvicorn.Config:
    """How uvicorn serves the app: WebSocket messages over the command size are refused (1009)."""
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        ws_max_size=settings.max_command_bytes,
        **options,  # type: ignore[arg-type]
    )


class ShutdownOnSignal(uvicorn.Server):
    """uvicorn, minus its habit of re-raising SIGTERM/SIGINT once it has shut down.

    That re-raise kills the process before ``redis_for`` can stop the local redis-server;
    here a signal only asks the server to exit, and the cleanup after it runs.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.handle_exit, sig, None)
        try:
            yield
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
