"""Properties of the room decider under random traffic: whatever anyone sends, in any order,
the customer never hears a coach, the agent hears exactly the audible coaches, and the live
state is the state a replay of the stream gives.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from events import room
from events.envelope import Envelope
from events.room import CoachMode, Role, RoomEvent, WhisperRecording
from projections import commands, decider
from projections.commands import Actor, RoomCommand
from projections.decider import (
    Rejection,
    RoomState,
    decide,
    evolve,
    fold,
    initial_state,
)
from projections.routes import AudioRoute, is_audible, routes
from tests.guards import fails_without

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
    commands.Join(),
    commands.Leave(),
    commands.StartMonitor(),
    commands.StopMonitor(),
    commands.StartWhisper(),
    commands.StopWhisper(),
    commands.PressTalk(),
    commands.ReleaseTalk(),
    *(commands.SetCoachMode(mode=mode) for mode in CoachMode),
    *(commands.MuteCoach(coach=target) for target in TARGETS),
    *(commands.UnmuteCoach(coach=target) for target in TARGETS),
    commands.SendCue(cue_id="c1", text="slow down"),
    commands.SendCue(cue_id="c1", text="smile"),
    commands.SendCue(cue_id="c2", text=" "),
    *(commands.AcknowledgeCue(cue_id=cue_id) for cue_id in [*CUE_IDS, "c9"]),
    *(commands.SetRecordingPolicy(whisper=policy) for policy in WhisperRecording),
    commands.CloseRoom(reason="done"),
]
# Commands drawn uniformly would mostly meet "not in room" or "only supervisor" and seldom
# reach a whisper, so a step is mostly what the actor's role is there to do (a customer's is to
# stay); a fifth of the time it is any command at all, the only way anyone leaves or closes.
USUAL: dict[Role, list[RoomCommand]] = {
    Role.CUSTOMER: [commands.Join()],
    Role.AGENT: [commands.AcknowledgeCue(cue_id="c1")],
    Role.SUPERVISOR: [
        commands.StartMonitor(),
        commands.StopMonitor(),
        commands.StartWhisper(),
        commands.StopWhisper(),
        commands.PressTalk(),
        commands.ReleaseTalk(),
        *(commands.SetCoachMode(mode=mode) for mode in CoachMode),
        commands.UnmuteCoach(),
        commands.SendCue(cue_id="c1", text="slow down"),
        commands.SetRecordingPolicy(whisper=WhisperRecording.SEPARATE_TRACK),
    ],
}


def steps_of(actor: Actor) -> st.SearchStrategy[tuple[Actor, RoomCommand]]:
    usual = st.sampled_from(USUAL[actor.role])
    command = st.one_of(usual, usual, usual, st.just(commands.Join()), st.sampled_from(COMMANDS))
    return st.tuples(st.just(actor), command)


# The two coaches who may whisper act twice as often: they are the ones who reach the agent.
WHISPERERS = [actor for actor in ACTORS if actor.can_whisper]
sessions = st.lists(st.one_of(*map(steps_of, ACTORS + WHISPERERS)), min_size=30, max_size=60)

subjects = st.sampled_from(SUBJECTS)
any_event = st.one_of(
    st.builds(
        room.ParticipantJoined,
        subject=subjects,
        role=st.sampled_from(Role),
        name=st.just("Pat"),
        can_whisper=st.booleans(),
    ),
    st.builds(room.ParticipantLeft, subject=subjects),
    *(
        st.builds(kind, coach=subjects)
        for kind in (
            room.MonitorStarted,
            room.MonitorStopped,
            room.WhisperStarted,
            room.WhisperStopped,
            room.TalkPressed,
            room.TalkReleased,
            room.CoachMuted,
            room.CoachUnmuted,
        )
    ),
    st.builds(room.CoachModeSet, coach=subjects, mode=st.sampled_from(CoachMode)),
    st.builds(room.CueSent, cue_id=st.sampled_from(CUE_IDS), coach=subjects, text=st.just("hi")),
    st.builds(room.CueAcknowledged, cue_id=st.sampled_from([*CUE_IDS, "c9"])),
    st.builds(room.RecordingPolicySet, whisper=st.sampled_from(WhisperRecording)),
    st.builds(room.RoomClosed),
)


# Events drawn one at a time almost never leave a customer in the room beside an audible coach
# (four given events about two subjects, while one event in fifteen closes the room), the one
# state where a route to the customer would leak a whisper: some stretches set it up.
@st.composite
def whisper_scenes(draw: st.DrawFn) -> list[RoomEvent]:
    customer, coach = draw(subjects), draw(subjects)
    audible = draw(
        st.sampled_from(
            [room.TalkPressed(coach=coach), room.CoachModeSet(coach=coach, mode=CoachMode.OPEN_MIC)]
        )
    )
    return [
        room.ParticipantJoined(subject=customer, role=Role.CUSTOMER, name="Pat"),
        room.ParticipantJoined(subject=coach, role=Role.SUPERVISOR, name="Pat", can_whisper=True),
        room.WhisperStarted(coach=coach),
        audible,
    ]


event_streams = st.lists(
    st.one_of(any_event.map(lambda event: [event]), whisper_scenes()), max_size=40
).map(lambda stretches: [event for stretch in stretches for event in stretch])

deterministic = settings(max_examples=400, derandomize=True, database=None, deadline=None)


def subjects_with(state: RoomState, role: Role) -> set[str]:
    return {p.subject for p in state.participants.values() if p.role is role}


def assert_customer_never_hears_a_supervisor(state: RoomState) -> None:
    customers = subjects_with(state, Role.CUSTOMER)
    supervisors = subjects_with(state, Role.SUPERVISOR)
    heard = {(r.producer, r.consumer) for r in routes(state)}
    leaks = {(s, c) for s in supervisors for c in customers} & heard
    assert not leaks, f"the customer hears {leaks}"


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


# Guard (a) is the decider alone: nothing else stands between its routes and these checks. The
# proof that they can fail patches ``routes`` where they look it up, in this module.


def carry_audible_coaches_to_the_customer(patch: pytest.MonkeyPatch) -> None:
    """Guard (a) removed: the routes also carry every audible coach to the customer."""
    decided = routes

    def leaking(state: RoomState) -> frozenset[AudioRoute]:
        customers = subjects_with(state, Role.CUSTOMER)
        audible = [subject for subject, coach in state.coaches.items() if is_audible(coach)]
        return decided(state) | {AudioRoute(c, customer) for c in audible for customer in customers}

    patch.setattr(sys.modules[__name__], "routes", leaking)


def first_failure_of(prop: Callable[..., None], **strategies: st.SearchStrategy[object]) -> Any:
    """``prop``'s test, stopping at its first failure: finding a minimal one takes seconds."""
    stop_early = settings(deterministic, phases=[Phase.generate], report_multiple_bugs=False)
    return stop_early(given(**strategies)(prop.hypothesis.inner_test))  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "prop",
    [
        first_failure_of(
            test_random_commands_keep_the_whisper_private_and_the_state_replayable, steps=sessions
        ),
        first_failure_of(
            test_evolve_takes_any_events_and_no_state_lets_the_customer_hear_a_supervisor,
            events=event_streams,
        ),
    ],
    ids=["commands", "events"],
)
def test_property_fails_once_the_routes_carry_a_coach_to_the_customer(
    monkeypatch: pytest.MonkeyPatch, prop: Callable[[], None]
) -> None:
    failure = fails_without(
        prop,
        lambda: carry_audible_coaches_to_the_customer(monkeypatch),
        passes_first=False,  # each property is its own test as is
    )

    assert "the customer hears" in failure


# --- fail closed: sessions come and go ------------------------------------------------------

WORKERS = ["w1", "w2"]
SessionStep = tuple[Actor, RoomCommand | commands.SessionCommand]


def session_steps_of(actor: Actor) -> st.SearchStrategy[SessionStep]:
    """What happens to ``actor``'s sessions: attached through a worker (a connect, or a
    reconnect to a restarted one), or ended (a session lost, a worker lost, a join's grace)."""
    attach = st.builds(commands.AttachSession, worker=st.sampled_from(WORKERS))
    end = st.builds(
        commands.EndPresence,
        subject=st.just(actor.subject),
        reason=st.sampled_from(room.LeaveReason),
        worker=st.sampled_from(["", *WORKERS]),
    )
    return st.tuples(st.just(actor), st.one_of(attach, end))


def worker_restart(worker: str) -> st.SearchStrategy[list[SessionStep]]:
    """A worker lost: every presence it held ends, as the sweep of another worker ends them."""
    return st.just(
        [
            (
                actor,
                commands.EndPresence(
                    subject=actor.subject, reason=room.LeaveReason.WORKER_LOST, worker=worker
                ),
            )
            for actor in ACTORS
        ]
    )


@st.composite
def reconnect_scenes(draw: st.DrawFn) -> list[SessionStep]:
    """An audible coach whose sessions come back through a worker: random steps seldom reach
    it (an agent and the coach both attached, a whisper, an open mic or a held button)."""
    coach, agent = draw(st.sampled_from(WHISPERERS)), ACTORS[1]
    first, then = draw(st.sampled_from(WORKERS)), draw(st.sampled_from(["", *WORKERS]))
    audible = draw(
        st.sampled_from([commands.PressTalk(), commands.SetCoachMode(mode=CoachMode.OPEN_MIC)])
    )
    back: RoomCommand | commands.SessionCommand = (
        commands.Join() if not then else commands.AttachSession(worker=then)
    )
    return [
        (agent, commands.AttachSession(worker=first)),
        (coach, commands.AttachSession(worker=first)),
        (coach, commands.StartWhisper()),
        (coach, audible),
        (coach, back),
    ]


lives = st.lists(
    st.one_of(
        *(steps_of(actor).map(lambda step: [step]) for actor in ACTORS + WHISPERERS),
        *(session_steps_of(actor).map(lambda step: [step]) for actor in ACTORS + WHISPERERS),
        *map(worker_restart, WORKERS),
        reconnect_scenes(),
    ),
    min_size=20,
    max_size=60,
).map(lambda stretches: [step for stretch in stretches for step in stretch])


@deterministic
@given(steps=lives)
def test_no_coach_is_audible_without_a_whisper_asked_since_their_latest_join(
    steps: list[SessionStep],
) -> None:
    """Whatever interleaving of commands, lost sessions, reconnects and worker restarts: a coach
    the agent hears asked to whisper after they last joined (through the session they are on)."""
    state = initial_state(ROOM)
    asked_since_join: dict[str, bool] = {}
    for actor, command in steps:
        outcome = decide(state, command, actor)
        if isinstance(outcome, Rejection):
            continue
        for event in outcome:
            match event:
                case room.ParticipantJoined(subject=subject):
                    asked_since_join[subject] = False
                case room.WhisperStarted(coach=coach):
                    asked_since_join[coach] = True
            state = evolve(state, event)
        agents = subjects_with(state, Role.AGENT)
        heard = {r.producer for r in routes(state) if r.consumer in agents}
        for coach in heard & set(state.coaches):
            assert asked_since_join[coach], f"{coach} is heard without asking since joining"
        assert_customer_never_hears_a_supervisor(state)


def attach_without_failing_closed(patch: pytest.MonkeyPatch) -> None:
    """The guard removed: a coach who attaches through another session keeps their whisper."""
    attach = decider._attach_session

    def keeping_the_whisper(
        state: RoomState, actor: Actor, worker: str
    ) -> list[RoomEvent] | Rejection:
        participant = state.participants.get(actor.subject)
        if participant is None or participant.worker == worker:
            return attach(state, actor, worker)
        return [decider._joined(actor, worker)]

    patch.setattr(decider, "_attach_session", keeping_the_whisper)


def test_fail_closed_property_fails_once_a_reattached_coach_keeps_their_whisper(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prop = first_failure_of(
        test_no_coach_is_audible_without_a_whisper_asked_since_their_latest_join, steps=lives
    )

    failure = fails_without(
        prop, lambda: attach_without_failing_closed(monkeypatch), passes_first=False
    )

    assert "is heard without asking since joining" in failure
