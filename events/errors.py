"""Errors raised by the event layer.

    EarpieceError
    ├── InvalidRoomId             a room id that cannot name a stream
    ├── MalformedEvent            bytes on a stream that are not a valid envelope
    ├── InconsistentEntry         a feed entry that the room's own stream contradicts
    └── StoreError
        ├── StoreUnavailable      Redis could not be reached or answered wrongly
        ├── WrongExpectedVersion  optimistic concurrency: someone appended first
        ├── IdempotencyKeyReused  the same key sent with different events
        └── Fenced                a worker's write about a room another worker owns since

Each carries what a caller needs to answer or retry, and the Redis error it came from as
``__cause__``.
"""

from __future__ import annotations


class EarpieceError(Exception):
    """Base of every error Earpiece raises on purpose."""


class InvalidRoomId(EarpieceError, ValueError):
    def __init__(self, room_id: str) -> None:
        super().__init__(
            f"invalid room id {room_id!r}: use 1-128 characters from A-Z a-z 0-9 . _ - "
            "(not . or .. alone)"
        )
        self.room_id = room_id


class MalformedEvent(EarpieceError, ValueError):
    def __init__(self, reason: str, raw: bytes) -> None:
        super().__init__(f"malformed event: {reason}")
        self.reason = reason
        self.raw = raw


class InconsistentEntry(EarpieceError):
    """A well-formed feed entry that its room's stream contradicts (say, a version the stream
    lacks): retrying cannot help, so a consumer group quarantines it at once."""


class StoreError(EarpieceError):
    pass


class StoreUnavailable(StoreError):
    pass


class WrongExpectedVersion(StoreError):
    def __init__(self, room_id: str, expected: int, actual: int) -> None:
        super().__init__(f"room {room_id!r} is at version {actual}, not the expected {expected}")
        self.room_id = room_id
        self.expected = expected
        self.actual = actual


class IdempotencyKeyReused(StoreError):
    def __init__(self, room_id: str, key: str) -> None:
        super().__init__(
            f"idempotency key {key!r} of room {room_id!r} was already used for other events"
        )
        self.room_id = room_id
        self.key = key


class Fenced(StoreError):
    """An append carrying a room lease's epoch older than the room's: the worker that sent it
    lost the room (paused past its lease, cut off) and another has owned it since."""

    def __init__(self, room_id: str, epoch: int, current: int) -> None:
        super().__init__(
            f"room {room_id!r}: epoch {epoch} is older than the room's epoch {current}; "
            "another worker owns it now"
        )
        self.room_id = room_id
        self.epoch = epoch
        self.current = current
