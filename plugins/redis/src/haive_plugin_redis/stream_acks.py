"""Acknowledging what a :class:`~haive_plugin_redis.streams.RedisStreamSource` read.

The pipeline calls :meth:`_AcksMixin.acknowledge` once the oldest items yielded are
handled (written, dead-lettered or filtered out). At least once, that is one ``XACK`` of
their IDs (with the IDs of entries that yielded no item); exactly once, the whole epoch is
committed (:mod:`.stream_exactly_once`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from haive.dataflow.errors import ConfigError

from ._resp import pack_ids
from .stream_wire import _XACK_CHUNK, _check_replies

if TYPE_CHECKING:
    from .client import RedisClient
    from .stream_stats import StreamSourceStats
    from .stream_unacked import UnackedEntries


class _AcksMixin:
    """Part of :class:`~haive_plugin_redis.streams.RedisStreamSource`: acknowledging."""

    if TYPE_CHECKING:
        stream: str
        group: str
        client: RedisClient
        stats: StreamSourceStats
        _unacked: UnackedEntries
        _ack_requested: bool

        @property
        def exactly_once(self) -> bool: ...

        async def _commit(self) -> None: ...

    # -- acknowledging ------------------------------------------------------------------
    async def acknowledge(self, count: int) -> None:
        """The oldest ``count`` items yielded are handled: XACK them (or commit the epoch)."""
        unacked = self._unacked
        if count < 0 or count > unacked.item_count:
            raise ConfigError(
                f"acknowledge({count}): only {unacked.item_count} items are unacknowledged"
            )
        self._ack_requested = False
        if self.exactly_once:
            if count != unacked.item_count:
                raise ConfigError(
                    f"exactly_once commits whole epochs: acknowledge({count}) while "
                    f"{unacked.item_count} items are unacknowledged"
                )
            await self._commit()
            return
        # Forget the IDs only once the XACK went through: a run stopped mid-XACK still
        # counts them as left pending (``stats.left_pending``).
        covered = unacked.oldest(count)
        await self._xack(unacked.unkept(covered.ids))
        unacked.forget(covered)

    async def _settle_unyielded(self) -> None:
        """Acknowledge batches that yielded no item (all dead-lettered or gone)."""
        if self.exactly_once:
            await self._commit()
        else:
            # (No items are held: only entries that yielded none.)
            await self._xack(self._unacked.drain())

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
