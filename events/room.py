"""Every event that can happen in a room, as one tagged union.

Events are facts in the past tense. Each is a frozen msgspec Struct whose JSON form carries
a ``"type"`` tag (``{"type": "whisper_started", "coach": "sup-1"}``), so one decoder reads the
whole union. New fields must get defaults, so that events already on a stream still decode
(msgspec's schema-evolution rules); anything else needs an upcaster (see ``envelope.py``).

The envelope (``envelope.py``) says who did it and when; the event says what happened and to
whom. ``CoachMuted.coach`` is the coach who was muted, the envelope's ``actor`` the one who
muted them.
"""

from __future__ import annotations

import enum

import msgspec


class Role(enum.StrEnum):
    CUSTOMER = "customer"
    AGENT = "agent"
    SUPERVISOR = "supervisor"


class CoachMode(enum.StrEnum):
    PUSH_TO_TALK = "push_to_talk"
    OPEN_MIC = "open_mic"


class WhisperRecording(enum.StrEnum):
    """Whether coaches' whispers are kept, as their own track of the session's recording."""

    SEPARATE_TRACK = "separate_track"
    EXCLUDED = "excluded"


class LeaveReason(enum.StrEnum):
    """Why a participant left: they asked, or their presence ended with what held it."""

    ASKED = "asked"
    SESSION_ENDED = "session_ended"
    """Their last media session ended (hung up, or its connection failed)."""
    WORKER_LOST = "worker_lost"
    """The worker process hosting their sessions stopped renewing its lease (crash, hang)."""
    WORKER_STOPPED = "worker_stopped"
    """The worker process hosting their sessions shut down."""
    CREDENTIALS_EXPIRED = "credentials_expired"
    """A supervisor's token expired: their monitoring ends with their authorization."""
    NO_SESSION = "no_session"
    """They joined without media (an HTTP ``join``) and no session followed in the grace period."""


class _Event(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="type"):
    # omit_defaults: a field added later (with a default, as it must be) leaves the bytes of
    # older events unchanged, so the audit hashes sealed over them still verify.
    pass


class ParticipantJoined(_Event, tag="participant_joined", frozen=True):
    subject: str
    role: Role
    name: str
    can_whisper: bool = False
    queue: str = ""
    """The contact-centre queue the participant's call belongs to ("" if the token named none)."""
    worker: str = ""
    """The worker process hosting the media session that holds their presence; "" for a join
    with no session behind it (an HTTP ``join``). Joined again with another worker: their
    sessions moved there (after a restart, say)."""


class ParticipantLeft(_Event, tag="participant_left", frozen=True):
    subject: str
    reason: LeaveReason = LeaveReason.ASKED


class MonitorStarted(_Event, tag="monitor_started", frozen=True):
    coach: str


class MonitorStopped(_Event, tag="monitor_stopped", frozen=True):
    coach: str


class WhisperStarted(_Event, tag="whisper_started", frozen=True):
    coach: str


class WhisperStopped(_Event, tag="whisper_stopped", frozen=True):
    coach: str


class CoachModeSet(_Event, tag="coach_mode_set", frozen=True):
    coach: str
    mode: CoachMode


class TalkPressed(_Event, tag="talk_pressed", frozen=True):
    coach: str


class TalkReleased(_Event, tag="talk_released", frozen=True):
    coach: str


class CoachMuted(_Event, tag="coach_muted", frozen=True):
    coach: str
    by: str = ""
    """Who muted them, when it was not the coach themself (the agent); "" when it was."""


class CoachUnmuted(_Event, tag="coach_unmuted", frozen=True):
    coach: str


class CueSent(_Event, tag="cue_sent", frozen=True):
    cue_id: str
    coach: str
    text: str


class CueAcknowledged(_Event, tag="cue_acknowledged", frozen=True):
    cue_id: str


class RecordingPolicySet(_Event, tag="recording_policy_set", frozen=True):
    whisper: WhisperRecording


class RoomClosed(_Event, tag="room_closed", frozen=True):
    reason: str = ""


RoomEvent = (
    ParticipantJoined
    | ParticipantLeft
    | MonitorStarted
    | MonitorStopped
    | WhisperStarted
    | WhisperStopped
    | CoachModeSet
    | TalkPressed
    | TalkReleased
    | CoachMuted
    | CoachUnmuted
    | CueSent
    | CueAcknowledged
    | RecordingPolicySet
    | RoomClosed
)


def event_type(event: RoomEvent) -> str:
    """The event's wire tag, e.g. ``"whisper_started"``."""
    return str(type(event).__struct_config__.tag)
