"""Acknowledging what a :class:`~haive_plugin_redis.streams.RedisStreamSource` read.

The pipeline calls :meth:`_AcksMixin.acknowledge` once the oldest items yielded are
handled (written, dead-lettered or filtered out). At least once, that is one ``XACK`` of
their IDs (with the IDs of entries that yielded no item); exactly once, the whole epoch is
committed (:mod:`.stream_exactly_once`).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from haive.dataflow.errors import ConfigError

from ._resp import pack_ids
from .stream_wire import _XACK_CHUNK, _check_replies

if TYPE_CHECKING:
    from .client import RedisClient
    from .stream_reading import _Batch
    from .streams import StreamSourceStats


class _AcksMixin:
    """Part of :class:`~haive_plugin_redis.streams.RedisStreamSource`: acknowledging."""

    if TYPE_CHECKING:
        stream: str
        group: str
        client: RedisClient
        stats: StreamSourceStats
        _batches: deque[_Batch]
        _unacked_items: int
        _ack_requested: bool

        @property
        def exactly_once(self) -> bool: ...

        async def _commit(self) -> None: ...

    # -- acknowledging ------------------------------------------------------------------
    async def acknowledge(self, count: int) -> None:
        """The oldest ``count`` items yielded are handled: XACK them (or commit the epoch)."""
        if count < 0 or count > self._unacked_items:
            raise ConfigError(
                f"acknowledge({count}): only {self._unacked_items} items are unacknowledged"
            )
        self._ack_requested = False
        if self.exactly_once:
            if count != self._unacked_items:
                raise ConfigError(
                    f"exactly_once commits whole epochs: acknowledge({count}) while "
                    f"{self._unacked_items} items are unacknowledged"
                )
            await self._commit()
            return
        ids: list[bytes] = []
        left = count
        batches = self._batches
        while batches:
            batch = batches[0]
            take = min(left, len(batch.item_ids))
            for _ in range(take):
                ids.append(batch.item_ids.popleft())
            left -= take
            if batch.item_ids:
                break
            ids.extend(batch.other_ids)
            batches.popleft()
        self._unacked_items -= count
        await self._xack(ids)

    async def _settle_unyielded(self) -> None:
        """Acknowledge batches that yielded no item (all dead-lettered or gone)."""
        if self.exactly_once:
            await self._commit()
        else:
            ids = [i for batch in self._batches for i in batch.other_ids]
            self._batches.clear()
            await self._xack(ids)

    async def _xack(self, ids: list[bytes]) -> None:
        if not ids:
            return
        commands = [
            pack_ids(("XACK", self.stream, self.group), ids[i : i + _XACK_CHUNK])
            for i in range(0, len(ids), _XACK_CHUNK)
        ]
        _check_replies(
            await self.client.send(b"".join(commands), len(commands)), f"XACK on {self.stream!r}"
        )
        self.stats.acknowledged += len(ids)
