"""Room leases: a room lives on one worker at a time, and a worker that lost it cannot write.

A worker hosts a room's media only while it holds the room's lease, a key set if absent with a
TTL and renewed (LiveKit's Redis router, Akka Cluster Sharding's single writer). Each new owner
gets the room's next **epoch**, and the events a worker writes about its sessions carry it: the
store's append refuses one whose epoch is older than the room's (``Fenced``; Kleppmann's fencing
tokens), so a worker paused past its lease (SIGSTOP, a long GC, a partition) cannot write after
another took the room. The keys share the room's hash tag, so the append checks the epoch in the
same script, on the same Redis Cluster slot.

A lease whose key lapsed while nobody else took the room (Redis was away, say) is renewed under
the same epoch: no one else owned the room in between, so nothing they wrote can be overwritten.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from redis.exceptions import RedisError

from events.errors import StoreUnavailable
from events.keys import KeySpace, check_room_id
from events.store import RedisClient

# KEYS: owner, epoch. ARGV: worker, ttl (ms).
_ACQUIRE = """
local owner = redis.call('GET', KEYS[1])
if owner then
  local epoch, worker = string.match(owner, '^(%d+) (.+)$')
  if worker == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return {'held', tonumber(epoch)}
  end
  return {'elsewhere', tonumber(epoch), worker}
end
local epoch = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], epoch .. ' ' .. ARGV[1], 'PX', ARGV[2])
return {'acquired', epoch}
"""

# KEYS: owner and epoch of each room, in pairs. ARGV: ttl (ms), then worker and epoch of each.
# For each room, 1 if still held (renewed), else 0.
_RENEW = """
local held = {}
for i = 1, #KEYS / 2 do
  local epoch = ARGV[2 * i + 1]
  local mine = epoch .. ' ' .. ARGV[2 * i]
  local owner = redis.call('GET', KEYS[2 * i - 1])
  if owner == mine or (not owner and redis.call('GET', KEYS[2 * i]) == epoch) then
    redis.call('SET', KEYS[2 * i - 1], mine, 'PX', ARGV[1])
    held[i] = 1
  else
    held[i] = 0
  end
end
return held
"""

# KEYS: owner. ARGV: worker, epoch.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[2] .. ' ' .. ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class Lease(msgspec.Struct, frozen=True):
    """``worker`` hosts ``room_id`` under ``epoch``."""

    room_id: str
    worker: str
    epoch: int


class RoomLeases:
    def __init__(self, client: RedisClient, keys: KeySpace, *, lease_s: float = 3.0) -> None:
        self.client = client
        self.keys = keys
        self.lease_ms = int(lease_s * 1000)
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    async def acquire(self, room_id: str, worker: str) -> Lease:
        """The room's lease for ``worker``: taken if free (a new epoch), kept if already its
        own; the lease of whoever else holds it otherwise (compare its ``worker``)."""
        keys = self._keys(check_room_id(room_id))
        reply = await self._call(self._acquire(keys=keys, args=[worker, self.lease_ms]))
        if reply[0] == b"elsewhere":
            return Lease(room_id, reply[2].decode(), int(reply[1]))
        return Lease(room_id, worker, int(reply[1]))

    async def owner(self, room_id: str) -> Lease | None:
        """Who holds the room's lease now, if anyone."""
        raw = await self._call(self.client.get(self.keys.room_owner(room_id)))
        if raw is None:
            return None
        epoch, _, worker = raw.decode().partition(" ")
        return Lease(room_id, worker, int(epoch))

    async def renew(self, leases: Sequence[Lease]) -> list[Lease]:
        """Renew ``leases``, one script per partition: its rooms share a
        hash tag, so one call renews them on a Redis Cluster too. Returns those that were lost
        (another worker took the room), which their holder must stop hosting at once."""
        by_partition: dict[int, list[Lease]] = {}
        for lease in leases:
            by_partition.setdefault(self.keys.partition_of(lease.room_id), []).append(lease)
        lost: list[Lease] = []
        for batch in by_partition.values():
            keys = [key for lease in batch for key in self._keys(lease.room_id)]
            args: list[str | int] = [self.lease_ms]
            for lease in batch:
                args += [lease.worker, lease.epoch]
            held = await self._call(self._renew(keys=keys, args=args))
            lost += [lease for lease, renewed in zip(batch, held, strict=True) if not renewed]
        return lost

    async def release(self, lease: Lease) -> None:
        """Give the room up (its last session ended, or the worker drains): the next session
        places it again. Nothing if another worker holds it by now."""
        keys = [self.keys.room_owner(lease.room_id)]
        await self._call(self._release(keys=keys, args=[lease.worker, lease.epoch]))

    def _keys(self, room_id: str) -> list[str]:
        return [self.keys.room_owner(room_id), self.keys.room_epoch(room_id)]

    async def _call(self, request: Any) -> Any:
        try:
            return await request
        except RedisError as exc:
            raise StoreUnavailable(f"room leases: {exc}") from exc
