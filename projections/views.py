"""What each person in a room may see of it: one view per role, computed from the room's state.

Pages are drawn from these views only. The customer's view is built from the customer and the
agent alone: it names, counts and times nothing of a supervisor, and since it carries no
version either, a page that is sent a view only when it changes learns nothing from *when*
views arrive. The agent sees who is coaching and whose voice is in their ear; supervisors see
the whole room.
"""

from __future__ import annotations

import datetime as dt
from typing import assert_never

import msgspec

from events.room import CoachMode, Role, WhisperRecording
from projections.decider import RoomState
from projections.routes import is_audible

CUES_SHOWN = 20
"""The newest cues a view carries: a view is resent on every change of the room."""


class Person(msgspec.Struct, frozen=True, kw_only=True):
    subject: str
    name: str


class CoachBadge(msgspec.Struct, frozen=True, kw_only=True):
    """What the agent sees of a coach: who, and whether their voice is in the agent's ear."""

    subject: str
    name: str
    whispering: bool
    muted: bool
    audible: bool


class CoachView(msgspec.Struct, frozen=True, kw_only=True):
    """What supervisors see of each coach."""

    subject: str
    name: str
    can_whisper: bool
    monitoring: bool
    whispering: bool
    mode: CoachMode
    talking: bool
    muted: bool
    muted_by_agent: bool
    """The agent silenced them, rather than they themself: the console says so."""
    audible: bool


class CueView(msgspec.Struct, frozen=True, kw_only=True):
    cue_id: str
    coach: str
    coach_name: str
    text: str
    acknowledged: bool


class CustomerView(msgspec.Struct, frozen=True, kw_only=True, tag="customer"):
    room_id: str
    you: Person
    agent: Person | None
    closed: bool


class AgentView(msgspec.Struct, frozen=True, kw_only=True, tag="agent"):
    room_id: str
    you: Person
    customer: Person | None
    coaches: tuple[CoachBadge, ...]
    cues: tuple[CueView, ...]
    closed: bool


class SupervisorView(msgspec.Struct, frozen=True, kw_only=True, tag="supervisor"):
    room_id: str
    version: int
    you: Person
    customer: Person | None
    agent: Person | None
    coaches: tuple[CoachView, ...]
    cues: tuple[CueView, ...]
    recording: WhisperRecording
    closed: bool


RoomView = CustomerView | AgentView | SupervisorView


class LiveRoom(msgspec.Struct, frozen=True, kw_only=True):
    """A room as the supervisors' lobby lists it."""

    room_id: str
    queue: str
    customer: str | None
    agent: str | None
    coaches: tuple[str, ...]
    coaching: tuple[str, ...]
    """The coaches whispering now."""
    opened_at: dt.datetime


def live_room(state: RoomState, opened_at: dt.datetime) -> LiveRoom | None:
    """The lobby's entry for a room: None once it is closed, empty, or in no queue."""
    if state.closed or not state.queue or not state.participants:
        return None
    customer, agent = _first(state, Role.CUSTOMER), _first(state, Role.AGENT)
    coaches = _coaches(state)
    return LiveRoom(
        room_id=state.room_id,
        queue=state.queue,
        customer=customer.name if customer else None,
        agent=agent.name if agent else None,
        coaches=tuple(coach.name for coach in coaches),
        coaching=tuple(coach.name for coach in coaches if coach.whispering),
        opened_at=opened_at,
    )


def view_for(state: RoomState, subject: str, role: Role, name: str) -> RoomView:
    """The room as ``subject`` (a ``role`` called ``name``) may see it."""
    you = Person(subject=subject, name=name)
    match role:
        case Role.CUSTOMER:
            return CustomerView(
                room_id=state.room_id, you=you, agent=_first(state, Role.AGENT), closed=state.closed
            )
        case Role.AGENT:
            return AgentView(
                room_id=state.room_id,
                you=you,
                customer=_first(state, Role.CUSTOMER),
                coaches=tuple(
                    CoachBadge(
                        subject=coach.subject,
                        name=coach.name,
                        whispering=coach.whispering,
                        muted=coach.muted,
                        audible=coach.audible,
                    )
                    for coach in _coaches(state)
                ),
                cues=_cues(state),
                closed=state.closed,
            )
        case Role.SUPERVISOR:
            return SupervisorView(
                room_id=state.room_id,
                version=state.version,
                you=you,
                customer=_first(state, Role.CUSTOMER),
                agent=_first(state, Role.AGENT),
                coaches=_coaches(state),
                cues=_cues(state),
                recording=state.recording,
                closed=state.closed,
            )
        case _:
            assert_never(role)


def _first(state: RoomState, role: Role) -> Person | None:
    return next(
        (
            Person(subject=p.subject, name=p.name)
            for p in state.participants.values()
            if p.role is role
        ),
        None,
    )


def _coaches(state: RoomState) -> tuple[CoachView, ...]:
    """The coaches in the room; none once it is closed (nobody is in a call that has ended)."""
    if state.closed:
        return ()
    return tuple(
        CoachView(
            subject=subject,
            name=state.participants[subject].name,
            can_whisper=state.participants[subject].can_whisper,
            monitoring=coach.monitoring,
            whispering=coach.whispering,
            mode=coach.mode,
            talking=coach.talking,
            muted=coach.muted,
            muted_by_agent=bool(coach.muted_by),
            # Heard only through a live session: a coach with no media reaches nobody's ear.
            audible=is_audible(coach) and bool(state.participants[subject].worker),
        )
        for subject, coach in state.coaches.items()
        if subject in state.participants
    )


def _cues(state: RoomState) -> tuple[CueView, ...]:
    newest = list(state.cues.values())[-CUES_SHOWN:]  # a dict keeps the order they were sent in
    return tuple(
        CueView(
            cue_id=cue.cue_id,
            coach=cue.coach,
            coach_name=cue.coach_name
            or (p.name if (p := state.participants.get(cue.coach)) else cue.coach),
            text=cue.text,
            acknowledged=cue.acknowledged,
        )
        for cue in newest
    )
