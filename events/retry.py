"""Capped exponential back-off for the loops that must outlive any outage of Redis.

A worker that follows a stream runs forever; when Redis goes away it waits and tries again, a
little longer each time (so that a long outage costs a few attempts a second at most, not a
busy loop), and starts from the shortest wait again once an attempt has succeeded. The waits
are jittered so that many workers restarting at once do not knock in step.
"""

from __future__ import annotations

import asyncio
import random


class Backoff:
    def __init__(self, *, first_s: float = 0.1, max_s: float = 5.0) -> None:
        self.first_s = first_s
        self.max_s = max_s
        self.failures = 0
        """Failures in a row since the last ``reset``."""

    def next_s(self) -> float:
        """The next wait: ``first_s`` doubled per failure in a row, capped, with ±25 % jitter."""
        base: float = min(self.max_s, self.first_s * 2.0 ** min(self.failures, 30))
        return base * random.uniform(0.75, 1.25)

    async def wait(self) -> float:
        """Count a failure and sleep the next wait; returns how long it slept."""
        seconds = self.next_s()
        self.failures += 1
        await asyncio.sleep(seconds)
        return seconds

    def reset(self) -> None:
        self.failures = 0
