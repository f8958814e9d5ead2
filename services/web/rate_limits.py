"""Fairness between rooms: token buckets per participant and per room.

A worker serves every room from one event loop, so whatever one room asks of it delays the
others. Each request that makes the worker work for a room takes a token from its sender's
bucket and one from its room's; when either is empty the request is refused at once (HTTP 429
with ``Retry-After``, or an ``error`` message on a socket) and costs next to nothing. A room's
bucket caps what all its people together can ask, so that one room, flooded by its own
participants, cannot raise another room's latency; a participant's caps each person within it.

Buckets start full, so an idle bucket is the same as none: the least recently used are dropped
beyond ``max_buckets``, and memory stays bounded whatever the number of rooms.
"""

from __future__ import annotations

import time
from collections import OrderedDict

from services.errors import RateLimited
from services.settings import Settings


class TokenBucket:
    """``rate`` tokens a second, up to ``burst`` saved: a flood is refused, not queued."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._last = time.monotonic()

    def wait_s(self) -> float:
        """How long until a token is there: 0 when one is."""
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        return 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate

    def take(self) -> None:
        self._tokens -= 1


class RateLimit:
    """``per_subject`` and ``per_room`` requests a second of one kind (``what``), each with
    bursts of ``burst_s`` seconds' worth."""

    def __init__(
        self,
        what: str,
        *,
        per_subject: float,
        per_room: float,
        burst_s: float = 2.0,
        max_buckets: int = 100_000,
    ) -> None:
        self.what = what
        self.per_subject = per_subject
        self.per_room = per_room
        self.burst_s = burst_s
        self.max_buckets = max_buckets
        self._buckets: OrderedDict[tuple[str, str | None], TokenBucket] = OrderedDict()

    def take(self, room_id: str, subject: str) -> None:
        """Count one request of ``subject`` in ``room_id``; RateLimited (taking nothing) when
        the subject or the room is over its rate."""
        own = self._bucket(room_id, subject, self.per_subject)
        room = self._bucket(room_id, None, self.per_room)
        own_wait_s, room_wait_s = own.wait_s(), room.wait_s()
        if own_wait_s > 0:
            self._refuse("this participant's", self.per_subject, own_wait_s)
        if room_wait_s > 0:
            self._refuse("this room's", self.per_room, room_wait_s)
        own.take()
        room.take()

    def _refuse(self, whose: str, rate: float, wait_s: float) -> None:
        raise RateLimited(f"over {whose} {rate:g} {self.what} a second; slow down", wait_s)

    def _bucket(self, room_id: str, subject: str | None, rate: float) -> TokenBucket:
        key = (room_id, subject)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(rate, max(1.0, rate * self.burst_s))
            while len(self._buckets) > self.max_buckets:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket


class Rates:
    """The worker's limits, one per kind of request a client can repeat at will."""

    def __init__(self, settings: Settings) -> None:
        self.commands = RateLimit(
            "commands", per_subject=settings.commands_per_s, per_room=settings.room_commands_per_s
        )
        """HTTP commands and live-channel messages together."""
        self.sessions = RateLimit("session setups", per_subject=5, per_room=20)
        """WHIP/WHEP offers (a hang-up is never refused: it only ends what exists)."""
        self.sockets = RateLimit("socket openings", per_subject=5, per_room=20)
        """Live channels and lobbies (a lobby is keyed as room ``*``)."""
