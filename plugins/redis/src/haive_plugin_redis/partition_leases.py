"""Partition leases and group membership in Redis: who is alive, who owns which partition.

Everything lives in Redis (no coordinator of our own), with Redis's clock:

* **Members**: a sorted set ``{orders}:members:<group>`` whose scores are expiry times
  (server ``TIME`` + ``ttl``). A heartbeat (one Lua script) drops expired members, re-adds
  this one and returns the live list: a member that stops heartbeating (SIGKILL, a pause)
  disappears after ``ttl``. A sorted set rather than one key per member because listing
  keys would need ``SCAN`` over every node of a cluster.
* **Leases**: ``{orders:p3}:lease:<group>`` holds ``"<owner>:<epoch>"`` with a ``PX``
  expiry renewed by the owner's heartbeats. Acquiring (a Lua script, atomic) only succeeds
  when no lease is held (or this owner held it), and ``INCR``\\ s the partition's *epoch*,
  the fencing token. The epoch key is the partition consumer's fence key
  (:func:`~haive_plugin_redis.stream_fencing.fence_key`), which every exactly-once commit
  ``WATCH``\\ es and compares, and every at-least-once ``XACK`` checks in a script: once a
  new owner took the partition, a paused or partitioned "zombie" cannot commit any more.

Lease and epoch keys carry the partition's hash tag (same slot as its stream); each
command goes to the client of its key's slot.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from redis.exceptions import ResponseError

from haive.dataflow.errors import HaiveError

from ._resp import derived_key, pack
from .client import RedisClient
from .partitioning import PartitionedStream
from .stream_fencing import fence_key

#: The consumer name every owner of a partition reads under, in the partition's group: the
#: pending entries of a previous owner are the new owner's own pending list (no claim).
PARTITION_CONSUMER = "owner"

_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], 100 * tonumber(ARGV[2]))
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""

_ACQUIRE = """
local held = redis.call('GET', KEYS[1])
if held and string.sub(held, 1, string.len(ARGV[1]) + 1) ~= ARGV[1] .. ':' then
  return 0
end
local epoch = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. epoch, 'PX', ARGV[2])
return epoch
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class PartitionLeases:
    """Membership and partition leases of one member (``owner``) of ``group``.

    ``clients`` maps a key to the client of its slot (one client without Redis Cluster).

    Example::

        >>> import uuid
        >>> import trio
        >>> async def main():
        ...     client = RedisClient()
        ...     layout = PartitionedStream(f"doc-{uuid.uuid4().hex[:8]}", 2)
        ...     a = PartitionLeases(layout, "g", "a", ttl=5.0, clients=lambda key: client)
        ...     b = PartitionLeases(layout, "g", "b", ttl=5.0, clients=lambda key: client)
        ...     members = await a.heartbeat(), await b.heartbeat()
        ...     epoch = await a.acquire(0)
        ...     taken = await b.acquire(0)           # a holds it
        ...     released = await a.release(0, epoch)
        ...     again = await b.acquire(0)           # free: next epoch
        ...     owners = await a.owners()
        ...     await client.execute("DEL", a.members_key, a.lease_key(0), a.epoch_key(0))
        ...     client.close()
        ...     return members, epoch, taken, released, again, owners
        >>> trio.run(main)
        ((['a'], ['a', 'b']), 1, None, True, 2, [('b', 2), (None, None)])
    """

    def __init__(
        self,
        layout: PartitionedStream,
        group: str,
        owner: str,
        *,
        ttl: float,
        clients: Callable[[str], RedisClient],
    ) -> None:
        self.layout = layout
        self.group = group
        self.owner = owner
        self.ttl = ttl
        self.clients = clients
        self.members_key = f"{{{layout.name}}}:members:{group}"

    def __repr__(self) -> str:
        return f"PartitionLeases({self.layout.name!r}, group={self.group!r}, owner={self.owner!r})"

    def lease_key(self, partition: int) -> str:
        return derived_key(self.layout.stream(partition), f"lease:{self.group}")

    def epoch_key(self, partition: int) -> str:
        """The partition's epoch: its consumer's fence key, ``INCR``\\ ed by each new owner."""
        return fence_key(self.layout.stream(partition), self.group, PARTITION_CONSUMER)

    def lease_value(self, epoch: int) -> str:
        return f"{self.owner}:{epoch}"

    async def heartbeat(self) -> list[str]:
        """Say this member is alive for ``ttl``; the live members (sorted)."""
        reply = await self._one(
            self.members_key,
            pack("EVAL", _HEARTBEAT, 1, self.members_key, self.owner, _ms(self.ttl)),
        )
        return sorted(m.decode() for m in reply)

    async def leave(self) -> None:
        """Leave the group now (a clean stop), so the others rebalance without waiting."""
        await self._one(self.members_key, pack("ZREM", self.members_key, self.owner))

    async def acquire(self, partition: int) -> int | None:
        """Take the partition's lease if free; its new epoch, else ``None``."""
        epoch = (await self.acquire_many([partition]))[partition]
        return epoch

    async def acquire_many(self, partitions: Sequence[int]) -> dict[int, int | None]:
        """``acquire`` several partitions (one round trip per client)."""
        replies = await self._each(
            [
                (
                    self.lease_key(p),
                    pack(
                        "EVAL",
                        _ACQUIRE,
                        2,
                        self.lease_key(p),
                        self.epoch_key(p),
                        self.owner,
                        _ms(self.ttl),
                    ),
                )
                for p in partitions
            ]
        )
        return {p: (int(r) or None) for p, r in zip(partitions, replies, strict=True)}

    async def renew_many(self, epochs: dict[int, int]) -> set[int]:
        """Extend the leases held (partition -> epoch); the partitions that were lost."""
        parts = list(epochs)
        replies = await self._each(
            [
                (
                    self.lease_key(p),
                    pack(
                        "EVAL",
                        _RENEW,
                        1,
                        self.lease_key(p),
                        self.lease_value(epochs[p]),
                        _ms(self.ttl),
                    ),
                )
                for p in parts
            ]
        )
        return {p for p, r in zip(parts, replies, strict=True) if not r}

    async def release(self, partition: int, epoch: int) -> bool:
        """Give the lease up if still ours (the next owner takes it without waiting)."""
        key = self.lease_key(partition)
        return bool(await self._one(key, pack("EVAL", _RELEASE, 1, key, self.lease_value(epoch))))

    async def owners(self) -> list[tuple[str | None, int | None]]:
        """``(owner, epoch)`` of every partition's lease (``(None, None)`` when free)."""
        replies = await self._each(
            [
                (self.lease_key(p), pack("GET", self.lease_key(p)))
                for p in range(self.layout.partitions)
            ]
        )
        out: list[tuple[str | None, int | None]] = []
        for value in replies:
            if value is None:
                out.append((None, None))
            else:
                owner, _, epoch = value.decode().rpartition(":")
                out.append((owner, int(epoch)))
        return out

    async def _one(self, key: str, packed: bytes) -> Any:
        return (await self._each([(key, packed)]))[0]

    async def _each(self, commands: list[tuple[str, bytes]]) -> list[Any]:
        """Send each command to its key's client, one pipelined write per client."""
        by_client: dict[int, tuple[RedisClient, list[int]]] = {}
        for index, (key, _) in enumerate(commands):
            client = self.clients(key)
            by_client.setdefault(id(client), (client, []))[1].append(index)
        replies: list[Any] = [None] * len(commands)
        for client, indexes in by_client.values():
            answers = await client.send(b"".join(commands[i][1] for i in indexes), len(indexes))
            for i, answer in zip(indexes, answers, strict=True):
                if isinstance(answer, ResponseError):
                    raise HaiveError(
                        f"partition lease command on {commands[i][0]!r} failed: {answer}"
                    )
                replies[i] = answer
        return replies
