"""A room's compliance record: a hash chain over its events, and the timeline folded from it.

Every event of a room becomes one ``AuditRecord``, numbered 1, 2, 3... (``seq``) and sealed
with ``hash = sha256(canonical bytes of every other field)``. Each record names the hash of the
one before it (``prev_hash``; the first names ``GENESIS_HASH``), so changing, dropping or
reordering any record breaks every link after it, and ``verify`` says where.

A chain proves only that it is consistent with itself: whoever can rewrite the log can also
recompute every hash after a change. Keep the last hash (the head) somewhere the log's writer
cannot rewrite and pass it to ``verify(..., expected_head=...)``; that also catches records
dropped from the end, which leave no broken link behind.

Records carry the whole event, so the audit log alone replays the room: ``timeline_of`` folds
records into the ``Timeline`` a compliance officer reads, and ``replay`` rebuilds the room's
state, timeline and records as of a version or a time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
from collections.abc import Iterable, Sequence
from functools import reduce
from typing import TypeVar, assert_never

import msgspec
from msgspec.structs import replace

from events import room
from events.envelope import Envelope
from events.room import LeaveReason, Role, RoomEvent, WhisperRecording
from projections.decider import RoomState, fold, initial_state

GENESIS_HASH = "0" * 64
"""The ``prev_hash`` of a room's first record."""


class _Unsealed(msgspec.Struct, frozen=True, kw_only=True):
    """Every field of an audit record but its hash: what the hash is computed over.

    Its canonical bytes are its msgspec JSON, which is deterministic: fields are written in
    the order declared here (and an event's ``type`` tag first, then its fields in declared
    order), with no whitespace, every field present even when it holds its default, enums as
    their values and datetimes as RFC 3339 text that decodes back to the same text. Records
    read back from JSON therefore hash to the same value.

    The bytes depend on the event schema: a field later added to an event (with a default, as
    events' schema rules require) appears in the bytes of older records too and changes their
    hash. Verifying records written before such a change needs the schema they were written
    under.
    """

    seq: int
    room_id: str
    version: int
    time: dt.datetime
    actor: str
    event_id: str
    event: RoomEvent
    prev_hash: str


class AuditRecord(_Unsealed, frozen=True, kw_only=True):
    """One event of a room, numbered within the room's audit log and sealed into its chain."""

    hash: str


_encoder = msgspec.json.Encoder()


def _hash_of(record: _Unsealed) -> str:
    # A record is also an _Unsealed; copy out the unsealed fields so the hash is never
    # computed over itself.
    unsealed = _Unsealed(**{name: getattr(record, name) for name in _Unsealed.__struct_fields__})
    return hashlib.sha256(_encoder.encode(unsealed)).hexdigest()


def _link_problem(previous: AuditRecord | None, record: AuditRecord, position: int) -> str:
    """Why ``record`` cannot follow ``previous`` at ``position`` of a chain ("" if it can)."""
    if record.seq != position:
        return f"record {position}: seq is {record.seq}, expected {position}"
    if previous is None:
        if record.prev_hash != GENESIS_HASH:
            return f"record {position}: prev_hash is not the genesis hash"
        return ""
    if record.prev_hash != previous.hash:
        return f"record {position}: prev_hash is not the hash of record {previous.seq}"
    if record.room_id != previous.room_id:
        return f"record {position}: room {record.room_id!r} is not {previous.room_id!r}"
    if record.version <= previous.version:
        return f"record {position}: version {record.version} is not after {previous.version}"
    return ""


def next_record(previous: AuditRecord | None, envelope: Envelope) -> AuditRecord:
    """The record of ``envelope``, chained after ``previous`` (``None`` for a room's first).

    Raises ``ValueError`` for an envelope of another room or one not after ``previous``.
    """
    unsealed = _Unsealed(
        seq=1 if previous is None else previous.seq + 1,
        room_id=envelope.room_id,
        version=envelope.version,
        time=envelope.time,
        actor=envelope.actor,
        event_id=envelope.event_id,
        event=envelope.event,
        prev_hash=GENESIS_HASH if previous is None else previous.hash,
    )
    record = AuditRecord(**msgspec.structs.asdict(unsealed), hash=_hash_of(unsealed))
    problem = _link_problem(previous, record, record.seq)
    if problem:
        raise ValueError(f"cannot chain event {envelope.event_id!r}: {problem}")
    return record


def chain(envelopes: Iterable[Envelope]) -> list[AuditRecord]:
    """The audit records of one room's envelopes, in stream order."""
    records: list[AuditRecord] = []
    for envelope in envelopes:
        records.append(next_record(records[-1] if records else None, envelope))
    return records


class Verification(msgspec.Struct, frozen=True, kw_only=True):
    ok: bool
    checked: int
    """How many records passed every check, counted from the first."""
    broken_at: int | None
    """The seq the first bad record should hold (its 1-based position), or ``None`` if ok."""
    reason: str
    """What is wrong with that record, naming it; "" when ok."""


def verify(records: Sequence[AuditRecord], *, expected_head: str | None = None) -> Verification:
    """Checks every record's hash, its link to the one before, seq 1, 2, 3... and that
    versions strictly increase; then, if ``expected_head`` is given, that the chain ends there.
    """
    previous: AuditRecord | None = None
    for position, record in enumerate(records, start=1):
        if record.hash != _hash_of(record):
            problem = f"record {position}: its hash does not match its contents"
        else:
            problem = _link_problem(previous, record, position)
        if problem:
            return Verification(ok=False, checked=position - 1, broken_at=position, reason=problem)
        previous = record
    head = GENESIS_HASH if previous is None else previous.hash
    if expected_head is not None and head != expected_head:
        missing = len(records) + 1
        return Verification(
            ok=False,
            checked=len(records),
            broken_at=missing,
            reason=f"record {missing}: missing; the chain ends at seq {len(records)}, "
            "short of the expected head (or it was rewritten)",
        )
    return Verification(ok=True, checked=len(records), broken_at=None, reason="")


def verify_against_stream(
    records: Sequence[AuditRecord], envelopes: Iterable[Envelope]
) -> Verification:
    """``verify``, and then that each record says what the room's stream says at its version,
    and that no event of the stream lacks its record: a chain consistent with itself must also
    be the whole chain of these events."""
    verification = verify(records)
    if not verification.ok:
        return verification
    by_version = {envelope.version: envelope for envelope in envelopes}
    for record in records:
        stored = by_version.get(record.version)
        if stored is None or (stored.event_id, stored.event) != (record.event_id, record.event):
            return Verification(
                ok=False,
                checked=record.seq - 1,
                broken_at=record.seq,
                reason=f"record {record.seq}: differs from version {record.version} "
                "of the room's stream",
            )
    recorded = {record.version for record in records}
    missing = sorted(version for version in by_version if version not in recorded)
    if missing:
        first = len(records) + 1
        return Verification(
            ok=False,
            checked=len(records),
            broken_at=first,
            reason=f"record {first}: missing; the audit has {len(records)} records but the "
            f"room's stream {len(by_version)} events (versions {_spans(missing)} unrecorded)",
        )
    return verification


def _spans(versions: list[int]) -> str:
    """``[3, 4, 5, 9]`` as ``"3-5, 9"``."""
    spans: list[list[int]] = []
    for version in versions:
        if spans and version == spans[-1][-1] + 1:
            spans[-1].append(version)
        else:
            spans.append([version])
    return ", ".join(str(s[0]) if len(s) == 1 else f"{s[0]}-{s[-1]}" for s in spans)


class Mark(msgspec.Struct, frozen=True, kw_only=True):
    """When something happened: the record's wall-clock time, place in the log, and actor."""

    time: dt.datetime
    version: int
    seq: int
    actor: str


class Interval(msgspec.Struct, frozen=True, kw_only=True):
    """A span in which ``subject`` was doing something; ``ended`` is ``None`` while it goes on."""

    subject: str
    started: Mark
    ended: Mark | None = None


class Attendance(Interval, frozen=True, kw_only=True):
    """A participant's time in the room: joined at ``started``, left at ``ended``, and why."""

    role: Role
    name: str
    left_because: LeaveReason | None = None
    """Why they left: they asked, or what held their presence ended (a lost worker, say)."""


class TimelineCue(msgspec.Struct, frozen=True, kw_only=True):
    cue_id: str
    coach: str
    text: str
    sent: Mark
    acknowledged: Mark | None = None


class PolicyChange(msgspec.Struct, frozen=True, kw_only=True):
    whisper: WhisperRecording
    set: Mark


class Closure(msgspec.Struct, frozen=True, kw_only=True):
    reason: str
    closed: Mark


class Timeline(msgspec.Struct, frozen=True, kw_only=True):
    """What happened in a room, for compliance; each tuple in the order its entries began.

    Intervals name whose they are in ``subject``: ``monitoring`` and ``whispers`` by coach,
    ``mutes`` by the coach who was muted (``started.actor`` muted them). A participant's
    leaving ends their open intervals; the room's closing ends everyone's.
    """

    room_id: str
    participants: tuple[Attendance, ...] = ()
    monitoring: tuple[Interval, ...] = ()
    whispers: tuple[Interval, ...] = ()
    mutes: tuple[Interval, ...] = ()
    cues: tuple[TimelineCue, ...] = ()
    recording_policy: tuple[PolicyChange, ...] = ()
    closure: Closure | None = None


def initial_timeline(room_id: str) -> Timeline:
    return Timeline(room_id=room_id)


_Span = TypeVar("_Span", bound=Interval)


def _begun(intervals: tuple[Interval, ...], subject: str, mark: Mark) -> tuple[Interval, ...]:
    # A repeated start (a retried command) continues the open interval.
    if any(i.subject == subject and i.ended is None for i in intervals):
        return intervals
    return (*intervals, Interval(subject=subject, started=mark))


def _ended(intervals: tuple[_Span, ...], mark: Mark, subject: str | None) -> tuple[_Span, ...]:
    """Ends the open intervals of ``subject``, or of everyone when it is ``None``."""
    return tuple(
        replace(i, ended=mark) if i.ended is None and subject in (None, i.subject) else i
        for i in intervals
    )


def _all_ended(timeline: Timeline, mark: Mark, subject: str | None) -> Timeline:
    return replace(
        timeline,
        participants=_ended(timeline.participants, mark, subject),
        monitoring=_ended(timeline.monitoring, mark, subject),
        whispers=_ended(timeline.whispers, mark, subject),
        mutes=_ended(timeline.mutes, mark, subject),
    )


def _acknowledged(
    cues: tuple[TimelineCue, ...], cue_id: str, mark: Mark
) -> tuple[TimelineCue, ...]:
    # The first acknowledgement is the one that counts.
    return tuple(
        replace(c, acknowledged=mark) if c.cue_id == cue_id and c.acknowledged is None else c
        for c in cues
    )


def evolve_timeline(timeline: Timeline, record: AuditRecord) -> Timeline:
    mark = Mark(time=record.time, version=record.version, seq=record.seq, actor=record.actor)
    match record.event:
        case room.ParticipantJoined(subject=subject, role=role, name=name):
            if any(a.subject == subject and a.ended is None for a in timeline.participants):
                return timeline  # joined again through another worker: the same attendance
            joined = Attendance(subject=subject, started=mark, role=role, name=name)
            return replace(timeline, participants=(*timeline.participants, joined))
        case room.ParticipantLeft(subject=subject, reason=reason):
            ended = _all_ended(timeline, mark, subject)
            return replace(
                ended,
                participants=tuple(
                    replace(a, left_because=reason)
                    if a.subject == subject and a.ended is mark
                    else a
                    for a in ended.participants
                ),
            )
        case room.MonitorStarted(coach=coach):
            return replace(timeline, monitoring=_begun(timeline.monitoring, coach, mark))
        case room.MonitorStopped(coach=coach):
            return replace(timeline, monitoring=_ended(timeline.monitoring, mark, coach))
        case room.WhisperStarted(coach=coach):
            return replace(timeline, whispers=_begun(timeline.whispers, coach, mark))
        case room.WhisperStopped(coach=coach):
            return replace(timeline, whispers=_ended(timeline.whispers, mark, coach))
        case room.CoachMuted(coach=coach):
            return replace(timeline, mutes=_begun(timeline.mutes, coach, mark))
        case room.CoachUnmuted(coach=coach):
            return replace(timeline, mutes=_ended(timeline.mutes, mark, coach))
        case room.CueSent(cue_id=cue_id, coach=coach, text=text):
            cue = TimelineCue(cue_id=cue_id, coach=coach, text=text, sent=mark)
            return replace(timeline, cues=(*timeline.cues, cue))
        case room.CueAcknowledged(cue_id=cue_id):
            return replace(timeline, cues=_acknowledged(timeline.cues, cue_id, mark))
        case room.RecordingPolicySet(whisper=whisper):
            change = PolicyChange(whisper=whisper, set=mark)
            return replace(timeline, recording_policy=(*timeline.recording_policy, change))
        case room.RoomClosed(reason=reason):
            closed = _all_ended(timeline, mark, subject=None)
            return replace(closed, closure=Closure(reason=reason, closed=mark))
        case room.CoachModeSet() | room.TalkPressed() | room.TalkReleased():
            return timeline  # who could be heard when is the room state's concern, not audit's
        case _:
            assert_never(record.event)


def timeline_of(records: Sequence[AuditRecord]) -> Timeline:
    """The timeline of one room's records; there must be at least one, to name the room."""
    if not records:
        raise ValueError("no records: a timeline needs at least one to know its room")
    return reduce(evolve_timeline, records, initial_timeline(records[0].room_id))


class Replay(msgspec.Struct, frozen=True, kw_only=True):
    state: RoomState
    timeline: Timeline
    records: list[AuditRecord]


def replay(
    envelopes: Iterable[Envelope],
    *,
    until_version: int | None = None,
    until_time: dt.datetime | None = None,
) -> Replay:
    """The room as of ``until_version`` and ``until_time`` (both inclusive; the earlier wins).

    ``envelopes`` is one room's stream from its first event, which names the room. The replay
    covers the stream up to its first envelope past either limit: stream order is the truth,
    so an event stamped before ``until_time`` by a clock that stepped back, but written after
    one stamped past it, is not included, and every replay is a state the room really had.
    """
    stream = iter(envelopes)
    first = next(stream, None)
    if first is None:
        raise ValueError("no envelopes: a replay needs the stream's first to know its room")

    def within(envelope: Envelope) -> bool:
        return (until_version is None or envelope.version <= until_version) and (
            until_time is None or envelope.time <= until_time
        )

    prefix = list(itertools.takewhile(within, itertools.chain([first], stream)))
    records = chain(prefix)
    return Replay(
        state=fold(initial_state(first.room_id), prefix),
        timeline=reduce(evolve_timeline, records, initial_timeline(first.room_id)),
        records=records,
    )
