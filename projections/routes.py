"""Who hears whom in a room: the audio routes the SFU must set up for a ``RoomState``.

A route carries one subject's microphone (the producer) to one subject's ear (the consumer).
The whole point of a whisper is that the customer never hears it, so routes are built from the
customer's side outwards: a customer consumes the agent and nothing else, which no state of
any coach can change.
"""

from __future__ import annotations

import msgspec

from events.room import CoachMode, Role
from projections.decider import Coach, RoomState


class AudioRoute(msgspec.Struct, frozen=True):
    producer: str
    """The subject whose microphone is heard."""
    consumer: str
    """The subject who hears it."""


def is_audible(coach: Coach) -> bool:
    """Whether the agent hears this coach right now."""
    return (
        coach.whispering and not coach.muted and (coach.mode is CoachMode.OPEN_MIC or coach.talking)
    )


def routes(state: RoomState) -> frozenset[AudioRoute]:
    if state.closed:
        return frozenset()
    customers = _subjects(state, Role.CUSTOMER)
    agents = _subjects(state, Role.AGENT)
    listeners = [subject for subject, coach in state.coaches.items() if coach.monitoring]
    speakers = [subject for subject, coach in state.coaches.items() if is_audible(coach)]
    return frozenset(
        [AudioRoute(agent, customer) for agent in agents for customer in customers]
        + [AudioRoute(customer, agent) for customer in customers for agent in agents]
        + [AudioRoute(coach, agent) for coach in speakers for agent in agents]
        + [AudioRoute(caller, coach) for coach in listeners for caller in customers + agents]
    )


def _subjects(state: RoomState, role: Role) -> list[str]:
    return [p.subject for p in state.participants.values() if p.role is role]
