"""The event store: one Redis Stream per room, appended atomically with an expected version.

A room's stream holds its envelopes under entry ids ``"<version>-0"``, so reading from a version
is a plain ``XRANGE`` and following is a blocking ``XREAD`` (``stream_reader.py``: one per
process, over every room it follows). One Lua script checks the expected
version and the idempotency key, then writes the room stream and its partition's feed together
(they share a hash tag, see ``keys.py``). Either all events of an append are stored, or none.

Durability is Redis's: with ``appendonly yes`` and ``appendfsync always`` an append is
acknowledged only after its AOF write is fsynced, so it survives ``kill -9`` of Redis and the
loss of the machine's power; with ``everysec`` it survives ``kill -9`` of Redis (the write has
reached the kernel) but up to a second may be lost with the power.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import msgspec
import redis.asyncio as redis
from redis.exceptions import RedisError

from events.envelope import Envelope, EnvelopeCodec, new_event_id, utc_now
from events.errors import (
    Fenced,
    IdempotencyKeyReused,
    MalformedEvent,
    StoreUnavailable,
    WrongExpectedVersion,
)
from events.keys import KeySpace, check_room_id
from events.room import RoomEvent

RedisClient = redis.Redis | redis.RedisCluster
"""A client of one Redis, or of a Redis Cluster: the store works on either."""

# KEYS: room stream, partition feed, room lease epoch[, idempotency record]
# ARGV: expected version, room id, fingerprint, idempotency ttl (s), epoch or "", envelope JSON...
_APPEND = """
local expected = tonumber(ARGV[1])
if ARGV[5] ~= '' then
  local current = tonumber(redis.call('GET', KEYS[3]) or '0')
  if tonumber(ARGV[5]) < current then return {'fenced', current} end
end
if #KEYS == 4 then
  local seen = redis.call('GET', KEYS[4])
  if seen then
    local fingerprint, first, last = string.match(seen, '^(%x+):(%d+):(%d+)$')
    if fingerprint ~= ARGV[3] then return {'reused'} end
    return {'duplicate', tonumber(first), tonumber(last)}
  end
end
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local actual = 0
if #newest > 0 then actual = tonumber(string.match(newest[1][1], '^(%d+)')) end
if actual ~= expected then return {'conflict', actual} end
local count = #ARGV - 5
for i = 1, count do
  local version = expected + i
  redis.call('XADD', KEYS[1], version .. '-0', 'e', ARGV[5 + i])
  redis.call('XADD', KEYS[2], '*', 'room', ARGV[2], 'version', version, 'e', ARGV[5 + i])
end
if #KEYS == 4 then
  redis.call('SET', KEYS[4], ARGV[3] .. ':' .. (expected + 1) .. ':' .. (expected + count),
             'EX', tonumber(ARGV[4]))
end
return {'ok', expected + 1, expected + count}
"""


class AppendResult(msgspec.Struct, frozen=True):
    first_version: int
    last_version: int
    duplicate: bool = False
    """True when an earlier append with the same idempotency key had already stored these."""


class Snapshot(msgspec.Struct, frozen=True):
    version: int
    schema: int
    state: bytes


_fingerprint_encoder = msgspec.json.Encoder()
_snapshot_decoder = msgspec.msgpack.Decoder(Snapshot)


def version_of(entry_id: bytes) -> int:
    return int(entry_id.split(b"-", 1)[0])


class EventStore:
    def __init__(
        self,
        client: RedisClient,
        keys: KeySpace | None = None,
        codec: EnvelopeCodec | None = None,
        *,
        idempotency_ttl_s: int = 24 * 3600,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
    ) -> None:
        """``wait_replicas``: an append is acknowledged only once this many replicas have it
        (``WAIT``), else StoreUnavailable; a single Redis with replicas only, not a cluster."""
        if wait_replicas and isinstance(client, redis.RedisCluster):
            raise ValueError("waiting for replicas is not supported on a Redis Cluster yet")
        self.client = client
        self.keys = keys or KeySpace()
        self.codec = codec or EnvelopeCodec()
        self._idempotency_ttl_s = idempotency_ttl_s
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self._append_script = client.register_script(_APPEND)

    async def append(
        self,
        room_id: str,
        events: Sequence[RoomEvent],
        *,
        expected_version: int,
        actor: str,
        idempotency_key: str | None = None,
        causation_id: str | None = None,
        correlation_id: str | None = None,
        epoch: int | None = None,
    ) -> AppendResult:
        """Store ``events`` as versions ``expected_version + 1 …`` of the room, or none of them.

        Raises WrongExpectedVersion when the room has moved on, IdempotencyKeyReused when the key
        was already used for different events. A retry with the same key and events returns the
        first append's result with ``duplicate=True`` and writes nothing. ``epoch``: the room
        lease a worker writes about its sessions under; Fenced if the room's epoch is newer
        (another worker owns the room since), checked before anything else.
        """
        check_room_id(room_id)
        if not events:
            raise ValueError("append needs at least one event")
        if expected_version < 0:
            raise ValueError(f"expected_version must be 0 or more, not {expected_version}")
        time = utc_now()
        envelopes = [
            self.codec.encode(
                Envelope(
                    event_id=new_event_id(),
                    room_id=room_id,
                    version=expected_version + offset,
                    time=time,
                    actor=actor,
                    event=event,
                    causation_id=causation_id,
                    correlation_id=correlation_id,
                    epoch=epoch,
                )
            )
            for offset, event in enumerate(events, start=1)
        ]
        keys = [
            self.keys.room(room_id),
            self.keys.feed(self.keys.partition_of(room_id)),
            self.keys.room_epoch(room_id),
        ]
        fingerprint = ""
        if idempotency_key is not None:
            keys.append(self.keys.idempotency(room_id, idempotency_key))
            fingerprint = hashlib.sha256(_fingerprint_encoder.encode(list(events))).hexdigest()
        args: list[Any] = [
            expected_version,
            room_id,
            fingerprint,
            self._idempotency_ttl_s,
            "" if epoch is None else epoch,
            *envelopes,
        ]
        try:
            reply, replicas = await self._run_append(keys, args)
        except RedisError as exc:
            raise StoreUnavailable(f"append to room {room_id!r} failed: {exc}") from exc
        outcome = reply[0].decode()
        if outcome in ("ok", "duplicate") and replicas < self.wait_replicas:
            raise StoreUnavailable(
                f"append to room {room_id!r}: {replicas} of {self.wait_replicas} replicas had it "
                f"within {self.wait_timeout_ms} ms; retry with the same Idempotency-Key"
            )
        if outcome == "ok":
            return AppendResult(int(reply[1]), int(reply[2]))
        if outcome == "duplicate":
            return AppendResult(int(reply[1]), int(reply[2]), duplicate=True)
        if outcome == "conflict":
            raise WrongExpectedVersion(room_id, expected_version, int(reply[1]))
        if outcome == "fenced" and epoch is not None:
            raise Fenced(room_id, epoch, int(reply[1]))
        if outcome == "reused" and idempotency_key is not None:
            raise IdempotencyKeyReused(room_id, idempotency_key)
        raise StoreUnavailable(f"append to room {room_id!r}: unexpected reply {reply!r}")

    async def _run_append(self, keys: list[str], args: list[Any]) -> tuple[Any, int]:
        """The script's reply, and how many replicas had the write (WAIT, on the connection
        that wrote it: the pipeline's) when some must."""
        if not self.wait_replicas or not isinstance(self.client, redis.Redis):  # not a cluster
            return await self._append_script(keys=keys, args=args), 0
        async with self.client.pipeline(transaction=False) as pipe:
            await self._append_script(keys=keys, args=args, client=pipe)
            pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)
            reply, replicas = await pipe.execute()
        return reply, int(replicas)

    async def version(self, room_id: str) -> int:
        """The room's current version: 0 for a room with no events."""
        newest = await self._call("XREVRANGE", self.keys.room(room_id), "+", "-", "COUNT", 1)
        return version_of(newest[0][0]) if newest else 0

    async def read(
        self, room_id: str, *, after_version: int = 0, count: int | None = None
    ) -> list[Envelope]:
        """The room's envelopes with versions above ``after_version``, oldest first."""
        args: list[Any] = [self.keys.room(room_id), f"{after_version + 1}-0", "+"]
        if count is not None:
            args += ["COUNT", count]
        entries = await self._call("XRANGE", *args)
        return [self.decode_entry(room_id, entry_id, fields) for entry_id, fields in entries]

    async def read_all(
        self, room_id: str, *, after_version: int = 0, page: int = 1000
    ) -> AsyncGenerator[Envelope, None]:
        """Every envelope above ``after_version``, fetched ``page`` at a time."""
        while batch := await self.read(room_id, after_version=after_version, count=page):
            for envelope in batch:
                yield envelope
            after_version = batch[-1].version

    async def save_snapshot(self, room_id: str, snapshot: Snapshot) -> None:
        await self._call("SET", self.keys.snapshot(room_id), msgspec.msgpack.encode(snapshot))

    async def load_snapshot(self, room_id: str) -> Snapshot | None:
        raw = await self._call("GET", self.keys.snapshot(room_id))
        return None if raw is None else _snapshot_decoder.decode(raw)

    async def _call(self, *args: Any) -> Any:
        try:
            return await self.client.execute_command(*args)
        except RedisError as exc:
            raise StoreUnavailable(f"{args[0]} {args[1]!r} failed: {exc}") from exc

    def decode_entry(self, room_id: str, entry_id: bytes, fields: Any) -> Envelope:
        """The envelope of a stream entry of the room, checked to be the one its id names."""
        raw = _fields(fields).get(b"e", b"")
        envelope = self.codec.decode(raw)
        if envelope.room_id != room_id or envelope.version != version_of(entry_id):
            raise MalformedEvent(
                f"entry {entry_id.decode()} of room {room_id!r} holds version "
                f"{envelope.version} of room {envelope.room_id!r}",
                raw,
            )
        return envelope


def raise_if_cancelling() -> None:
    """Honour a cancellation that redis-py swallowed.

    A task cancelled just as a blocking read's reply arrives can have the CancelledError
    absorbed inside redis-py (redis/redis-py#2028); the request is still recorded on the task
    (``Task.cancelling()``), so loops around blocking reads check it before each read.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _fields(fields: Any) -> dict[bytes, bytes]:
    """A stream entry's field/value pairs (RESP2 gives a flat list, RESP3 a map)."""
    if isinstance(fields, dict):
        return fields
    return dict(zip(fields[::2], fields[1::2], strict=True))
