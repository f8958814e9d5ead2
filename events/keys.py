"""Where a room's data lives in Redis.

Rooms are spread over ``partitions``; every key of a room, and the feed of its partition, carry
the partition's ``{hash tag}``, so that they sit on one Redis Cluster slot and one Lua script
can write the room's stream, its idempotency record and the feed together::

    earpiece:{p3}:room:<room>            the room's events, entry id "<version>-0"
    earpiece:{p3}:room:<room>:snapshot   the latest snapshot of the room's state
    earpiece:{p3}:room:<room>:idem:<key> the result of an idempotent append
    earpiece:{p3}:room:<room>:audit      the room's hash-chained audit records
    earpiece:{p3}:room:<room>:routes     every audio route the media plane applied or removed
    earpiece:{p3}:room:<room>:lobby-version  the version the room's lobby entry is from
    earpiece:{p3}:room:<room>:owner      "<epoch> <worker>": the room's lease, while renewed
    earpiece:{p3}:room:<room>:epoch      the room's lease epoch: one more at each new owner
    earpiece:{p3}:feed                   every event of the partition's rooms, in commit order
    earpiece:{p3}:quarantine             feed entries that could not be read
    earpiece:{p3}:reader:<id>:wake       a stream reader's wake-ups: appended to re-arm its read
    earpiece:{p3}:lobby                  the partition's live rooms, for supervisors' lobbies
    earpiece:{p3}:lobby-changes          (Pub/Sub channel) the queue of each changed lobby entry

Workers, each key on its own (no script touches two of them):

    earpiece:workers                     every registered worker process: id → when it started
    earpiece:worker:<id>                 its lease, renewed while it lives (expires when not)
    earpiece:worker:<id>:rooms           the rooms in which its sessions hold someone's presence
    earpiece:unattached-joins            (sorted by deadline) "<room> <subject>" of HTTP joins
                                         that no media session has followed yet

With one partition (the embedded default) the feed is a single gapless, commit-ordered log of
every room; with ``P`` partitions order and atomicity hold within a partition only.
"""

from __future__ import annotations

import re
import zlib

from events.errors import InvalidRoomId

_ROOM_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


def check_room_id(room_id: str) -> str:
    # "." and ".." would name a path's parts wherever a room id becomes one (recordings, URLs).
    if not _ROOM_ID.fullmatch(room_id) or room_id in (".", ".."):
        raise InvalidRoomId(room_id)
    return room_id


class KeySpace:
    def __init__(self, namespace: str = "earpiece", partitions: int = 1) -> None:
        if partitions < 1:
            raise ValueError(f"partitions must be at least 1, not {partitions}")
        self.namespace = namespace
        self.partitions = partitions

    def partition_of(self, room_id: str) -> int:
        # crc32, not hash(): the placement must not change between processes.
        return zlib.crc32(check_room_id(room_id).encode()) % self.partitions

    def _tag(self, partition: int) -> str:
        return f"{self.namespace}:{{p{partition}}}"

    def room(self, room_id: str) -> str:
        return f"{self._tag(self.partition_of(room_id))}:room:{room_id}"

    def snapshot(self, room_id: str) -> str:
        return f"{self.room(room_id)}:snapshot"

    def idempotency(self, room_id: str, key: str) -> str:
        return f"{self.room(room_id)}:idem:{key}"

    def audit(self, room_id: str) -> str:
        return f"{self.room(room_id)}:audit"

    def routes(self, room_id: str) -> str:
        return f"{self.room(room_id)}:routes"

    def lobby_version(self, room_id: str) -> str:
        """The room version its lobby entry was last computed from."""
        return f"{self.room(room_id)}:lobby-version"

    def room_owner(self, room_id: str) -> str:
        """The room's lease: which worker hosts it, under which epoch (events/room_leases.py)."""
        return f"{self.room(room_id)}:owner"

    def room_epoch(self, room_id: str) -> str:
        """The room's lease epoch, which appends carrying an older one are refused under."""
        return f"{self.room(room_id)}:epoch"

    def feed(self, partition: int) -> str:
        return f"{self._tag(partition)}:feed"

    def lobby(self, partition: int) -> str:
        return f"{self._tag(partition)}:lobby"

    def lobby_changes(self, partition: int) -> str:
        """The Pub/Sub channel announcing the queue of each changed lobby entry."""
        return f"{self._tag(partition)}:lobby-changes"

    def quarantine(self, partition: int) -> str:
        return f"{self._tag(partition)}:quarantine"

    def workers(self) -> str:
        return f"{self.namespace}:workers"

    def worker_lease(self, worker_id: str) -> str:
        return f"{self.namespace}:worker:{worker_id}"

    def worker_rooms(self, worker_id: str) -> str:
        return f"{self.namespace}:worker:{worker_id}:rooms"

    def reader_wake(self, reader_id: str, partition: int) -> str:
        """A stream reader's wake stream for its read of ``partition``, in that slot."""
        return f"{self._tag(partition)}:reader:{reader_id}:wake"

    def unattached_joins(self) -> str:
        return f"{self.namespace}:unattached-joins"

    def feeds(self) -> list[str]:
        return [self.feed(p) for p in range(self.partitions)]
