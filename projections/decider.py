"""The room decider: its state, how events change it, and what a command is allowed to do.

``initial_state`` + ``evolve`` fold a room's events into a ``RoomState`` (``fold`` does it over
stored envelopes); ``decide`` answers a command from an actor with the events it causes, ``[]``
when it changes nothing, or a ``Rejection`` saying why it cannot happen. Everything here is
pure: the shell loads the state, calls ``decide``, appends the events and evolves.

State is made of frozen Structs with fresh dicts on every change, so a snapshot is one msgpack
encode and two states compare by value.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar, assert_never

import msgspec
from msgspec.structs import replace

from events import room
from events.envelope import Envelope
from events.room import CoachMode, LeaveReason, Role, RoomEvent, WhisperRecording
from projections import commands
from projections.commands import Actor, RoomCommand, SessionCommand, command_name


class Participant(msgspec.Struct, frozen=True):
    subject: str
    role: Role
    name: str
    can_whisper: bool
    worker: str = ""
    """The worker whose media session holds their presence; "" for none yet (an HTTP join)."""


class Coach(msgspec.Struct, frozen=True):
    """What a supervisor is doing. Whispering implies monitoring: a coach hears what they coach."""

    monitoring: bool = False
    whispering: bool = False
    mode: CoachMode = CoachMode.PUSH_TO_TALK
    talking: bool = False
    """The push-to-talk button is held."""
    muted: bool = False
    muted_by: str = ""
    """Who muted them, if not themself: the agent can silence a coach; only the coach unmutes."""


class Cue(msgspec.Struct, frozen=True):
    cue_id: str
    coach: str
    text: str
    acknowledged: bool = False
    coach_name: str = ""
    """The coach's display name when they sent it: a cue outlives its coach's presence."""


class RoomState(msgspec.Struct, frozen=True):
    room_id: str
    version: int = 0
    participants: dict[str, Participant] = msgspec.field(default_factory=dict)
    coaches: dict[str, Coach] = msgspec.field(default_factory=dict)
    """One per joined supervisor, keyed by subject."""
    cues: dict[str, Cue] = msgspec.field(default_factory=dict)
    recording: WhisperRecording = WhisperRecording.EXCLUDED
    closed: bool = False
    queue: str = ""
    """The queue of the first participant who joined with one: where supervisors find the room."""


class Rejection(msgspec.Struct, frozen=True):
    reason: str


def initial_state(room_id: str) -> RoomState:
    return RoomState(room_id=room_id)


# --- evolve ----------------------------------------------------------------------------------

# Stopping the monitor also ends a whisper (and starting a whisper starts the monitor), so even
# a hand-written stream cannot leave a coach whispering into a call they do not hear.
_STOPPED = {"monitoring": False, "whispering": False, "talking": False}

MAX_CUES = 200
"""Cues a room keeps (each is up to 2,000 characters): a call with more is refused the next."""


def evolve(state: RoomState, event: RoomEvent) -> RoomState:
    """The state after ``event``. Total: an event about an unknown subject changes nothing."""
    match event:
        case room.ParticipantJoined(
            subject=subject,
            role=role,
            name=name,
            can_whisper=can_whisper,
            queue=queue,
            worker=worker,
        ):
            participant = Participant(subject, role, name, can_whisper, worker)
            coaches = _without(state.coaches, subject)
            if role is Role.SUPERVISOR:
                coaches[subject] = state.coaches.get(subject, Coach())
            return replace(
                state,
                participants={**state.participants, subject: participant},
                coaches=coaches,
                queue=state.queue or queue,
            )
        case room.ParticipantLeft(subject=subject):
            return replace(
                state,
                participants=_without(state.participants, subject),
                coaches=_without(state.coaches, subject),
            )
        case room.MonitorStarted(coach=subject):
            return _change_coach(state, subject, monitoring=True)
        case room.MonitorStopped(coach=subject):
            return _change_coach(state, subject, **_STOPPED)
        case room.WhisperStarted(coach=subject):
            return _change_coach(state, subject, whispering=True, monitoring=True)
        case room.WhisperStopped(coach=subject):
            return _change_coach(state, subject, whispering=False, talking=False)
        case room.CoachModeSet(coach=subject, mode=mode):
            return _change_coach(state, subject, mode=mode, talking=False)
        case room.TalkPressed(coach=subject):
            return _change_coach(state, subject, talking=True)
        case room.TalkReleased(coach=subject):
            return _change_coach(state, subject, talking=False)
        case room.CoachMuted(coach=subject, by=by):
            return _change_coach(state, subject, muted=True, muted_by=by)
        case room.CoachUnmuted(coach=subject):
            return _change_coach(state, subject, muted=False, muted_by="")
        case room.CueSent(cue_id=cue_id, coach=subject, text=text):
            sender = state.participants.get(subject)
            sent = Cue(cue_id, subject, text, coach_name=sender.name if sender else "")
            return replace(state, cues={**state.cues, cue_id: sent})
        case room.CueAcknowledged(cue_id=cue_id):
            cue = state.cues.get(cue_id)
            if cue is None:
                return state
            return replace(state, cues={**state.cues, cue_id: replace(cue, acknowledged=True)})
        case room.RecordingPolicySet(whisper=policy):
            return replace(state, recording=policy)
        case room.RoomClosed():
            coaches = {subject: replace(c, **_STOPPED) for subject, c in state.coaches.items()}
            return replace(state, closed=True, coaches=coaches)
        case _:
            assert_never(event)


def fold(state: RoomState, envelopes: Iterable[Envelope]) -> RoomState:
    """``state`` with each envelope's event applied, at the last envelope's version."""
    for envelope in envelopes:
        state = replace(evolve(state, envelope.event), version=envelope.version)
    return state


_V = TypeVar("_V")


def _change_coach(state: RoomState, subject: str, **changes: object) -> RoomState:
    coach = state.coaches.get(subject)
    if coach is None:
        return state
    return replace(state, coaches={**state.coaches, subject: replace(coach, **changes)})


def _without(mapping: dict[str, _V], key: str) -> dict[str, _V]:
    return {k: v for k, v in mapping.items() if k != key}


# --- decide ----------------------------------------------------------------------------------

_EVERYONE = (Role.CUSTOMER, Role.AGENT, Role.SUPERVISOR)
_STAFF = (Role.AGENT, Role.SUPERVISOR)
_SUPERVISOR = (Role.SUPERVISOR,)

ROLES_ALLOWED: dict[type[RoomCommand], tuple[Role, ...]] = {
    commands.Join: _EVERYONE,
    commands.Leave: _EVERYONE,
    commands.StartMonitor: _SUPERVISOR,
    commands.StopMonitor: _SUPERVISOR,
    commands.StartWhisper: _SUPERVISOR,
    commands.StopWhisper: _SUPERVISOR,
    commands.SetCoachMode: _SUPERVISOR,
    commands.PressTalk: _SUPERVISOR,
    commands.ReleaseTalk: _SUPERVISOR,
    commands.MuteCoach: _STAFF,
    commands.UnmuteCoach: _SUPERVISOR,
    commands.SendCue: _SUPERVISOR,
    commands.AcknowledgeCue: (Role.AGENT,),
    commands.SetRecordingPolicy: _SUPERVISOR,
    commands.CloseRoom: _STAFF,
}
"""Which roles may send each command at all; ``decide`` then checks the room's state."""

# Everything that puts a coach's voice or words in the agent's ear. Stopping needs no claim,
# so a coach whose claim was withdrawn mid-call can still get out.
NEEDS_WHISPER_CLAIM: frozenset[type[RoomCommand]] = frozenset(
    {commands.StartWhisper, commands.SetCoachMode, commands.PressTalk, commands.SendCue}
)


def decide(
    state: RoomState, command: RoomCommand | SessionCommand, actor: Actor
) -> list[RoomEvent] | Rejection:
    """The events ``command`` from ``actor`` causes; ``[]`` if it changes nothing."""
    if isinstance(command, commands.AttachSession):
        return _attach_session(state, actor, command.worker)
    if isinstance(command, commands.EndPresence):
        return _end_presence(state, command.subject, command.reason, command.worker)
    refusal = _refusal(state, command, actor)
    if refusal is not None:
        return refusal
    subject = actor.subject
    # Only supervisors have a coach; everyone else acts as an idle one, which has nothing to end.
    coach = state.coaches.get(subject, Coach())
    match command:
        case commands.Join():
            return _join(state, actor)
        case commands.Leave():
            return _leave(subject, coach, LeaveReason.ASKED)
        case commands.StartMonitor():
            return [] if coach.monitoring else [room.MonitorStarted(coach=subject)]
        case commands.StopMonitor():
            return _stop_monitor(subject, coach)
        case commands.StartWhisper():
            return _start_whisper(subject, coach)
        case commands.StopWhisper():
            return _stop_whisper(subject, coach)
        case commands.SetCoachMode(mode=mode):
            if coach.mode is mode:
                return []
            return [*_release_talk(subject, coach), room.CoachModeSet(coach=subject, mode=mode)]
        case commands.PressTalk():
            return _press_talk(subject, coach)
        case commands.ReleaseTalk():
            return _release_talk(subject, coach)
        case commands.MuteCoach(coach=target):
            return _mute(state, actor, subject if target is None else target)
        case commands.UnmuteCoach(coach=target):
            return _unmute(state, actor, subject if target is None else target)
        case commands.SendCue():
            return _send_cue(state, subject, command)
        case commands.AcknowledgeCue(cue_id=cue_id):
            return _acknowledge_cue(state, cue_id)
        case commands.SetRecordingPolicy(whisper=policy):
            return [] if state.recording is policy else [room.RecordingPolicySet(whisper=policy)]
        case commands.CloseRoom(reason=reason):
            return [room.RoomClosed(reason=reason)]
        case _:
            assert_never(command)


def _refusal(state: RoomState, command: RoomCommand, actor: Actor) -> Rejection | None:
    """Why ``actor`` may not send ``command`` here at all, whatever it asks for."""
    name = command_name(command)
    if state.closed:
        return Rejection(f"{actor.subject} cannot {name}: room {state.room_id} is closed")
    allowed = ROLES_ALLOWED[type(command)]
    if actor.role not in allowed:
        roles = " or ".join(allowed)
        return Rejection(f"{actor.subject} cannot {name} as {actor.role}: only {roles}")
    if type(command) in NEEDS_WHISPER_CLAIM and not actor.can_whisper:
        return Rejection(f"{actor.subject} cannot {name}: the token has no whisper claim")
    participant = state.participants.get(actor.subject)
    if participant is None:
        if isinstance(command, commands.Join):
            return None
        return Rejection(f"{actor.subject} cannot {name}: not in room {state.room_id}")
    if participant.role is not actor.role:
        return Rejection(
            f"{actor.subject} cannot {name}: joined as {participant.role}, "
            f"but the token says {actor.role}"
        )
    return None


def _attach_session(state: RoomState, actor: Actor, worker: str) -> list[RoomEvent] | Rejection:
    """Join through a session on ``worker``. Fail closed: a coach is heard only through a live
    session and a whisper asked for during it, so one whose presence was held otherwise (no
    session yet, or sessions lost with another worker) is in silent monitor at best, and must
    ask again to whisper."""
    refusal = _refusal(state, commands.Join(), actor)
    if refusal is not None:
        return refusal
    participant = state.participants.get(actor.subject)
    if participant is None:
        return _join(state, actor, worker)
    if participant.worker == worker:
        return []
    coach = state.coaches.get(actor.subject, Coach())
    return [*_stop_whisper(actor.subject, coach), _joined(actor, worker)]


def _end_presence(
    state: RoomState, subject: str, reason: LeaveReason, worker: str
) -> list[RoomEvent]:
    """``subject`` leaves, with everything they were doing, if ``worker`` still holds them."""
    participant = state.participants.get(subject)
    if state.closed or participant is None or participant.worker != worker:
        return []
    return _leave(subject, state.coaches.get(subject, Coach()), reason)


def _leave(subject: str, coach: Coach, reason: LeaveReason) -> list[RoomEvent]:
    """Everything the participant was doing ends, then they leave."""
    return [*_stop_monitor(subject, coach), room.ParticipantLeft(subject=subject, reason=reason)]


def _joined(actor: Actor, worker: str) -> room.ParticipantJoined:
    return room.ParticipantJoined(
        subject=actor.subject,
        role=actor.role,
        name=actor.name,
        can_whisper=actor.can_whisper,
        queue=actor.queue,
        worker=worker,
    )


def _join(state: RoomState, actor: Actor, worker: str = "") -> list[RoomEvent] | Rejection:
    if actor.subject in state.participants:
        return []
    if actor.role is not Role.SUPERVISOR:
        for other in state.participants.values():
            if other.role is actor.role:
                return Rejection(
                    f"{actor.subject} cannot join as {actor.role}: "
                    f"{other.subject} is already the {actor.role} of room {state.room_id}"
                )
    return [_joined(actor, worker)]


# The three ends nest: stopping the monitor stops the whisper, which releases the talk button.
# Each end is its own event, in that order, so the audit shows every one.


def _release_talk(subject: str, coach: Coach) -> list[RoomEvent]:
    return [room.TalkReleased(coach=subject)] if coach.talking else []


def _stop_whisper(subject: str, coach: Coach) -> list[RoomEvent]:
    if not coach.whispering:
        return []
    return [*_release_talk(subject, coach), room.WhisperStopped(coach=subject)]


def _stop_monitor(subject: str, coach: Coach) -> list[RoomEvent]:
    if not coach.monitoring:
        return []
    return [*_stop_whisper(subject, coach), room.MonitorStopped(coach=subject)]


def _start_whisper(subject: str, coach: Coach) -> list[RoomEvent]:
    if coach.whispering:
        return []
    # One click from nothing to whisper: a whispering coach still hears the call.
    monitor: list[RoomEvent] = [] if coach.monitoring else [room.MonitorStarted(coach=subject)]
    return [*monitor, room.WhisperStarted(coach=subject)]


def _press_talk(subject: str, coach: Coach) -> list[RoomEvent] | Rejection:
    if not coach.whispering:
        return Rejection(f"{subject} cannot talk while not whispering")
    if coach.mode is CoachMode.OPEN_MIC:
        return Rejection(f"{subject} cannot press talk: the microphone is open (open_mic mode)")
    return [] if coach.talking else [room.TalkPressed(coach=subject)]


def _mute(state: RoomState, actor: Actor, target: str) -> list[RoomEvent] | Rejection:
    coach = state.coaches.get(target)
    if coach is None:
        return Rejection(f"{actor.subject} cannot mute {target}: not a supervisor in the room")
    if target != actor.subject and actor.role is not Role.AGENT:
        return Rejection(f"{actor.subject} cannot mute {target}: only the coach or the agent may")
    by = "" if target == actor.subject else actor.subject
    return [] if coach.muted else [room.CoachMuted(coach=target, by=by)]


def _unmute(state: RoomState, actor: Actor, target: str) -> list[RoomEvent] | Rejection:
    coach = state.coaches.get(target)
    if coach is None:
        return Rejection(f"{actor.subject} cannot unmute {target}: not a supervisor in the room")
    if target != actor.subject:
        return Rejection(f"{actor.subject} cannot unmute {target}: only the coach may")
    return [room.CoachUnmuted(coach=target)] if coach.muted else []


def _send_cue(
    state: RoomState, subject: str, command: commands.SendCue
) -> list[RoomEvent] | Rejection:
    if not any(p.role is Role.AGENT for p in state.participants.values()):
        return Rejection(f"{subject} cannot send cue {command.cue_id}: no agent in the room")
    if not command.text.strip():
        return Rejection(f"{subject} cannot send cue {command.cue_id}: the text is blank")
    sent = state.cues.get(command.cue_id)
    if sent is None and len(state.cues) >= MAX_CUES:
        return Rejection(f"{subject} cannot send cue {command.cue_id}: the room has {MAX_CUES}")
    if sent is None:
        return [room.CueSent(cue_id=command.cue_id, coach=subject, text=command.text)]
    if sent.coach == subject and sent.text == command.text:
        return []  # a retry of the same cue
    return Rejection(
        f"{subject} cannot send cue {command.cue_id}: {sent.coach} already sent one with that id"
    )


def _acknowledge_cue(state: RoomState, cue_id: str) -> list[RoomEvent] | Rejection:
    cue = state.cues.get(cue_id)
    if cue is None:
        return Rejection(f"cannot acknowledge cue {cue_id}: no such cue in room {state.room_id}")
    return [] if cue.acknowledged else [room.CueAcknowledged(cue_id=cue_id)]
