"""Acknowledging what a :class:`~haive_plugin_redis.streams.RedisStreamSource` read.

The pipeline calls :meth:`_AcksMixin.acknowledge` once the oldest items yielded are
handled (written, dead-lettered or filtered out). At least once, that is one ``XACK`` of
their IDs (with the IDs of entries that yielded no item); exactly once, the whole epoch is
committed (:mod:`.stream_exactly_once`).
"""

from __future__ import annotations

import itertools
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
        _kept: set[bytes]
        _rejected: set[bytes]

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
        # Forget the IDs only once the XACK went through: a run stopped mid-XACK still
        # counts them as left pending (``stats.left_pending``).
        ids: list[bytes] = []
        left = count
        whole = 0
        partial = 0
        for batch in self._batches:
            take = min(left, len(batch.item_ids))
            ids.extend(itertools.islice(batch.item_ids, take))
            left -= take
            if take < len(batch.item_ids):
                partial = take
                break
            ids.extend(batch.other_ids)
            whole += 1
        await self._xack(self._unkept(ids))
        batches = self._batches
        for _ in range(whole):
            batches.popleft()
        for _ in range(partial):
            batches[0].item_ids.popleft()
            batches[0].items.popleft()
        self._unacked_items -= count

    def _unkept(self, ids: list[bytes]) -> list[bytes]:
        """``ids`` without those left pending for redelivery (``on_failure="redeliver"``)."""
        rejected = self._rejected
        if rejected:
            rejected.difference_update(ids)
        kept = self._kept  # (an ID leaves it when the entry is delivered again)
        if not kept:
            return ids
        return [i for i in ids if i not in kept]

    async def _settle_unyielded(self) -> None:
        """Acknowledge batches that yielded no item (all dead-lettered or gone)."""
        if self.exactly_once:
            await self._commit()
        else:
            ids = [i for batch in self._batches for i in batch.other_ids]
            self._batches.clear()
            await self._xack(self._unkept(ids))

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
