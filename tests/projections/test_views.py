from __future__ import annotations

import msgspec
from hypothesis import given
from hypothesis import strategies as st

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
    Role,
    RoomClosed,
    RoomEvent,
    TalkPressed,
    TalkReleased,
    WhisperStarted,
    WhisperStopped,
)
from projections.decider import RoomState, evolve, initial_state
from projections.views import (
    CUES_SHOWN,
    AgentView,
    CoachBadge,
    CustomerView,
    Person,
    SupervisorView,
    view_for,
)

CALL: list[RoomEvent] = [
    ParticipantJoined(subject="cust", role=Role.CUSTOMER, name="Carla"),
    ParticipantJoined(subject="agent", role=Role.AGENT, name="Ana"),
]
SUPERVISORS = {"sup-1": "Sam Whisperer", "sup-2": "Lee Listener"}


def state_after(events: list[RoomEvent]) -> RoomState:
    state = initial_state("room-1")
    for event in events:
        state = evolve(state, event)
    return state


def coach_event(subject: str) -> st.SearchStrategy[RoomEvent]:
    return st.sampled_from(
        [
            ParticipantJoined(
                subject=subject, role=Role.SUPERVISOR, name=SUPERVISORS[subject], can_whisper=True
            ),
            MonitorStarted(coach=subject),
            MonitorStopped(coach=subject),
            WhisperStarted(coach=subject),
            WhisperStopped(coach=subject),
            CoachModeSet(coach=subject, mode=CoachMode.OPEN_MIC),
            TalkPressed(coach=subject),
            TalkReleased(coach=subject),
            CoachMuted(coach=subject),
            CoachUnmuted(coach=subject),
            CueSent(cue_id=f"cue-{subject}", coach=subject, text="Offer the refund"),
            CueAcknowledged(cue_id=f"cue-{subject}"),
            ParticipantLeft(subject=subject),
        ]
    )


@given(st.lists(st.one_of(coach_event("sup-1"), coach_event("sup-2")), max_size=40))
def test_customer_view_is_identical_whatever_the_supervisors_do(
    supervisor_events: list[RoomEvent],
) -> None:
    before = view_for(state_after(CALL), "cust", Role.CUSTOMER, "Carla")

    after = view_for(state_after(CALL + supervisor_events), "cust", Role.CUSTOMER, "Carla")

    assert after == before
    wire = msgspec.json.encode(after).decode()
    for subject, name in SUPERVISORS.items():
        assert subject not in wire
        assert name not in wire
    assert "coach" not in wire
    assert "version" not in wire


def test_customer_view_shows_the_agent_and_nothing_else() -> None:
    view = view_for(state_after(CALL), "cust", Role.CUSTOMER, "Carla")

    assert view == CustomerView(
        room_id="room-1",
        you=Person(subject="cust", name="Carla"),
        agent=Person(subject="agent", name="Ana"),
        closed=False,
    )


def test_agent_view_badges_each_coach_and_marks_the_audible_one() -> None:
    events = [
        *CALL,
        ParticipantJoined(
            subject="sup-1", role=Role.SUPERVISOR, name="Sam", can_whisper=True, worker="w1"
        ),
        ParticipantJoined(subject="sup-2", role=Role.SUPERVISOR, name="Lee", can_whisper=True),
        WhisperStarted(coach="sup-1"),
        CoachModeSet(coach="sup-1", mode=CoachMode.OPEN_MIC),
        MonitorStarted(coach="sup-2"),
    ]

    view = view_for(state_after(events), "agent", Role.AGENT, "Ana")

    assert isinstance(view, AgentView)
    assert view.coaches == (
        CoachBadge(subject="sup-1", name="Sam", whispering=True, muted=False, audible=True),
        CoachBadge(subject="sup-2", name="Lee", whispering=False, muted=False, audible=False),
    )


def test_supervisor_view_shows_cues_with_their_acknowledgment() -> None:
    events = [
        *CALL,
        ParticipantJoined(subject="sup-1", role=Role.SUPERVISOR, name="Sam", can_whisper=True),
        CueSent(cue_id="c1", coach="sup-1", text="Slow down"),
        CueAcknowledged(cue_id="c1"),
    ]

    view = view_for(state_after(events), "sup-1", Role.SUPERVISOR, "Sam")

    assert [(c.text, c.coach_name, c.acknowledged) for c in view.cues] == [
        ("Slow down", "Sam", True)
    ]


def test_a_view_carries_the_newest_cues_only() -> None:
    cues = [CueSent(cue_id=f"c{n}", coach="sup-1", text="x" * 2000) for n in range(CUES_SHOWN + 5)]

    view = view_for(state_after([*CALL, *cues]), "agent", Role.AGENT, "Ana")

    assert isinstance(view, AgentView)
    assert [c.cue_id for c in view.cues] == [f"c{n}" for n in range(5, CUES_SHOWN + 5)]


def test_a_cue_keeps_its_coach_s_name_once_the_coach_has_left() -> None:
    events = [
        *CALL,
        ParticipantJoined(subject="sup-1", role=Role.SUPERVISOR, name="Sam", can_whisper=True),
        CueSent(cue_id="c1", coach="sup-1", text="Slow down"),
        ParticipantLeft(subject="sup-1"),
    ]

    view = view_for(state_after(events), "agent", Role.AGENT, "Ana")

    assert isinstance(view, AgentView)
    assert [(c.coach, c.coach_name) for c in view.cues] == [("sup-1", "Sam")]


def test_a_cue_of_a_coach_never_named_is_from_their_subject() -> None:
    view = view_for(
        state_after([*CALL, CueSent(cue_id="c1", coach="sup-9", text="Hi")]),
        "agent",
        Role.AGENT,
        "Ana",
    )

    assert isinstance(view, AgentView)
    assert [c.coach_name for c in view.cues] == ["sup-9"]


def test_a_closed_room_lists_no_coach_in_the_call() -> None:
    events = [
        *CALL,
        ParticipantJoined(subject="sup-1", role=Role.SUPERVISOR, name="Sam", can_whisper=True),
        WhisperStarted(coach="sup-1"),
        CueSent(cue_id="c1", coach="sup-1", text="Slow down"),
        RoomClosed(reason="call ended"),
    ]
    state = state_after(events)

    agent = view_for(state, "agent", Role.AGENT, "Ana")
    supervisor = view_for(state, "sup-1", Role.SUPERVISOR, "Sam")

    assert isinstance(agent, AgentView)
    assert isinstance(supervisor, SupervisorView)
    assert agent.closed
    assert supervisor.closed
    assert agent.coaches == ()
    assert supervisor.coaches == ()
    assert [c.coach_name for c in agent.cues] == ["Sam"]  # what was said stays, with its name


def test_a_supervisors_view_says_when_the_agent_muted_a_coach() -> None:
    whispering: list[RoomEvent] = [
        *CALL,
        ParticipantJoined(subject="sup-1", role=Role.SUPERVISOR, name="Sam", can_whisper=True),
        WhisperStarted(coach="sup-1"),
    ]

    def coach_seen_after(muted: CoachMuted) -> tuple[bool, bool]:
        view = view_for(state_after([*whispering, muted]), "sup-1", Role.SUPERVISOR, "Sam")
        assert isinstance(view, SupervisorView)
        [coach] = view.coaches
        return coach.muted, coach.muted_by_agent

    assert coach_seen_after(CoachMuted(coach="sup-1", by="agent")) == (True, True)
    assert coach_seen_after(CoachMuted(coach="sup-1")) == (True, False)


def test_a_coach_with_no_media_session_is_never_shown_as_heard() -> None:
    # Whispering over HTTP alone reaches nobody's ear: the desk must not say it does.
    events = [
        *CALL,
        ParticipantJoined(subject="sup-1", role=Role.SUPERVISOR, name="Sam", can_whisper=True),
        WhisperStarted(coach="sup-1"),
        CoachModeSet(coach="sup-1", mode=CoachMode.OPEN_MIC),
    ]

    view = view_for(state_after(events), "agent", Role.AGENT, "Ana")

    assert isinstance(view, AgentView)
    assert [(badge.whispering, badge.audible) for badge in view.coaches] == [(True, False)]
