from __future__ import annotations

import datetime as dt
from typing import Any, get_args

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from events.envelope import Envelope
from events.room import (
    CoachMuted,
    CueAcknowledged,
    CueSent,
    LeaveReason,
    MonitorStarted,
    ParticipantJoined,
    ParticipantLeft,
    RecordingPolicySet,
    Role,
    RoomClosed,
    RoomEvent,
    WhisperRecording,
    WhisperStarted,
    WhisperStopped,
)
from projections.audit import (
    GENESIS_HASH,
    Attendance,
    AuditRecord,
    Closure,
    Interval,
    Mark,
    PolicyChange,
    Timeline,
    TimelineCue,
    chain,
    next_record,
    replay,
    timeline_of,
    verify,
    verify_against_stream,
)
from projections.decider import fold, initial_state

ROOM = "room-1"
DAY = "2024-05-01"


def at_clock(clock: str) -> dt.datetime:
    return dt.datetime.fromisoformat(f"{DAY}T{clock}+00:00")


def stream(*entries: tuple[str, str, RoomEvent]) -> list[Envelope]:
    """Envelopes of ROOM at versions 1, 2, 3...; each entry is (clock, actor, event)."""
    return [
        Envelope(
            event_id=f"evt-{version}",
            room_id=ROOM,
            version=version,
            time=at_clock(clock),
            actor=actor,
            event=event,
        )
        for version, (clock, actor, event) in enumerate(entries, start=1)
    ]


def mark(version: int, clock: str, actor: str) -> Mark:
    return Mark(time=at_clock(clock), version=version, seq=version, actor=actor)


CALL = stream(
    ("09:00:00", "cust-1", ParticipantJoined(subject="cust-1", role=Role.CUSTOMER, name="Carla")),
    ("09:00:05", "agent-1", ParticipantJoined(subject="agent-1", role=Role.AGENT, name="Ahmed")),
    (
        "09:01:00",
        "sup-1",
        ParticipantJoined(subject="sup-1", role=Role.SUPERVISOR, name="Sofia", can_whisper=True),
    ),
    ("09:01:10", "sup-1", MonitorStarted(coach="sup-1")),
    ("09:02:00", "sup-1", WhisperStarted(coach="sup-1")),
    ("09:02:30", "sup-1", CueSent(cue_id="cue-1", coach="sup-1", text="Offer the discount")),
    ("09:02:40", "agent-1", CueAcknowledged(cue_id="cue-1")),
    ("09:03:00", "sup-1", WhisperStopped(coach="sup-1")),
    ("09:04:00", "agent-1", CoachMuted(coach="sup-1")),
    ("09:05:00", "sup-1", RecordingPolicySet(whisper=WhisperRecording.SEPARATE_TRACK)),
    ("09:06:00", "sup-1", ParticipantLeft(subject="sup-1")),
    ("09:07:00", "agent-1", RoomClosed(reason="call ended")),
)


# --- the timeline ----------------------------------------------------------------------------


def test_timeline_of_a_coached_call_shows_who_did_what_when() -> None:
    timeline = timeline_of(chain(CALL))

    closed = mark(12, "09:07:00", "agent-1")
    sofia_left = mark(11, "09:06:00", "sup-1")
    assert timeline == Timeline(
        room_id=ROOM,
        participants=(
            Attendance(
                subject="cust-1",
                role=Role.CUSTOMER,
                name="Carla",
                started=mark(1, "09:00:00", "cust-1"),
                ended=closed,
            ),
            Attendance(
                subject="agent-1",
                role=Role.AGENT,
                name="Ahmed",
                started=mark(2, "09:00:05", "agent-1"),
                ended=closed,
            ),
            Attendance(
                subject="sup-1",
                role=Role.SUPERVISOR,
                name="Sofia",
                started=mark(3, "09:01:00", "sup-1"),
                ended=sofia_left,
                left_because=LeaveReason.ASKED,
            ),
        ),
        monitoring=(
            Interval(subject="sup-1", started=mark(4, "09:01:10", "sup-1"), ended=sofia_left),
        ),
        whispers=(
            Interval(
                subject="sup-1",
                started=mark(5, "09:02:00", "sup-1"),
                ended=mark(8, "09:03:00", "sup-1"),
            ),
        ),
        mutes=(
            Interval(subject="sup-1", started=mark(9, "09:04:00", "agent-1"), ended=sofia_left),
        ),
        cues=(
            TimelineCue(
                cue_id="cue-1",
                coach="sup-1",
                text="Offer the discount",
                sent=mark(6, "09:02:30", "sup-1"),
                acknowledged=mark(7, "09:02:40", "agent-1"),
            ),
        ),
        recording_policy=(
            PolicyChange(
                whisper=WhisperRecording.SEPARATE_TRACK, set=mark(10, "09:05:00", "sup-1")
            ),
        ),
        closure=Closure(reason="call ended", closed=closed),
    )


def test_timeline_of_a_call_closed_mid_whisper_ends_the_whisper_at_the_close() -> None:
    call = stream(
        ("09:00:00", "sup-1", ParticipantJoined(subject="sup-1", role=Role.SUPERVISOR, name="S")),
        ("09:00:10", "sup-1", WhisperStarted(coach="sup-1")),
        ("09:00:20", "sup-1", WhisperStarted(coach="sup-1")),
        ("09:01:00", "agent-1", RoomClosed()),
    )

    (whisper,) = timeline_of(chain(call)).whispers

    assert whisper.started == mark(2, "09:00:10", "sup-1")
    assert whisper.ended == mark(4, "09:01:00", "agent-1")


def test_timeline_of_no_records_is_refused() -> None:
    with pytest.raises(ValueError, match="no records"):
        timeline_of([])


# --- the chain -------------------------------------------------------------------------------


def test_chain_links_each_record_to_the_one_before_from_genesis() -> None:
    records = chain(CALL[:3])

    assert [r.seq for r in records] == [1, 2, 3]
    assert [r.prev_hash for r in records] == [GENESIS_HASH, records[0].hash, records[1].hash]
    assert records[2].event == CALL[2].event


def test_records_read_back_from_json_still_verify() -> None:
    raw = msgspec.json.encode(chain(CALL))

    assert verify(msgspec.json.decode(raw, type=list[AuditRecord])).ok


def test_next_record_refuses_an_envelope_of_another_room() -> None:
    first = next_record(None, CALL[0])

    with pytest.raises(ValueError, match=r"evt-2.*room 'room-2' is not 'room-1'"):
        next_record(first, replace(CALL[1], room_id="room-2"))


def test_next_record_refuses_an_envelope_not_after_the_previous() -> None:
    second = chain(CALL[:2])[1]

    with pytest.raises(ValueError, match="record 3: version 2 is not after 2"):
        next_record(second, CALL[1])


def test_verify_of_an_empty_log_is_ok() -> None:
    assert verify([]) == verify([], expected_head=GENESIS_HASH)
    assert verify([]).ok


def test_verify_with_the_head_catches_a_dropped_last_record() -> None:
    records = chain(CALL)

    result = verify(records[:-1], expected_head=records[-1].hash)

    assert (result.ok, result.checked, result.broken_at) == (False, 11, 12)
    assert result.reason.startswith("record 12: missing")
    assert verify(records, expected_head=records[-1].hash).ok


def test_verify_against_stream_passes_the_chain_of_the_stream() -> None:
    assert verify_against_stream(chain(CALL), CALL).ok


def test_verify_against_stream_fails_at_a_record_the_stream_contradicts() -> None:
    # Chain and stream each hold up alone: a consistent chain of other events is still caught.
    rewritten = [*CALL[:4], replace(CALL[4], event=WhisperStopped(coach="sup-1")), *CALL[5:]]

    result = verify_against_stream(chain(rewritten), CALL)

    assert verify(chain(rewritten)).ok
    assert (result.ok, result.checked, result.broken_at) == (False, 4, 5)
    assert result.reason == "record 5: differs from version 5 of the room's stream"


# --- properties over random streams ----------------------------------------------------------

PEOPLE = st.sampled_from(["cust-1", "agent-1", "sup-1", "sup-2"])
# Subjects and cues from a few names, so that random events meet each other.
_NAMED = {"subject": PEOPLE, "coach": PEOPLE, "cue_id": st.sampled_from(["cue-1", "cue-2"])}
EVENTS: st.SearchStrategy[RoomEvent] = st.one_of(
    *(
        st.builds(kind, **{k: v for k, v in _NAMED.items() if k in kind.__struct_fields__})
        for kind in get_args(RoomEvent)
    )
)
START = dt.datetime(2024, 5, 1, 9, tzinfo=dt.UTC)


@st.composite
def streams(draw: st.DrawFn, min_size: int = 0) -> list[Envelope]:
    """A room's envelopes at versions 1, 2, 3..., each 1-90 seconds after the one before."""
    events = draw(st.lists(EVENTS, min_size=min_size, max_size=12))
    gaps = draw(st.lists(st.integers(1, 90), min_size=len(events), max_size=len(events)))
    time = START
    envelopes = []
    for version, (event, gap) in enumerate(zip(events, gaps, strict=True), start=1):
        time += dt.timedelta(seconds=gap)
        actor = draw(PEOPLE)
        envelopes.append(
            Envelope(
                event_id=f"evt-{version}",
                room_id=ROOM,
                version=version,
                time=time,
                actor=actor,
                event=event,
            )
        )
    return envelopes


def other_value(data: st.DataObject, value: Any) -> Any:
    """A value of the same kind as ``value`` but not equal to it."""
    match value:
        case int():
            return data.draw(st.integers(-2, 10_000).filter(lambda v: v != value))
        case str():
            return data.draw(st.text(max_size=70).filter(lambda v: v != value))
        case dt.datetime():
            return value + dt.timedelta(microseconds=data.draw(st.integers(1, 10**9)))
        case _:
            return data.draw(EVENTS.filter(lambda v: v != value))


quick = settings(max_examples=150, derandomize=True, database=None, deadline=None)


@quick
@given(streams())
def test_verify_passes_an_untouched_chain(envelopes: list[Envelope]) -> None:
    result = verify(chain(envelopes))

    assert (result.ok, result.checked, result.broken_at) == (True, len(envelopes), None)


@quick
@given(streams(min_size=1), st.data())
def test_verify_fails_at_a_record_with_any_field_changed(
    envelopes: list[Envelope], data: st.DataObject
) -> None:
    records = chain(envelopes)
    index = data.draw(st.integers(0, len(records) - 1), label="record")
    field = data.draw(st.sampled_from(AuditRecord.__struct_fields__), label="field")
    altered = replace(records[index], **{field: other_value(data, getattr(records[index], field))})

    result = verify([*records[:index], altered, *records[index + 1 :]])

    assert (result.ok, result.broken_at, result.checked) == (False, index + 1, index)
    assert result.reason.startswith(f"record {index + 1}:")


@quick
@given(streams(min_size=2), st.data())
def test_verify_fails_at_the_first_of_two_swapped_records(
    envelopes: list[Envelope], data: st.DataObject
) -> None:
    records = chain(envelopes)
    first = data.draw(st.integers(0, len(records) - 2), label="first")
    second = data.draw(st.integers(first + 1, len(records) - 1), label="second")
    records[first], records[second] = records[second], records[first]

    result = verify(records)

    assert (result.ok, result.broken_at) == (False, first + 1)
    assert result.reason.startswith(f"record {first + 1}:")


@quick
@given(streams(min_size=1), st.data())
def test_verify_fails_where_a_record_was_dropped(
    envelopes: list[Envelope], data: st.DataObject
) -> None:
    records = chain(envelopes)
    index = data.draw(st.integers(0, len(records) - 1), label="dropped")

    result = verify([*records[:index], *records[index + 1 :]], expected_head=records[-1].hash)

    assert (result.ok, result.broken_at) == (False, index + 1)
    assert result.reason.startswith(f"record {index + 1}:")


# --- replay ----------------------------------------------------------------------------------


def test_replay_as_of_mid_call_shows_the_whisper_open_and_the_cue_unanswered() -> None:
    mid_call = replay(CALL, until_time=at_clock("09:02:35"))

    assert mid_call.state.coaches["sup-1"].whispering
    assert mid_call.state.version == 6
    assert mid_call.timeline.whispers == (
        Interval(subject="sup-1", started=mark(5, "09:02:00", "sup-1")),
    )
    assert mid_call.timeline.cues[0].acknowledged is None
    assert mid_call.records == chain(CALL[:6])


def test_replay_before_the_first_event_is_the_empty_room() -> None:
    before = replay(CALL, until_version=0)

    assert before.state == initial_state(ROOM)
    assert before.timeline == Timeline(room_id=ROOM)
    assert before.records == []


def test_replay_of_no_envelopes_is_refused() -> None:
    with pytest.raises(ValueError, match="no envelopes"):
        replay([])


@quick
@given(streams(min_size=1), st.data())
def test_replay_as_of_a_version_is_the_replay_of_the_prefix(
    envelopes: list[Envelope], data: st.DataObject
) -> None:
    version = data.draw(st.integers(1, len(envelopes)), label="until_version")
    prefix = envelopes[:version]

    as_of = replay(envelopes, until_version=version)

    assert as_of == replay(prefix)
    assert as_of.state == fold(initial_state(ROOM), prefix)
    assert as_of.timeline == timeline_of(chain(prefix))


@quick
@given(streams(min_size=1), st.data())
def test_replay_as_of_a_time_is_the_replay_of_the_prefix_up_to_it(
    envelopes: list[Envelope], data: st.DataObject
) -> None:
    count = data.draw(st.integers(1, len(envelopes)), label="events before the time")
    # Any moment from the last included event up to, not at, the next one.
    next_time = envelopes[count].time if count < len(envelopes) else None
    room = 89 if next_time is None else (next_time - envelopes[count - 1].time).seconds - 1
    until = envelopes[count - 1].time + dt.timedelta(seconds=data.draw(st.integers(0, room)))

    assert replay(envelopes, until_time=until) == replay(envelopes[:count])
