"""What a :class:`~haive_plugin_redis.streams.RedisStreamSource` read and has not acknowledged.

The reader records every batch it reads in :class:`UnackedEntries`: the IDs of the entries
it yielded as items (with the items, so that a failure reported later can be traced to its
entry) and the IDs of entries that yielded none (dead-lettered, trimmed). The acknowledger
takes the oldest IDs from it once their items are handled, the exactly-once committer takes
them all with the epoch, and the failure handler marks entries left pending for redelivery
(*kept*: never acknowledged until delivered again) or already traced to a failure
(*rejected*: traced once per epoch).
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable
from typing import Any, NamedTuple

import attrs


@attrs.define
class _Batch:
    """IDs read in one batch: those yielded as items, and the rest (dead letters, gone).

    ``items`` are the yielded items themselves, in the order of ``item_ids``, so that a
    failure reported later (``reject``) can be traced to its entry.
    """

    item_ids: deque[bytes]
    other_ids: list[bytes]
    items: deque[Any]


class AckRange(NamedTuple):
    """The entry IDs covering the oldest items, and where they end in the batches."""

    ids: list[bytes]
    #: Batches wholly covered, and items of the next one covered.
    whole: int
    partial: int
    #: How many items they cover.
    items: int


class UnackedEntries:
    """Entries read and not acknowledged yet, oldest batch first.

    Example::

        >>> from collections import deque
        >>> unacked = UnackedEntries()
        >>> unacked.add(deque([b"1-0", b"2-0"]), [b"3-0"], deque(["a", "b"]))
        >>> unacked.item_count, unacked.left_pending()
        (2, 3)
        >>> covered = unacked.oldest(1)
        >>> covered.ids
        [b'1-0']
        >>> unacked.forget(covered)
        >>> unacked.drain()
        [b'2-0', b'3-0']
        >>> unacked.item_count, bool(unacked)
        (0, False)
    """

    def __init__(self) -> None:
        self._batches: deque[_Batch] = deque()
        #: Items yielded and not acknowledged (the sum of the batches' ``item_ids``).
        self.item_count = 0
        #: Failed entries left pending for redelivery (kept out of acknowledgments until
        #: delivered again), and entries already traced to a failure this epoch.
        self._kept: set[bytes] = set()
        self._rejected: set[bytes] = set()

    def __repr__(self) -> str:
        return f"UnackedEntries({len(self._batches)} batches, {self.item_count} items)"

    def __bool__(self) -> bool:
        """Whether any batch is held (with items or not)."""
        return bool(self._batches)

    def add(self, item_ids: deque[bytes], other_ids: list[bytes], items: deque[Any]) -> None:
        """Record one batch read: the IDs of its items (with them), and of the other entries."""
        self._batches.append(_Batch(item_ids, other_ids, items))
        self.item_count += len(items)

    def delivered_again(self, ids: Iterable[bytes]) -> None:
        """``ids`` were read again: those kept for redelivery are ordinary entries again."""
        if self._kept:
            self._kept.difference_update(ids)

    def held_ids(self) -> set[bytes]:
        """Every ID held, items or not."""
        return {i for batch in self._batches for i in (*batch.item_ids, *batch.other_ids)}

    def holds_item(self, entry_id: bytes) -> bool:
        """Whether ``entry_id`` yielded an item not acknowledged yet."""
        return any(entry_id in batch.item_ids for batch in self._batches)

    def left_pending(self) -> int:
        """How many entries acknowledging now would cover (items and the others)."""
        return self.item_count + sum(len(batch.other_ids) for batch in self._batches)

    def oldest(self, count: int) -> AckRange:
        """The IDs of the oldest ``count`` items, with those of the entries read among them
        that yielded no item; nothing is forgotten until :meth:`forget`."""
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
        return AckRange(ids, whole, partial, count)

    def forget(self, acked: AckRange) -> None:
        """Forget what :meth:`oldest` returned, once it is acknowledged."""
        batches = self._batches
        for _ in range(acked.whole):
            batches.popleft()
        for _ in range(acked.partial):
            batches[0].item_ids.popleft()
            batches[0].items.popleft()
        self.item_count -= acked.items

    def drain(self) -> list[bytes]:
        """Every ID held, minus those kept for redelivery; forgets them all."""
        ids = self.unkept(
            [i for batch in self._batches for i in (*batch.item_ids, *batch.other_ids)]
        )
        self._batches.clear()
        self.item_count = 0
        return ids

    def unkept(self, ids: list[bytes]) -> list[bytes]:
        """``ids`` without those left pending for redelivery (``on_failure="redeliver"``);
        they are acknowledged, so no longer count as traced to a failure."""
        rejected = self._rejected
        if rejected:
            rejected.difference_update(ids)
        kept = self._kept  # (an ID leaves it when the entry is delivered again)
        if not kept:
            return ids
        return [i for i in ids if i not in kept]

    # -- failures ---------------------------------------------------------------------------
    def origins(self) -> dict[int, list[bytes]]:
        """id() of each unacknowledged item yielded -> its entry IDs (equal small values
        such as ``1`` are one object, hence a list)."""
        origin: dict[int, list[bytes]] = {}
        for batch in self._batches:
            for item, entry_id in zip(batch.items, batch.item_ids, strict=True):
                origin.setdefault(id(item), []).append(entry_id)
        return origin

    def reject(self, entry_id: bytes) -> None:
        """``entry_id`` is traced to a failure (until it is acknowledged)."""
        self._rejected.add(entry_id)

    def is_rejected(self, entry_id: bytes) -> bool:
        return entry_id in self._rejected

    def keep(self, entry_id: bytes) -> None:
        """Leave ``entry_id`` out of acknowledgments until it is delivered again."""
        self._kept.add(entry_id)

    def is_kept(self, entry_id: bytes) -> bool:
        return entry_id in self._kept
