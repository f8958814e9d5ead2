"""What the benchmarks write, and how they summarise what they time."""

from __future__ import annotations

import statistics

from events.room import ParticipantJoined, Role, RoomEvent, TalkPressed, TalkReleased

COACH = ParticipantJoined(subject="sup-1", role=Role.SUPERVISOR, name="Sam", can_whisper=True)


def talk_event(version: int) -> RoomEvent:
    """The coach pressing or releasing talk: the smallest event, alternating."""
    return TalkPressed(coach="sup-1") if version % 2 else TalkReleased(coach="sup-1")


def percentile(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[int(q) - 1]
