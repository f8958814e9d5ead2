"""The room decider, read as: given these events, when this actor sends this command, then
these events (or this rejection). The routes tests read as: given these events, who hears whom.
"""

from __future__ import annotations

import datetime as dt
import re
import typing
from functools import reduce

import msgspec
import pytest

from events import room
from events.envelope import Envelope
from events.room import CoachMode, Role, RoomEvent, WhisperRecording
from projections import commands
from projections.commands import Actor, RoomCommand, SessionCommand
from projections.decider import (
    MAX_CUES,
    ROLES_ALLOWED,
    Coach,
    Rejection,
    RoomState,
    decide,
    evolve,
    fold,
    initial_state,
)
from projections.routes import AudioRoute, is_audible, routes

ROOM = "room-1"
CUSTOMER = Actor("cust-1", Role.CUSTOMER, "Carol", can_whisper=False)
AGENT = Actor("agent-1", Role.AGENT, "Alice", can_whisper=False)
COACH = Actor("sup-1", Role.SUPERVISOR, "Sam", can_whisper=True)
OBSERVER = Actor("sup-2", Role.SUPERVISOR, "Sid", can_whisper=False)
SECOND_COACH = Actor("sup-3", Role.SUPERVISOR, "Sue", can_whisper=True)
CUST, AG, SUP, SUP2, SUP3 = (a.subject for a in (CUSTOMER, AGENT, COACH, OBSERVER, SECOND_COACH))


def joined(actor: Actor, worker: str = "") -> room.ParticipantJoined:
    return room.ParticipantJoined(
        subject=actor.subject,
        role=actor.role,
        name=actor.name,
        can_whisper=actor.can_whisper,
        worker=worker,
    )


CALL: tuple[RoomEvent, ...] = (joined(CUSTOMER), joined(AGENT))
COACHED: tuple[RoomEvent, ...] = (*CALL, joined(COACH))
MONITORING: tuple[RoomEvent, ...] = (*COACHED, room.MonitorStarted(coach=SUP))
WHISPERING: tuple[RoomEvent, ...] = (*MONITORING, room.WhisperStarted(coach=SUP))
TALKING: tuple[RoomEvent, ...] = (*WHISPERING, room.TalkPressed(coach=SUP))
OPEN_MIC: tuple[RoomEvent, ...] = (
    *WHISPERING,
    room.CoachModeSet(coach=SUP, mode=CoachMode.OPEN_MIC),
)
CUED: tuple[RoomEvent, ...] = (*COACHED, room.CueSent(cue_id="c1", coach=SUP, text="slow down"))


class Decision:
    def __init__(self, outcome: list[RoomEvent] | Rejection) -> None:
        self.outcome = outcome

    def then(self, *events: RoomEvent) -> None:
        assert self.outcome == list(events)

    def rejected(self, match: str) -> None:
        assert isinstance(self.outcome, Rejection), f"accepted with {self.outcome}"
        assert re.search(match, self.outcome.reason), self.outcome.reason


class Given:
    def __init__(self, events: tuple[RoomEvent, ...]) -> None:
        self.state = reduce(evolve, events, initial_state(ROOM))

    def when(self, actor: Actor, command: RoomCommand | SessionCommand) -> Decision:
        return Decision(decide(self.state, command, actor))


def given(*events: RoomEvent) -> Given:
    return Given(events)


def routes_after(*events: RoomEvent) -> set[AudioRoute]:
    return set(routes(given(*events).state))


# --- commands on the wire --------------------------------------------------------------------


def test_room_command_decodes_by_its_command_tag() -> None:
    raw = b'{"command": "set_coach_mode", "mode": "open_mic"}'
    assert msgspec.json.decode(raw, type=RoomCommand) == commands.SetCoachMode(
        mode=CoachMode.OPEN_MIC
    )


def test_room_command_with_a_wrong_field_type_names_the_field() -> None:
    raw = b'{"command": "send_cue", "cue_id": "c1", "text": 5}'
    with pytest.raises(msgspec.ValidationError, match=re.escape("$.text")):
        msgspec.json.decode(raw, type=RoomCommand)


def test_room_command_with_an_unknown_field_is_rejected() -> None:
    with pytest.raises(msgspec.ValidationError, match="unknown field `actor`"):
        msgspec.json.decode(b'{"command": "join", "actor": "sup-1"}', type=RoomCommand)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"command": "send_cue", "cue_id": "", "text": "hi"}',
        b'{"command": "send_cue", "cue_id": "' + b"c" * 65 + b'", "text": "hi"}',
        b'{"command": "send_cue", "cue_id": "c1", "text": ""}',
        b'{"command": "send_cue", "cue_id": "c1", "text": "' + b"t" * 2001 + b'"}',
        b'{"command": "close_room", "reason": "' + b"r" * 201 + b'"}',
    ],
)
def test_room_command_out_of_bounds_is_rejected(raw: bytes) -> None:
    with pytest.raises(msgspec.ValidationError, match="length"):
        msgspec.json.decode(raw, type=RoomCommand)


def test_roles_allowed_names_every_command() -> None:
    assert set(ROLES_ALLOWED) == set(typing.get_args(RoomCommand))


# --- who may send what -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("actor", "command"),
    [
        (AGENT, commands.CloseRoom()),
        (COACH, commands.StopMonitor()),
        (CUSTOMER, commands.Leave()),
        (SECOND_COACH, commands.Join()),
    ],
)
def test_any_command_in_a_closed_room_is_rejected(actor: Actor, command: RoomCommand) -> None:
    given(*MONITORING, room.RoomClosed()).when(actor, command).rejected("room room-1 is closed")


def test_command_from_someone_not_in_the_room_is_rejected() -> None:
    given(*CALL).when(COACH, commands.StartMonitor()).rejected(
        "sup-1 cannot start_monitor: not in room"
    )


def test_command_with_a_token_role_other_than_the_joined_one_is_rejected() -> None:
    promoted = Actor(AG, Role.SUPERVISOR, "Alice", can_whisper=True)
    given(*CALL).when(promoted, commands.StartMonitor()).rejected(
        "joined as agent, but the token says"
    )


@pytest.mark.parametrize(
    "command",
    [
        commands.StartMonitor(),
        commands.StopWhisper(),
        commands.MuteCoach(coach=SUP),
        commands.SendCue(cue_id="c", text="hi"),
        commands.AcknowledgeCue(cue_id="c1"),
        commands.CloseRoom(),
    ],
)
def test_customer_commands_other_than_join_and_leave_are_rejected(command: RoomCommand) -> None:
    given(*CUED).when(CUSTOMER, command).rejected("as customer: only")


# --- join and leave --------------------------------------------------------------------------


def test_join_emits_participant_joined_from_the_token() -> None:
    given(*CALL).when(COACH, commands.Join()).then(
        room.ParticipantJoined(subject=SUP, role=Role.SUPERVISOR, name="Sam", can_whisper=True)
    )


def test_join_carries_the_queue_of_the_call_and_the_first_one_names_the_room() -> None:
    agent = Actor("agent-1", Role.AGENT, "Alice", can_whisper=False, queue="sales")
    given().when(agent, commands.Join()).then(
        room.ParticipantJoined(subject=AG, role=Role.AGENT, name="Alice", queue="sales")
    )

    joins = [
        room.ParticipantJoined(subject=AG, role=Role.AGENT, name="Alice", queue="sales"),
        room.ParticipantJoined(subject=CUST, role=Role.CUSTOMER, name="Carol", queue="support"),
    ]

    assert given(*joins).state.queue == "sales"


def test_join_when_already_joined_changes_nothing() -> None:
    given(*COACHED).when(COACH, commands.Join()).then()


@pytest.mark.parametrize(
    ("newcomer", "holder"),
    [
        (Actor("agent-2", Role.AGENT, "Bob", False), AG),
        (Actor("cust-2", Role.CUSTOMER, "Dan", False), CUST),
    ],
)
def test_join_as_a_second_agent_or_customer_is_rejected(newcomer: Actor, holder: str) -> None:
    given(*CALL).when(newcomer, commands.Join()).rejected(
        f"{holder} is already the {newcomer.role}"
    )


def test_join_as_another_supervisor_is_accepted() -> None:
    given(*COACHED).when(SECOND_COACH, commands.Join()).then(joined(SECOND_COACH))


def test_leave_emits_participant_left() -> None:
    given(*CALL).when(CUSTOMER, commands.Leave()).then(room.ParticipantLeft(subject=CUST))


def test_leave_while_monitoring_stops_the_monitor_first() -> None:
    given(*MONITORING).when(COACH, commands.Leave()).then(
        room.MonitorStopped(coach=SUP), room.ParticipantLeft(subject=SUP)
    )


def test_leave_while_talking_ends_talk_whisper_and_monitor_first() -> None:
    given(*TALKING).when(COACH, commands.Leave()).then(
        room.TalkReleased(coach=SUP),
        room.WhisperStopped(coach=SUP),
        room.MonitorStopped(coach=SUP),
        room.ParticipantLeft(subject=SUP),
    )


# --- monitor and whisper ---------------------------------------------------------------------


def test_start_monitor_emits_monitor_started() -> None:
    given(*COACHED).when(COACH, commands.StartMonitor()).then(room.MonitorStarted(coach=SUP))


def test_start_monitor_without_whisper_claim_is_accepted() -> None:
    given(*CALL, joined(OBSERVER)).when(OBSERVER, commands.StartMonitor()).then(
        room.MonitorStarted(coach=SUP2)
    )


def test_start_monitor_when_monitoring_changes_nothing() -> None:
    given(*MONITORING).when(COACH, commands.StartMonitor()).then()


def test_start_monitor_by_the_agent_is_rejected() -> None:
    given(*CALL).when(AGENT, commands.StartMonitor()).rejected(
        "agent-1 cannot start_monitor as agent: only supervisor"
    )


def test_stop_monitor_emits_monitor_stopped() -> None:
    given(*MONITORING).when(COACH, commands.StopMonitor()).then(room.MonitorStopped(coach=SUP))


def test_stop_monitor_while_whispering_stops_the_whisper_first() -> None:
    given(*WHISPERING).when(COACH, commands.StopMonitor()).then(
        room.WhisperStopped(coach=SUP), room.MonitorStopped(coach=SUP)
    )


def test_stop_monitor_when_not_monitoring_changes_nothing() -> None:
    given(*COACHED).when(COACH, commands.StopMonitor()).then()


def test_start_whisper_while_monitoring_emits_whisper_started() -> None:
    given(*MONITORING).when(COACH, commands.StartWhisper()).then(room.WhisperStarted(coach=SUP))


def test_start_whisper_from_nothing_starts_the_monitor_too() -> None:
    given(*COACHED).when(COACH, commands.StartWhisper()).then(
        room.MonitorStarted(coach=SUP), room.WhisperStarted(coach=SUP)
    )


def test_start_whisper_without_whisper_claim_is_rejected() -> None:
    given(*CALL, joined(OBSERVER), room.MonitorStarted(coach=SUP2)).when(
        OBSERVER, commands.StartWhisper()
    ).rejected("sup-2 cannot start_whisper: the token has no whisper claim")


def test_start_whisper_by_the_agent_is_rejected() -> None:
    given(*CALL).when(AGENT, commands.StartWhisper()).rejected("as agent: only supervisor")


def test_start_whisper_when_whispering_changes_nothing() -> None:
    given(*WHISPERING).when(COACH, commands.StartWhisper()).then()


def test_stop_whisper_emits_whisper_stopped_and_keeps_monitoring() -> None:
    given(*WHISPERING).when(COACH, commands.StopWhisper()).then(room.WhisperStopped(coach=SUP))


def test_stop_whisper_while_talking_releases_talk_first() -> None:
    given(*TALKING).when(COACH, commands.StopWhisper()).then(
        room.TalkReleased(coach=SUP), room.WhisperStopped(coach=SUP)
    )


def test_stop_whisper_when_not_whispering_changes_nothing() -> None:
    given(*MONITORING).when(COACH, commands.StopWhisper()).then()


# --- coach mode and the talk button ----------------------------------------------------------


def test_set_coach_mode_emits_coach_mode_set() -> None:
    given(*WHISPERING).when(COACH, commands.SetCoachMode(mode=CoachMode.OPEN_MIC)).then(
        room.CoachModeSet(coach=SUP, mode=CoachMode.OPEN_MIC)
    )


def test_set_coach_mode_to_open_mic_while_talking_releases_talk_first() -> None:
    given(*TALKING).when(COACH, commands.SetCoachMode(mode=CoachMode.OPEN_MIC)).then(
        room.TalkReleased(coach=SUP), room.CoachModeSet(coach=SUP, mode=CoachMode.OPEN_MIC)
    )


def test_set_coach_mode_to_the_current_mode_changes_nothing() -> None:
    given(*OPEN_MIC).when(COACH, commands.SetCoachMode(mode=CoachMode.OPEN_MIC)).then()


def test_set_coach_mode_without_whisper_claim_is_rejected() -> None:
    given(*CALL, joined(OBSERVER)).when(
        OBSERVER, commands.SetCoachMode(mode=CoachMode.OPEN_MIC)
    ).rejected("sup-2 cannot set_coach_mode: the token has no whisper claim")


def test_press_talk_while_whispering_emits_talk_pressed() -> None:
    given(*WHISPERING).when(COACH, commands.PressTalk()).then(room.TalkPressed(coach=SUP))


def test_press_talk_while_not_whispering_is_rejected() -> None:
    given(*MONITORING).when(COACH, commands.PressTalk()).rejected(
        "sup-1 cannot talk while not whispering"
    )


def test_press_talk_in_open_mic_mode_is_rejected() -> None:
    given(*OPEN_MIC).when(COACH, commands.PressTalk()).rejected("open_mic")


def test_press_talk_when_pressed_changes_nothing() -> None:
    given(*TALKING).when(COACH, commands.PressTalk()).then()


def test_release_talk_emits_talk_released() -> None:
    given(*TALKING).when(COACH, commands.ReleaseTalk()).then(room.TalkReleased(coach=SUP))


def test_release_talk_when_not_pressed_changes_nothing() -> None:
    given(*WHISPERING).when(COACH, commands.ReleaseTalk()).then()


# --- mute ------------------------------------------------------------------------------------


def test_mute_coach_by_the_coach_themself_emits_coach_muted() -> None:
    given(*WHISPERING).when(COACH, commands.MuteCoach()).then(room.CoachMuted(coach=SUP))


def test_mute_coach_by_the_agent_emits_coach_muted_by_the_agent() -> None:
    given(*WHISPERING).when(AGENT, commands.MuteCoach(coach=SUP)).then(
        room.CoachMuted(coach=SUP, by=AG)
    )


def test_mute_coach_by_another_supervisor_is_rejected() -> None:
    given(*COACHED, joined(SECOND_COACH)).when(
        SECOND_COACH, commands.MuteCoach(coach=SUP)
    ).rejected("sup-3 cannot mute sup-1: only the coach or the agent may")


@pytest.mark.parametrize("target", [AG, "nobody"])
def test_mute_coach_of_someone_not_a_supervisor_in_the_room_is_rejected(target: str) -> None:
    given(*COACHED).when(AGENT, commands.MuteCoach(coach=target)).rejected(
        f"cannot mute {target}: not a supervisor in the room"
    )


def test_mute_coach_when_muted_changes_nothing() -> None:
    given(*COACHED, room.CoachMuted(coach=SUP)).when(AGENT, commands.MuteCoach(coach=SUP)).then()


def test_unmute_coach_by_the_coach_themself_emits_coach_unmuted() -> None:
    given(*COACHED, room.CoachMuted(coach=SUP)).when(COACH, commands.UnmuteCoach()).then(
        room.CoachUnmuted(coach=SUP)
    )


def test_unmute_coach_by_the_agent_is_rejected() -> None:
    given(*COACHED, room.CoachMuted(coach=SUP)).when(
        AGENT, commands.UnmuteCoach(coach=SUP)
    ).rejected("agent-1 cannot unmute_coach as agent: only supervisor")


def test_unmute_coach_by_another_supervisor_is_rejected() -> None:
    given(*COACHED, joined(SECOND_COACH), room.CoachMuted(coach=SUP)).when(
        SECOND_COACH, commands.UnmuteCoach(coach=SUP)
    ).rejected("sup-3 cannot unmute sup-1: only the coach may")


def test_unmute_coach_when_not_muted_changes_nothing() -> None:
    given(*COACHED).when(COACH, commands.UnmuteCoach()).then()


# --- cues ------------------------------------------------------------------------------------


def test_send_cue_emits_cue_sent() -> None:
    given(*COACHED).when(COACH, commands.SendCue(cue_id="c1", text="slow down")).then(
        room.CueSent(cue_id="c1", coach=SUP, text="slow down")
    )


def test_send_cue_without_an_agent_in_the_room_is_rejected() -> None:
    given(joined(CUSTOMER), joined(COACH)).when(
        COACH, commands.SendCue(cue_id="c1", text="hi")
    ).rejected("no agent in the room")


def test_send_cue_without_whisper_claim_is_rejected() -> None:
    given(*CALL, joined(OBSERVER)).when(
        OBSERVER, commands.SendCue(cue_id="c1", text="hi")
    ).rejected("sup-2 cannot send_cue: the token has no whisper claim")


def test_send_cue_with_blank_text_is_rejected() -> None:
    given(*COACHED).when(COACH, commands.SendCue(cue_id="c1", text=" \n\t")).rejected(
        "the text is blank"
    )


def test_send_cue_retried_with_the_same_text_changes_nothing() -> None:
    given(*CUED).when(COACH, commands.SendCue(cue_id="c1", text="slow down")).then()


@pytest.mark.parametrize(("sender", "text"), [(COACH, "speed up"), (SECOND_COACH, "slow down")])
def test_send_cue_reusing_an_id_otherwise_is_rejected(sender: Actor, text: str) -> None:
    given(*CUED, joined(SECOND_COACH)).when(
        sender, commands.SendCue(cue_id="c1", text=text)
    ).rejected("sup-1 already sent one with that id")


def test_send_cue_once_the_room_keeps_max_cues_is_rejected_but_a_retry_is_not() -> None:
    sent = [room.CueSent(cue_id=f"c{n}", coach=SUP, text="slow down") for n in range(MAX_CUES)]
    given(*COACHED, *sent).when(COACH, commands.SendCue(cue_id="one-more", text="hi")).rejected(
        f"sup-1 cannot send cue one-more: the room has {MAX_CUES}"
    )
    given(*COACHED, *sent).when(COACH, commands.SendCue(cue_id="c0", text="slow down")).then()


def test_acknowledge_cue_emits_cue_acknowledged() -> None:
    given(*CUED).when(AGENT, commands.AcknowledgeCue(cue_id="c1")).then(
        room.CueAcknowledged(cue_id="c1")
    )


def test_acknowledge_cue_by_a_supervisor_is_rejected() -> None:
    given(*CUED).when(COACH, commands.AcknowledgeCue(cue_id="c1")).rejected(
        "sup-1 cannot acknowledge_cue as supervisor: only agent"
    )


def test_acknowledge_cue_unknown_is_rejected() -> None:
    given(*CUED).when(AGENT, commands.AcknowledgeCue(cue_id="c9")).rejected("no such cue")


def test_acknowledge_cue_twice_changes_nothing() -> None:
    given(*CUED, room.CueAcknowledged(cue_id="c1")).when(
        AGENT, commands.AcknowledgeCue(cue_id="c1")
    ).then()


# --- recording and closing -------------------------------------------------------------------


def test_set_recording_policy_emits_recording_policy_set() -> None:
    policy = WhisperRecording.SEPARATE_TRACK
    given(*COACHED).when(COACH, commands.SetRecordingPolicy(whisper=policy)).then(
        room.RecordingPolicySet(whisper=policy)
    )


def test_set_recording_policy_to_the_current_policy_changes_nothing() -> None:
    given(*COACHED).when(
        COACH, commands.SetRecordingPolicy(whisper=WhisperRecording.EXCLUDED)
    ).then()


def test_set_recording_policy_by_the_agent_is_rejected() -> None:
    policy = WhisperRecording.SEPARATE_TRACK
    given(*CALL).when(AGENT, commands.SetRecordingPolicy(whisper=policy)).rejected(
        "as agent: only supervisor"
    )


@pytest.mark.parametrize("closer", [AGENT, COACH])
def test_close_room_by_agent_or_supervisor_emits_room_closed(closer: Actor) -> None:
    given(*COACHED).when(closer, commands.CloseRoom(reason="call ended")).then(
        room.RoomClosed(reason="call ended")
    )


def test_close_room_by_the_customer_is_rejected() -> None:
    given(*CALL).when(CUSTOMER, commands.CloseRoom()).rejected(
        "cust-1 cannot close_room as customer: only agent or supervisor"
    )


# --- evolve and fold -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "event",
    [
        room.ParticipantLeft(subject="nobody"),
        room.MonitorStarted(coach=AG),
        room.WhisperStarted(coach="nobody"),
        room.TalkPressed(coach="nobody"),
        room.CoachMuted(coach=CUST),
        room.CueAcknowledged(cue_id="c9"),
    ],
)
def test_evolve_with_an_event_about_someone_unknown_changes_nothing(event: RoomEvent) -> None:
    state = given(*CUED).state
    assert evolve(state, event) == state


def test_evolve_participant_left_drops_the_coach() -> None:
    state = given(*TALKING, room.ParticipantLeft(subject=SUP)).state
    assert SUP not in state.participants
    assert SUP not in state.coaches


def test_evolve_rejoin_after_leaving_starts_a_fresh_coach() -> None:
    state = given(
        *TALKING, room.CoachMuted(coach=SUP), room.ParticipantLeft(subject=SUP), joined(COACH)
    ).state
    assert state.coaches[SUP] == Coach()


def test_evolve_room_closed_stops_every_coach_and_keeps_their_settings() -> None:
    state = given(
        *OPEN_MIC, joined(SECOND_COACH), room.MonitorStarted(coach=SUP3), room.RoomClosed()
    ).state
    assert state.closed
    assert state.coaches == {SUP: Coach(mode=CoachMode.OPEN_MIC), SUP3: Coach()}


@pytest.mark.parametrize(
    "event",
    [room.WhisperStopped(coach=SUP), room.CoachModeSet(coach=SUP, mode=CoachMode.PUSH_TO_TALK)],
)
def test_evolve_resets_talking(event: RoomEvent) -> None:
    assert not given(*TALKING, event).state.coaches[SUP].talking


def test_evolve_cue_sent_keeps_the_coach_s_name_with_the_cue() -> None:
    state = given(*CUED, room.ParticipantLeft(subject=SUP)).state
    assert state.cues["c1"].coach_name == "Sam"


def test_evolve_cue_sent_by_someone_unknown_has_no_name() -> None:
    state = given(*CALL, room.CueSent(cue_id="c1", coach="nobody", text="hi")).state
    assert state.cues["c1"].coach_name == ""


def test_fold_applies_every_envelope_at_its_version() -> None:
    time = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    envelopes = [
        Envelope(event_id=f"e{n}", room_id=ROOM, version=n, time=time, actor=SUP, event=event)
        for n, event in enumerate(TALKING, start=1)
    ]
    folded = fold(initial_state(ROOM), envelopes)
    assert folded == msgspec.structs.replace(given(*TALKING).state, version=len(TALKING))


def test_room_state_round_trips_through_msgpack() -> None:
    state = given(
        *TALKING,
        room.CueSent(cue_id="c1", coach=SUP, text="slow down"),
        room.RecordingPolicySet(whisper=WhisperRecording.SEPARATE_TRACK),
    ).state
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(state), type=RoomState) == state


# --- routes ----------------------------------------------------------------------------------

CALL_ROUTES = {AudioRoute(AG, CUST), AudioRoute(CUST, AG)}
MONITOR_ROUTES = {AudioRoute(CUST, SUP), AudioRoute(AG, SUP)}


def test_routes_of_a_call_connect_customer_and_agent() -> None:
    assert routes_after(*COACHED) == CALL_ROUTES


def test_routes_while_monitoring_let_the_coach_hear_both() -> None:
    assert routes_after(*MONITORING) == CALL_ROUTES | MONITOR_ROUTES


def test_routes_while_whispering_in_push_to_talk_released_carry_no_coach() -> None:
    assert routes_after(*WHISPERING) == CALL_ROUTES | MONITOR_ROUTES


def test_routes_while_talk_is_pressed_carry_the_coach_to_the_agent_only() -> None:
    assert routes_after(*TALKING) == CALL_ROUTES | MONITOR_ROUTES | {AudioRoute(SUP, AG)}


def test_routes_after_talk_is_released_carry_no_coach() -> None:
    assert routes_after(*TALKING, room.TalkReleased(coach=SUP)) == CALL_ROUTES | MONITOR_ROUTES


def test_routes_in_open_mic_carry_the_coach_to_the_agent_only() -> None:
    assert routes_after(*OPEN_MIC) == CALL_ROUTES | MONITOR_ROUTES | {AudioRoute(SUP, AG)}


def test_routes_of_a_muted_coach_carry_nothing_from_them() -> None:
    assert routes_after(*OPEN_MIC, room.CoachMuted(coach=SUP)) == CALL_ROUTES | MONITOR_ROUTES


def test_routes_with_two_coaches_carry_only_the_audible_one() -> None:
    second = (
        joined(SECOND_COACH),
        room.MonitorStarted(coach=SUP3),
        room.WhisperStarted(coach=SUP3),
    )
    assert routes_after(*TALKING, *second) == CALL_ROUTES | MONITOR_ROUTES | {
        AudioRoute(SUP, AG),
        AudioRoute(CUST, SUP3),
        AudioRoute(AG, SUP3),
    }


def test_routes_after_the_coach_leaves_are_the_call_alone() -> None:
    assert routes_after(*TALKING, room.ParticipantLeft(subject=SUP)) == CALL_ROUTES


def test_routes_of_a_closed_room_are_empty() -> None:
    assert routes_after(*TALKING, room.RoomClosed()) == set()


@pytest.mark.parametrize(
    ("coach", "audible"),
    [
        (Coach(), False),
        (Coach(monitoring=True, whispering=True), False),
        (Coach(monitoring=True, whispering=True, talking=True), True),
        (Coach(monitoring=True, whispering=True, mode=CoachMode.OPEN_MIC), True),
        (Coach(monitoring=True, whispering=True, mode=CoachMode.OPEN_MIC, muted=True), False),
        (Coach(monitoring=True, talking=True), False),
    ],
)
def test_is_audible(coach: Coach, audible: bool) -> None:
    assert is_audible(coach) is audible


# --- sessions: presence follows liveness ------------------------------------------------------

LIVE_CALL: tuple[RoomEvent, ...] = (joined(CUSTOMER, "w1"), joined(AGENT, "w1"))
LIVE_TALKING: tuple[RoomEvent, ...] = (
    *LIVE_CALL,
    joined(COACH, "w1"),
    room.MonitorStarted(coach=SUP),
    room.WhisperStarted(coach=SUP),
    room.TalkPressed(coach=SUP),
)


def test_a_session_joins_its_participant_through_its_worker() -> None:
    given(*CALL).when(COACH, commands.AttachSession(worker="w1")).then(joined(COACH, "w1"))


def test_a_session_on_the_worker_already_holding_the_participant_changes_nothing() -> None:
    given(*LIVE_TALKING).when(COACH, commands.AttachSession(worker="w1")).then()


def test_a_session_after_an_http_join_moves_the_presence_onto_its_worker() -> None:
    given(*MONITORING).when(COACH, commands.AttachSession(worker="w1")).then(joined(COACH, "w1"))


def test_a_whisper_asked_before_any_session_is_stopped_when_one_attaches() -> None:
    # Heard only through a live session and a whisper asked for during it.
    given(*TALKING).when(COACH, commands.AttachSession(worker="w1")).then(
        room.TalkReleased(coach=SUP), room.WhisperStopped(coach=SUP), joined(COACH, "w1")
    )


def test_a_coach_back_through_another_worker_is_silent_until_they_ask_again() -> None:
    # Fail closed: the sessions behind their whisper were lost with the old worker.
    back = (room.TalkReleased(coach=SUP), room.WhisperStopped(coach=SUP), joined(COACH, "w2"))

    given(*LIVE_TALKING).when(COACH, commands.AttachSession(worker="w2")).then(*back)
    after = routes_after(*LIVE_TALKING, *back)
    assert AudioRoute(SUP, AG) not in after
    assert {AudioRoute(CUST, SUP), AudioRoute(AG, SUP)} <= after  # still monitoring, silently


def test_a_session_of_a_second_agent_is_rejected() -> None:
    intruder = Actor("agent-2", Role.AGENT, "Bo", can_whisper=False)
    given(*LIVE_CALL).when(intruder, commands.AttachSession(worker="w1")).rejected(
        "agent-1 is already the agent"
    )


def test_a_lost_worker_ends_the_presence_it_held_with_everything_it_did() -> None:
    lost = commands.EndPresence(subject=SUP, reason=room.LeaveReason.WORKER_LOST, worker="w1")
    given(*LIVE_TALKING).when(AGENT, lost).then(
        room.TalkReleased(coach=SUP),
        room.WhisperStopped(coach=SUP),
        room.MonitorStopped(coach=SUP),
        room.ParticipantLeft(subject=SUP, reason=room.LeaveReason.WORKER_LOST),
    )


def test_a_lost_worker_leaves_a_participant_who_moved_to_another_one() -> None:
    moved = (*LIVE_CALL, joined(AGENT, "w2"))
    lost = commands.EndPresence(subject=AG, reason=room.LeaveReason.WORKER_LOST, worker="w1")
    given(*moved).when(AGENT, lost).then()


def test_an_http_join_with_no_session_ends_after_its_grace() -> None:
    expired = commands.EndPresence(subject=SUP, reason=room.LeaveReason.NO_SESSION, worker="")
    given(*COACHED).when(AGENT, expired).then(
        room.ParticipantLeft(subject=SUP, reason=room.LeaveReason.NO_SESSION)
    )
    given(*COACHED, joined(COACH, "w1")).when(AGENT, expired).then()


def test_ending_a_presence_in_a_closed_room_changes_nothing() -> None:
    lost = commands.EndPresence(subject=AG, reason=room.LeaveReason.WORKER_LOST, worker="w1")
    given(*LIVE_CALL, room.RoomClosed()).when(AGENT, lost).then()


def test_join_under_another_role_than_the_joined_one_is_rejected() -> None:
    promoted = Actor(AG, Role.SUPERVISOR, "Alice", can_whisper=True)
    given(*CALL).when(promoted, commands.Join()).rejected("joined as agent, but the token says")
    given(*LIVE_CALL).when(promoted, commands.AttachSession(worker="w1")).rejected(
        "joined as agent, but the token says supervisor"
    )
