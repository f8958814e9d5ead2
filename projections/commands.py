"""What someone in a room asks for, as one tagged union, and who is asking.

Commands are requests in the imperative; the room decider (``room.py``) turns each into events
or a rejection. Their JSON form carries a ``"command"`` tag (``{"command": "start_whisper"}``)
and unknown fields are refused, so a client's typo fails loudly with the field's path instead
of being ignored.

A command never says who sent it: the sender is the ``Actor`` taken from the verified token and
passed beside the command, so a client cannot speak for someone else.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from events.room import CoachMode, LeaveReason, Role, WhisperRecording

CueId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class Actor(msgspec.Struct, frozen=True):
    """The verified sender of a command: the token's subject, role, display name and claim."""

    subject: str
    role: Role
    name: str
    can_whisper: bool
    queue: str = ""


class _Command(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="command"
):
    pass


class Join(_Command, tag="join", frozen=True):
    pass


class Leave(_Command, tag="leave", frozen=True):
    pass


class StartMonitor(_Command, tag="start_monitor", frozen=True):
    pass


class StopMonitor(_Command, tag="stop_monitor", frozen=True):
    pass


class StartWhisper(_Command, tag="start_whisper", frozen=True):
    pass


class StopWhisper(_Command, tag="stop_whisper", frozen=True):
    pass


class SetCoachMode(_Command, tag="set_coach_mode", frozen=True):
    mode: CoachMode


class PressTalk(_Command, tag="press_talk", frozen=True):
    pass


class ReleaseTalk(_Command, tag="release_talk", frozen=True):
    pass


class MuteCoach(_Command, tag="mute_coach", frozen=True):
    coach: str | None = None
    """The coach to mute; None means the sender."""


class UnmuteCoach(_Command, tag="unmute_coach", frozen=True):
    coach: str | None = None
    """The coach to unmute; None means the sender."""


class SendCue(_Command, tag="send_cue", frozen=True):
    cue_id: CueId
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]


class AcknowledgeCue(_Command, tag="acknowledge_cue", frozen=True):
    cue_id: CueId


class SetRecordingPolicy(_Command, tag="set_recording_policy", frozen=True):
    whisper: WhisperRecording


class CloseRoom(_Command, tag="close_room", frozen=True):
    reason: Annotated[str, msgspec.Meta(max_length=200)] = ""


RoomCommand = (
    Join
    | Leave
    | StartMonitor
    | StopMonitor
    | StartWhisper
    | StopWhisper
    | SetCoachMode
    | PressTalk
    | ReleaseTalk
    | MuteCoach
    | UnmuteCoach
    | SendCue
    | AcknowledgeCue
    | SetRecordingPolicy
    | CloseRoom
)


class AttachSession(msgspec.Struct, frozen=True, kw_only=True):
    """A media session of the sender opened on ``worker``, and holds their presence.

    Session commands come from the shell, never from a client: they are not in ``RoomCommand``,
    so no request body can decode into one.
    """

    worker: str


class EndPresence(msgspec.Struct, frozen=True, kw_only=True):
    """``subject``'s presence ended for ``reason``, if ``worker`` still holds it (a participant
    whose sessions have moved to another worker stays)."""

    subject: str
    reason: LeaveReason
    worker: str


SessionCommand = AttachSession | EndPresence
"""What the shell tells a room about sessions: who is live, through which worker."""


def command_name(command: RoomCommand) -> str:
    """The command's wire tag, e.g. ``"start_whisper"``."""
    return str(type(command).__struct_config__.tag)
