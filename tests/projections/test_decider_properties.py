"""Properties of the room decider under random traffic: whatever anyone sends, in any order,
the customer never hears a coach, the agent hears exactly the audible coaches, and the live
state is the state a replay of the stream gives.
"""

from __future__ import annotations

import datetime as dt

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from events.envelope import Envelope
from events.room import (
    CoachMode,
    CoachModeSet,
    CoachMuted,
    CoachUnmuted,
    CueAcknowledged,
    CueSent,
    MonitorStarted,
    MonitorStopped,
    ParticipantJoined,
    ParticipantLeft,
    RecordingPolicySet,
    Role,
    RoomClosed,
    RoomEvent,
    TalkPressed,
    TalkReleased,
    WhisperRecording,
    WhisperStarted,
    WhisperStopped,
)
from projections.commands import (
    AcknowledgeCue,
    Actor,
    CloseRoom,
    Join,
    Leave,
    MuteCoach,
    PressTalk,
    ReleaseTalk,
    RoomCommand,
    SendCue,
    SetCoachMode,
    SetRecordingPolicy,
    StartMonitor,
    StartWhisper,
    StopMonitor,
    StopWhisper,
    UnmuteCoach,
)
from projections.decider import (
    Rejection,
    RoomState,
    decide,
    evolve,
    fold,
    initial_state,
)
from projections.routes import is_audible, routes

ROOM = "room-p"
TIME = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
ACTORS = [
    Actor("cust-1", Role.CUSTOMER, "Carol", can_whisper=False),
    Actor("agent-1", Role.AGENT, "Alice", can_whisper=False),
    Actor("sup-1", Role.SUPERVISOR, "Sam", can_whisper=True),
    Actor("sup-2", Role.SUPERVISOR, "Sid", can_whisper=False),
    Actor("sup-3", Role.SUPERVISOR, "Sue", can_whisper=True),
    # Holds an agent's token but is not this room's agent: joins only if agent-1 is away.
    Actor("stranger", Role.AGENT, "Eve", can_whisper=False),
]
SUBJECTS = [actor.subject for actor in ACTORS] + ["nobody"]
TARGETS = [None, "sup-1", "agent-1", "nobody"]
CUE_IDS = ["c1", "c2"]

COMMANDS: list[RoomCommand] = [
    Join(),
    Leave(),
    StartMonitor(),
    StopMonitor(),
    StartWhisper(),
    StopWhisper(),
    PressTalk(),
    ReleaseTalk(),
    *(SetCoachMode(mode=mode) for mode in CoachMode),
    *(MuteCoach(coach=target) for target in TARGETS),
    *(UnmuteCoach(coach=target) for target in TARGETS),
    SendCue(cue_id="c1", text="slow down"),
    SendCue(cue_id="c1", text="smile"),
    SendCue(cue_id="c2", text=" "),
    *(AcknowledgeCue(cue_id=cue_id) for cue_id in [*CUE_IDS, "c9"]),
    *(SetRecordingPolicy(whisper=policy) for policy in WhisperRecording),
    CloseRoom(reason="done"),
]
# Commands drawn uniformly would mostly meet "not in room" or "only supervisor" and seldom
# reach a whisper, so a step is mostly what the actor's role is there to do (a customer's is to
# stay); a fifth of the time it is any command at all, the only way anyone leaves or closes.
USUAL: dict[Role, list[RoomCommand]] = {
    Role.CUSTOMER: [Join()],
    Role.AGENT: [AcknowledgeCue(cue_id="c1")],
    Role.SUPERVISOR: [
        StartMonitor(),
        StopMonitor(),
        StartWhisper(),
        StopWhisper(),
        PressTalk(),
        ReleaseTalk(),
        *(SetCoachMode(mode=mode) for mode in CoachMode),
        UnmuteCoach(),
        SendCue(cue_id="c1", text="slow down"),
        SetRecordingPolicy(whisper=WhisperRecording.SEPARATE_TRACK),
    ],
}


def steps_of(actor: Actor) -> st.SearchStrategy[tuple[Actor, RoomCommand]]:
    usual = st.sampled_from(USUAL[actor.role])
    command = st.one_of(usual, usual, usual, st.just(Join()), st.sampled_from(COMMANDS))
    return st.tuples(st.just(actor), command)


# The two coaches who may whisper act twice as often: they are the ones who reach the agent.
WHISPERERS = [actor for actor in ACTORS if actor.can_whisper]
sessions = st.lists(st.one_of(*map(steps_of, ACTORS + WHISPERERS)), min_size=30, max_size=60)

subjects = st.sampled_from(SUBJECTS)
event_streams = st.lists(
    st.one_of(
        st.builds(
            ParticipantJoined,
            subject=subjects,
            role=st.sampled_from(Role),
            name=st.just("Pat"),
            can_whisper=st.booleans(),
        ),
        st.builds(ParticipantLeft, subject=subjects),
        *(
            st.builds(kind, coach=subjects)
            for kind in (
                MonitorStarted,
                MonitorStopped,
                WhisperStarted,
                WhisperStopped,
                TalkPressed,
                TalkReleased,
                CoachMuted,
                CoachUnmuted,
            )
        ),
        st.builds(CoachModeSet, coach=subjects, mode=st.sampled_from(CoachMode)),
        st.builds(CueSent, cue_id=st.sampled_from(CUE_IDS), coach=subjects, text=st.just("hi")),
        st.builds(CueAcknowledged, cue_id=st.sampled_from([*CUE_IDS, "c9"])),
        st.builds(RecordingPolicySet, whisper=st.sampled_from(WhisperRecording)),
        st.builds(RoomClosed),
    ),
    max_size=40,
)

deterministic = settings(max_examples=400, derandomize=True, database=None, deadline=None)


def subjects_with(state: RoomState, role: Role) -> set[str]:
    return {p.subject for p in state.participants.values() if p.role is role}


def assert_customer_never_hears_a_supervisor(state: RoomState) -> None:
    customers = subjects_with(state, Role.CUSTOMER)
    supervisors = subjects_with(state, Role.SUPERVISOR)
    heard = {(r.producer, r.consumer) for r in routes(state)}
    assert not {(s, c) for s in supervisors for c in customers} & heard


def assert_agent_hears_exactly_the_audible_coaches(state: RoomState) -> None:
    audible = {subject for subject, coach in state.coaches.items() if is_audible(coach)}
    for agent in subjects_with(state, Role.AGENT):
        inbound = {r.producer for r in routes(state) if r.consumer == agent}
        assert inbound & set(state.coaches) == audible


def assert_coaches_are_consistent(state: RoomState) -> None:
    assert set(state.coaches) == subjects_with(state, Role.SUPERVISOR)
    assert len(subjects_with(state, Role.AGENT)) <= 1
    assert len(subjects_with(state, Role.CUSTOMER)) <= 1
    for coach in state.coaches.values():
        assert coach.monitoring or not coach.whispering
        assert coach.whispering or not coach.talking
        assert coach.mode is CoachMode.PUSH_TO_TALK or not coach.talking


@deterministic
@given(steps=sessions)
def test_random_commands_keep_the_whisper_private_and_the_state_replayable(
    steps: list[tuple[Actor, RoomCommand]],
) -> None:
    state = initial_state(ROOM)
    envelopes: list[Envelope] = []
    for actor, command in steps:
        outcome = decide(state, command, actor)
        if state.closed:
            assert all(isinstance(decide(state, command, a), Rejection) for a in ACTORS)
        if not isinstance(outcome, Rejection):
            for event in outcome:
                version = len(envelopes) + 1
                envelopes.append(
                    Envelope(
                        event_id=f"e{version}",
                        room_id=ROOM,
                        version=version,
                        time=TIME,
                        actor=actor.subject,
                        event=event,
                    )
                )
                state = msgspec.structs.replace(evolve(state, event), version=version)
        assert_customer_never_hears_a_supervisor(state)
        assert_agent_hears_exactly_the_audible_coaches(state)
        assert_coaches_are_consistent(state)
    assert fold(initial_state(ROOM), envelopes) == state
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(state), type=RoomState) == state


@deterministic
@given(events=event_streams)
def test_evolve_takes_any_events_and_no_state_lets_the_customer_hear_a_supervisor(
    events: list[RoomEvent],
) -> None:
    state = initial_state(ROOM)
    for event in events:
        state = evolve(state, event)
        assert_customer_never_hears_a_supervisor(state)
        assert set(state.coaches) == subjects_with(state, Role.SUPERVISOR)
