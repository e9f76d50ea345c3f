"""Claiming the pending entries of consumers that died, so their work moves to the living.

At least once: ``XAUTOCLAIM`` of entries idle for ``claim_idle``. Exactly once:
``XAUTOCLAIM`` does not say whose entries it took, and a slow-but-alive owner must be
fenced off before its entries change hands, so the claimer lists idle entries with
``XPENDING`` and, in one ``MULTI/EXEC``, bumps every previous owner's fence key and
``XCLAIM``\\ s them: the owner's next commit, which ``WATCH``\\ es its fence key, aborts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

from haive.dataflow.errors import HaiveError

from ._resp import pack

if TYPE_CHECKING:
    from .client import RedisClient
    from .stream_unacked import UnackedEntries

#: How long a fence key outlives its last bump (a week).
_FENCE_TTL_MS = 7 * 24 * 3600 * 1000


class _ClaimsMixin:
    """Part of :class:`~haive_plugin_redis.streams.RedisStreamSource`: claiming."""

    if TYPE_CHECKING:
        stream: str
        group: str
        consumer: str
        client: RedisClient
        claim_idle: float
        _claim_cursor: bytes
        _next_claim: float
        _unacked: UnackedEntries

        def fence_key(self, consumer: str | None = None) -> str: ...

    async def _autoclaim(self, count: int) -> list[Any]:
        reply = await self.client.send(
            pack(
                "XAUTOCLAIM",
                self.stream,
                self.group,
                self.consumer,
                max(1, round(self.claim_idle * 1000)),
                self._claim_cursor,
                "COUNT",
                count,
            ),
            1,
        )
        result = reply[0]
        if isinstance(result, ResponseError):
            raise HaiveError(f"XAUTOCLAIM on {self.stream!r} failed: {result}")
        cursor, entries = result[0], result[1]
        self._claim_cursor = cursor
        if cursor != b"0-0":
            self._next_claim = 0.0  # more to scan: continue at the next read
        return [entry for entry in entries if entry is not None]

    async def _claim_fenced(self, count: int) -> list[Any]:
        idle_ms = max(1, round(self.claim_idle * 1000))
        reply = await self.client.send(
            pack(
                "XPENDING", self.stream, self.group, "IDLE", idle_ms, self._claim_cursor, "+", count
            ),
            1,
        )
        rows = reply[0]
        if isinstance(rows, ResponseError):
            raise HaiveError(f"XPENDING on {self.stream!r} failed: {rows}")
        if len(rows) < count:
            self._claim_cursor = b"-"
        else:
            self._claim_cursor = b"(" + rows[-1][0]
            self._next_claim = 0.0
        me = self.consumer.encode()
        # Its own entries this consumer left pending after a failure (on_failure=
        # "redeliver") are claimed again like a dead consumer's, without a fence.
        claim = [row for row in rows if row[1] != me or self._unacked.is_kept(row[0])]
        if not claim:
            return []
        owners = sorted({row[1].decode() for row in claim if row[1] != me})
        commands = [pack("MULTI")]
        for owner in owners:
            fence = self.fence_key(owner)
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
