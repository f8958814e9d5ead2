"""How a worker's app is served: uvicorn, with the settings' limits, stopped by a signal.

Both ``earpiece serve`` and the benchmarks' server processes run the app this way.

uvicorn bounds a request head (h11's 16 KiB), idle keep-alive connections (5 s) and WebSocket
messages (``ws_max_size``), but it waits for a new connection's first request forever, and its
``limit_concurrency`` answers 503 to everyone once reached, ``/healthz`` included. So connections
are admitted here instead (``ConnectionGuard``): one client address may open
``connections_per_s`` a second (beyond, a connection is closed as soon as it is accepted,
before a byte of it is parsed: a reconnect flood costs an accept, not a handshake and a token
check); each must send its request head within ``head_timeout_s``; one client address may keep
``WAITING_PER_ADDRESS`` connections waiting for theirs (a newer one pushes out its oldest); and
at ``max_connections`` a new connection pushes out the oldest one still waiting for its head.
An attacker holding connections open only ever holds ones that have sent nothing, which are
the first to go; requests under way and open sockets are never touched. The maximum stays
below the process's descriptor limit, so ``accept()`` never runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import signal
import socket
import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import h11
import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.http.h11_impl import H11Protocol

from services.settings import Settings
from services.web.rate_limits import TokenBucket

log = logging.getLogger(__name__)

DESCRIPTORS_KEPT = 0.25
"""The share of the descriptor limit left to Redis, peer connections, files, and to the
connections accepted in one go before the guard sees them (``BACKLOG``)."""
BACKLOG = 32
"""asyncio accepts up to this many connections per wake-up (uvicorn's default: 2048)."""
ACCEPT_QUEUE = 1024
"""Connections the kernel queues until they are accepted (capped by net.core.somaxconn)."""
RECEIVE_BUFFER_BYTES = 32 * 1024
"""The kernel's receive buffer of each HTTP connection (Linux doubles it), not autotuned."""
WAITING_PER_ADDRESS = 64
"""Connections of one client address that may wait for their request head at once: a browser
opens a few; many people behind one NAT send their heads within milliseconds."""
ADDRESSES_RATED = 100_000
"""Client addresses whose opening rate is remembered, least recently seen dropped first (a
full bucket is the same as none)."""


class ConnectionGuard:
    """The worker's not-yet-heard HTTP connections, oldest first, and what was done to them."""

    def __init__(
        self,
        *,
        max_connections: int,
        head_timeout_s: float,
        connections_per_s: float = 0,
        report_every_s: float = 10.0,
    ) -> None:
        self.max_connections = max_connections
        self.head_timeout_s = head_timeout_s
        self.connections_per_s = connections_per_s
        self.report_every_s = report_every_s
        self._openings: OrderedDict[str, TokenBucket] = OrderedDict()
        self._waiting: OrderedDict[GuardedH11Protocol, asyncio.TimerHandle] = OrderedDict()
        self._waiting_from: dict[str, OrderedDict[GuardedH11Protocol, None]] = {}
        """The same connections by client address."""
        self._closed = {"over rate": 0, "timed out": 0, "pushed out": 0, "refused": 0}
        self._reported = time.monotonic()

    def admit(self, connection: GuardedH11Protocol) -> None:
        if self.connections_per_s and self._over_rate(connection.address):
            self._close(connection, "over rate")
            return
        same_address = self._waiting_from.setdefault(connection.address, OrderedDict())
        if len(same_address) >= WAITING_PER_ADDRESS:
            self._close(next(iter(same_address)), "pushed out")
        # uvicorn's connections: HTTP ones and the WebSockets they were upgraded to.
        if len(connection.connections) > self.max_connections:
            if not self._waiting:  # every one is a request under way or an open socket
                self._close(connection, "refused")
                return
            self._close(next(iter(self._waiting)), "pushed out")
        deadline = asyncio.get_running_loop().call_later(
            self.head_timeout_s, self._close, connection, "timed out"
        )
        self._waiting[connection] = deadline
        same_address[connection] = None

    def _over_rate(self, address: str) -> bool:
        bucket = self._openings.get(address)
        if bucket is None:
            rate = self.connections_per_s
            bucket = self._openings[address] = TokenBucket(rate, 2 * rate)
            if len(self._openings) > ADDRESSES_RATED:
                self._openings.popitem(last=False)
        else:
            self._openings.move_to_end(address)
        if bucket.wait_s() > 0:
            return True
        bucket.take()
        return False

    def heard(self, connection: GuardedH11Protocol) -> None:
        """Its request head is in: it is no longer the guard's to close."""
        deadline = self._waiting.pop(connection, None)
        if deadline is None:
            return
        deadline.cancel()
        same_address = self._waiting_from[connection.address]
        del same_address[connection]
        if not same_address:
            del self._waiting_from[connection.address]

    def _close(self, connection: GuardedH11Protocol, why: str) -> None:
        self.heard(connection)
        connection.transport.abort()
        self._closed[why] += 1
        # One line per report_every_s whatever the number closed: an attack cannot fill the log.
        now = time.monotonic()
        if now - self._reported >= self.report_every_s:
            log.warning(
                "closed HTTP connections over the last %.0f s: %d opened over %g a second from "
                "one address, %d that sent no request head within %g s, %d pushed out by newer "
                "ones (at %d waiting from one address, or %d connections in all), %d refused "
                "(all %d busy)",
                *(now - self._reported, self._closed["over rate"], self.connections_per_s),
                *(self._closed["timed out"], self.head_timeout_s),
                *(self._closed["pushed out"], WAITING_PER_ADDRESS, self.max_connections),
                *(self._closed["refused"], self.max_connections),
            )
            self._closed = dict.fromkeys(self._closed, 0)
            self._reported = now


class GuardedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, admitted by the ``guard`` of its config."""

    guard: ConnectionGuard

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # What a client can push ahead of the worker's reading; all of it is parsed when
            # a socket is closed (to find the client's close frame), so a flood stays cheap.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
        super().connection_made(transport)
        self.address = self.client[0] if self.client else ""
        self.guard.admit(self)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # a head is in (a request, or an upgrade)
            self.guard.heard(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.heard(self)
        super().connection_lost(exc)


def guarded_protocol(guard: ConnectionGuard) -> type[GuardedH11Protocol]:
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"guard": guard})


def max_connections(wanted: int) -> int:
    """``wanted``, or fewer if the descriptor limit (raised to its hard maximum) needs it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return max(1, min(wanted, int(soft * (1 - DESCRIPTORS_KEPT))))


def server_config(settings: Settings, app: Starlette, **options: Any) -> uvicorn.Config:
    """How uvicorn serves the app: WebSocket messages over the command size are refused (1009);
    connections are admitted by a ``ConnectionGuard``."""
    guard = ConnectionGuard(
        max_connections=max_connections(settings.max_connections),
        head_timeout_s=settings.head_timeout_s,
        connections_per_s=settings.connections_per_s,
    )
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        ws_max_size=settings.max_command_bytes,
        # Compressed, a flood of one repeated command packs ~10,000 frames into the 64 KiB a
        # socket buffers, parsed in one go when it is read again: a 100 ms stall for everyone.
        ws_per_message_deflate=False,
        http=guarded_protocol(guard),
        backlog=BACKLOG,
        log_config=None,  # uvicorn's loggers go to the process's handler (services/logs.py)
        **options,
    )


class WorkerServer(uvicorn.Server):
    """uvicorn with a deeper accept queue, minus its habit of re-raising SIGTERM/SIGINT once it
    has shut down.

    asyncio listens with the backlog it accepts per wake-up (``BACKLOG``), so a burst of
    connections (refused ones reconnecting in step, say) overflows the kernel's queue and a
    probe's SYN is dropped, retried a second later; the queue is deepened to ``ACCEPT_QUEUE``
    once the server listens. The signal re-raise kills the process before ``redis_for`` can stop
    the local redis-server; here a signal only asks the server to exit, and the cleanup after it
    runs.
    """

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        for server in self.servers:
            for listening in server.sockets:  # asyncio's wrappers hide listen(): use a dup
                with socket.fromfd(listening.fileno(), listening.family, listening.type) as dup:
                    dup.listen(ACCEPT_QUEUE)

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
