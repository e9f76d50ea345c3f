"""Claiming the pending entries of consumers that died, so their work moves to the living.

At least once: ``XAUTOCLAIM`` of entries idle for ``claim_idle``. Exactly once:
``XAUTOCLAIM`` does not say whose entries it took, and a slow-but-alive owner must be
fenced off before its entries change hands, so the :class:`IdleEntryClaimer` lists idle entries with
``XPENDING`` and, in one ``MULTI/EXEC``, bumps every previous owner's fence key and
``XCLAIM``\\ s them: the owner's next commit, which ``WATCH``\\ es its fence key, aborts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

from haive.dataflow.errors import HaiveError

from ._resp import pack
from .stream_fencing import fence_key

if TYPE_CHECKING:
    from .client import RedisClient
    from .stream_unacked import UnackedEntries

#: How long a fence key outlives its last bump (a week).
_FENCE_TTL_MS = 7 * 24 * 3600 * 1000


class IdleEntryClaimer:
    """Claims a consumer group's entries left pending by other consumers for ``idle`` seconds.

    :meth:`due` says when to claim next (every ``interval``, at once while a scan is
    unfinished); :meth:`claim` takes up to ``count`` entries for ``consumer``: with
    ``XAUTOCLAIM``, or with ``fenced=True`` (exactly once) with ``XPENDING`` + ``XCLAIM`` in
    a ``MULTI/EXEC`` that first bumps each previous owner's fence key. Fenced, this
    consumer's own entries kept for redelivery (``unacked``) are claimed again too.

    Example::

        >>> import uuid
        >>> import trio
        >>> from haive_plugin_redis import RedisClient
        >>> from haive_plugin_redis.stream_unacked import UnackedEntries
        >>> async def main():
        ...     client, stream = RedisClient(), f"doc-{uuid.uuid4().hex}"
        ...     await client.execute("XADD", stream, "1-0", "k", "v")
        ...     await client.execute("XGROUP", "CREATE", stream, "g", "0")
        ...     await client.execute("XREADGROUP", "GROUP", "g", "dead", "STREAMS", stream, ">")
        ...     claimer = IdleEntryClaimer(client, stream, "g", "alive", idle=0.001,
        ...                                interval=30.0, fenced=False, unacked=UnackedEntries())
        ...     await trio.sleep(0.01)
        ...     due = claimer.due(trio.current_time())
        ...     claimed = await claimer.claim(10)
        ...     await client.execute("DEL", stream)
        ...     client.close()
        ...     return due, [entry_id for entry_id, _ in claimed], claimer.due(trio.current_time())
        >>> trio.run(main)
        (True, [b'1-0'], False)
    """

    def __init__(
        self,
        client: RedisClient,
        stream: str,
        group: str,
        consumer: str,
        *,
        idle: float,
        interval: float,
        fenced: bool,
        unacked: UnackedEntries,
    ) -> None:
        self.client = client
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.idle = idle
        self.interval = interval
        self.fenced = fenced
        self.unacked = unacked
        self._cursor = b"-" if fenced else b"0-0"
        self._next_claim = 0.0

    def __repr__(self) -> str:
        return (
            f"IdleEntryClaimer({self.stream!r}, group={self.group!r}, "
            f"consumer={self.consumer!r}, fenced={self.fenced})"
        )

    def due(self, now: float) -> bool:
        """Whether to claim now (then the next claim is ``interval`` later)."""
        if now < self._next_claim:
            return False
        self._next_claim = now + self.interval
        return True

    async def claim(self, count: int) -> list[Any]:
        """Up to ``count`` idle entries of other consumers, now this consumer's."""
        return await (self._claim_fenced(count) if self.fenced else self._autoclaim(count))

    async def _autoclaim(self, count: int) -> list[Any]:
        reply = await self.client.send(
            pack(
                "XAUTOCLAIM",
                self.stream,
                self.group,
                self.consumer,
                max(1, round(self.idle * 1000)),
                self._cursor,
                "COUNT",
                count,
            ),
            1,
        )
        result = reply[0]
        if isinstance(result, ResponseError):
            raise HaiveError(f"XAUTOCLAIM on {self.stream!r} failed: {result}")
        cursor, entries = result[0], result[1]
        self._cursor = cursor
        if cursor != b"0-0":
            self._next_claim = 0.0  # more to scan: continue at the next read
        return [entry for entry in entries if entry is not None]

    async def _claim_fenced(self, count: int) -> list[Any]:
        idle_ms = max(1, round(self.idle * 1000))
        reply = await self.client.send(
            pack(
                "XPENDING", self.stream, self.group, "IDLE", idle_ms, self._cursor, "+", count
            ),
            1,
        )
        rows = reply[0]
        if isinstance(rows, ResponseError):
            raise HaiveError(f"XPENDING on {self.stream!r} failed: {rows}")
        if len(rows) < count:
            self._cursor = b"-"
        else:
            self._cursor = b"(" + rows[-1][0]
            self._next_claim = 0.0
        me = self.consumer.encode()
        # Its own entries this consumer left pending after a failure (on_failure=
        # "redeliver") are claimed again like a dead consumer's, without a fence.
        claim = [row for row in rows if row[1] != me or self.unacked.is_kept(row[0])]
        if not claim:
            return []
        owners = sorted({row[1].decode() for row in claim if row[1] != me})
        commands = [pack("MULTI")]
        for owner in owners:
            fence = fence_key(self.stream, self.group, owner)
            commands.append(pack("INCR", fence))
            commands.append(pack("PEXPIRE", fence, _FENCE_TTL_MS))
        commands.append(
            pack(
                "XCLAIM",
                self.stream,
                self.group,
                self.consumer,
                idle_ms,
                *[row[0] for row in claim],
            )
        )
        commands.append(pack("EXEC"))
        replies = await self.client.send(b"".join(commands), len(commands))
        result = replies[-1]
        if not isinstance(result, list):
            raise HaiveError(f"claiming entries of {owners} on {self.stream!r} failed: {result}")
        claimed = result[-1]
        if isinstance(claimed, ResponseError):
            raise HaiveError(f"XCLAIM on {self.stream!r} failed: {claimed}")
        return [entry for entry in claimed if entry is not None and entry[1] is not None]
