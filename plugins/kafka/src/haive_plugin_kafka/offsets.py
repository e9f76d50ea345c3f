"""Which offsets a Kafka source may commit: what was read, acknowledged, and still owned.

Two objects, shared between trio (the pipeline acknowledging) and the source's
:class:`~haive.dataflow.runtime.bridge.ThreadBridge` thread (``consume``, where
librdkafka runs the rebalance callbacks):

* :class:`UnackedRecords`, used from trio only: the batches yielded and not acknowledged,
  oldest first, each with the messages its items came from (to trace a failed item to its
  record) and the offset to commit per partition once the whole batch is handled.
* :class:`PartitionOwnership`, behind a lock: the partitions assigned now, an *epoch* per
  partition (bumped at every assignment), the offsets acknowledged but not committed, and
  those sent in an asynchronous commit whose answer has not come yet.
  A batch remembers the epoch its partitions had when it was read; acknowledging it later
  commits a partition only if that epoch is still current. A partition revoked in between
  (and maybe assigned again) was re-read from its committed offset, so the stale
  acknowledgment must not move that offset: those records are the uncommitted tail the
  next owner reads again (at-least-once), never a gap.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from typing import Any, overload

import attrs

#: A partition: (topic, partition number).
TopicPartitionKey = tuple[str, int]


class RecordView:
    """One record of a :class:`RecordColumns`, read like a confluent-kafka ``Message``
    (``topic()``, ``partition()``, ``offset()``, ``key()``, ``value()``, ``headers()``):
    what dead letters and partial acknowledgments need of a record.

    Example::

        >>> columns = RecordColumns("t", [0], [41], [b"k"], [b'{"a": 1}'], [None])
        >>> record = columns[0]
        >>> record.topic(), record.partition(), record.offset(), record.key(), record.value()
        ('t', 0, 41, b'k', b'{"a": 1}')
    """

    __slots__ = ("_columns", "_index")

    def __init__(self, columns: RecordColumns, index: int) -> None:
        self._columns = columns
        self._index = index

    def topic(self) -> str:
        return self._columns.topic_at(self._index)

    def partition(self) -> int:
        return self._columns.partitions[self._index]

    def offset(self) -> int:
        return self._columns.offsets[self._index]

    def key(self) -> bytes | None:
        return self._columns.keys[self._index]  # type: ignore[no-any-return]

    def value(self) -> bytes | None:
        return self._columns.values[self._index]  # type: ignore[no-any-return]

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._columns.headers[self._index]  # type: ignore[no-any-return]


class RecordColumns:
    """A batch of records as columns of plain values (topic, partition, offset, key, value,
    headers), in place of confluent-kafka's ``Message`` objects.

    The source reads each column off the messages in one C loop as soon as ``consume``
    returns them and drops the messages: they are objects the cyclic garbage collector
    tracks, and kept until their batch was acknowledged (thousands at a time, with the
    read-ahead) every collection went through them; bytes, ints and None it does not see.
    ``topic`` is the one topic of every record, or None with ``topics`` per record.
    Indexing gives a :class:`RecordView`; slices and ``del`` work like a list's.

    Example::

        >>> columns = RecordColumns("t", [0, 1, 0], [5, 9, 6], [None] * 3,
        ...                         [b"1", b"2", b"3"], [None] * 3)
        >>> len(columns), columns[2].offset()
        (3, 6)
        >>> head = columns[:2]
        >>> del columns[:2]
        >>> [record.offset() for record in head], len(columns)
        ([5, 9], 1)
    """

    __slots__ = ("headers", "keys", "offsets", "partitions", "topic", "topics", "values")

    def __init__(
        self,
        topic: str | None,
        partitions: list[int],
        offsets: list[int],
        keys: list[Any],
        values: list[Any],
        headers: list[Any],
        topics: list[str] | None = None,
    ) -> None:
        self.topic = topic
        self.topics = topics
        self.partitions = partitions
        self.offsets = offsets
        self.keys = keys
        self.values = values
        self.headers = headers

    def topic_at(self, index: int) -> str:
        if self.topic is not None:
            return self.topic
        assert self.topics is not None
        return self.topics[index]

    def __len__(self) -> int:
        return len(self.offsets)

    @overload
    def __getitem__(self, index: int) -> RecordView: ...
    @overload
    def __getitem__(self, index: slice) -> RecordColumns: ...
    def __getitem__(self, index: int | slice) -> RecordView | RecordColumns:
        if isinstance(index, slice):
            return RecordColumns(
                self.topic,
                self.partitions[index],
                self.offsets[index],
                self.keys[index],
                self.values[index],
                self.headers[index],
                None if self.topics is None else self.topics[index],
            )
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return RecordView(self, index)

    def __delitem__(self, index: slice) -> None:
        for column in (self.partitions, self.offsets, self.keys, self.values, self.headers):
            del column[index]
        if self.topics is not None:
            del self.topics[index]

    def __iter__(self) -> Iterator[RecordView]:
        return (RecordView(self, index) for index in range(len(self)))

    def partition_keys(self) -> list[tuple[str, int]]:
        """The ``(topic, partition)`` of every record, in order."""
        if self.topic is not None:
            topic = self.topic
            return [(topic, partition) for partition in self.partitions]
        assert self.topics is not None
        return list(zip(self.topics, self.partitions, strict=True))

    def select(self, indices: list[int]) -> RecordColumns:
        """The records at ``indices``, in that order."""
        return RecordColumns(
            self.topic,
            [self.partitions[i] for i in indices],
            [self.offsets[i] for i in indices],
            [self.keys[i] for i in indices],
            [self.values[i] for i in indices],
            [self.headers[i] for i in indices],
            None if self.topics is None else [self.topics[i] for i in indices],
        )


@attrs.define(slots=True)
class ReadBatch:
    """One batch yielded: its items, their messages, and per partition the next offset and
    the epoch it was read in (committed once the whole batch is acknowledged)."""

    items: list[Any]
    #: The records the items came from: confluent-kafka messages, or their columns.
    messages: list[Any] | RecordColumns
    #: Next offset (last offset + 1) per partition, over every record of the batch,
    #: including records that yielded no item (dead-lettered when read).
    ends: dict[TopicPartitionKey, tuple[int, int]]


class UnackedRecords:
    """Batches yielded and not acknowledged, oldest first (used from trio, but for
    :meth:`drop_released`).

    Example::

        >>> unacked = UnackedRecords()
        >>> unacked.add(ReadBatch(["a", "b"], ["m0", "m1"], {("t", 0): (12, 1)}))
        >>> unacked.item_count
        2
        >>> unacked.take(2)
        {('t', 0): (12, 1)}
        >>> unacked.item_count
        0
    """

    def __init__(self) -> None:
        self._batches: deque[ReadBatch] = deque()
        self.item_count = 0
        #: Messages of acknowledged batches, dropped by :meth:`drop_released` in the bridge
        #: thread: freeing a librdkafka message takes librdkafka's locks, so freeing them
        #: in trio's thread while ``consume`` runs in the other would stall trio.
        self._released: list[list[Any] | RecordColumns] = []

    def __bool__(self) -> bool:
        return bool(self._batches)

    def add(self, batch: ReadBatch) -> None:
        self._batches.append(batch)
        self.item_count += len(batch.items)

    def take(self, count: int, position: Any = None) -> dict[TopicPartitionKey, tuple[int, int]]:
        """Forget the oldest ``count`` items; return the offsets they let commit.

        A batch covered in part commits its partitions up to the last covered message
        (``position(message)`` gives ``(key, next_offset)``; needed only then).
        """
        ends: dict[TopicPartitionKey, tuple[int, int]] = {}
        batches = self._batches
        while count > 0 or (batches and not batches[0].items):
            batch = batches[0]
            size = len(batch.items)
            if size <= count:
                batches.popleft()
                self._released.append(batch.messages)
                ends.update(batch.ends)
                count -= size
                self.item_count -= size
                continue
            # Part of this batch: its first ``count`` items, through their messages.
            assert position is not None, "a partial acknowledgment needs position="
            epochs = {key: epoch for key, (_, epoch) in batch.ends.items()}
            for message in batch.messages[:count]:
                key, next_offset = position(message)
                ends[key] = (next_offset, epochs[key])
            del batch.items[:count]
            self._released.append(batch.messages[:count])
            del batch.messages[:count]
            self.item_count -= count
            count = 0
        return ends

    def drop_released(self) -> None:
        """Drop the messages of acknowledged batches (called in the bridge thread; the
        swap is atomic, a list released meanwhile is dropped by the next call)."""
        released, self._released = self._released, []
        del released

    def origin(self, item: Any) -> Any:
        """The message ``item`` (an object this source yielded) came from, or None."""
        for batch in self._batches:
            for index, candidate in enumerate(batch.items):
                if candidate is item:
                    return batch.messages[index]
        return None


class PartitionOwnership:
    """The partitions this consumer owns now, their epochs, and acknowledged offsets.

    Updated by the rebalance callbacks in the bridge thread and by acknowledgments from
    trio, under one lock.

    Example::

        >>> owned = PartitionOwnership()
        >>> owned.assign([("t", 0), ("t", 1)])
        >>> epochs = owned.epochs([("t", 0)])
        >>> owned.acknowledged({("t", 0): (10, epochs[("t", 0)])})
        >>> owned.revoke([("t", 0)])          # returns what to commit before giving it up
        {('t', 0): 10}
        >>> owned.assign([("t", 0)])          # assigned again: a new epoch
        >>> owned.acknowledged({("t", 0): (20, epochs[("t", 0)])})   # read before: stale
        >>> owned.take_commits()
        {}
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._epoch = 0
        self._epochs: dict[TopicPartitionKey, int] = {}
        self._pending: dict[TopicPartitionKey, int] = {}
        #: The last offset sent in an asynchronous commit per partition, with the epoch it
        #: was sent in, until its result arrives.
        self._in_flight: dict[TopicPartitionKey, tuple[int, int]] = {}
        #: The highest offset acknowledged per partition in its current epoch, committed or
        #: not: what a final or revoke commit sends, so it also repairs an older commit that
        #: librdkafka retried after a newer one and so moved the group's offset back.
        self._acknowledged: dict[TopicPartitionKey, int] = {}
        #: Asynchronous commits sent whose answer (``on_commit``) has not come yet.
        self.outstanding = 0
        #: Acknowledgments dropped because their partition was revoked since (stale).
        self.stale = 0

    @property
    def assigned(self) -> frozenset[TopicPartitionKey]:
        with self._lock:
            return frozenset(self._epochs)

    def assign(self, partitions: list[TopicPartitionKey]) -> None:
        with self._lock:
            for key in partitions:
                self._epoch += 1
                self._epochs[key] = self._epoch
                self._in_flight.pop(key, None)
                self._acknowledged.pop(key, None)

    def epochs(self, keys: Any) -> dict[TopicPartitionKey, int]:
        """The current epoch of each of ``keys`` (0 for a partition not owned)."""
        with self._lock:
            get = self._epochs.get
            return {key: get(key, 0) for key in keys}

    def moved(self, ends: dict[TopicPartitionKey, tuple[int, int]]) -> set[TopicPartitionKey]:
        """The partitions of ``ends`` (``(next offset, epoch)`` each) whose epoch is no
        longer current: revoked (or lost) since they were read."""
        with self._lock:
            epochs = self._epochs
            return {key for key, (_, epoch) in ends.items() if epochs.get(key) != epoch}

    def acknowledged(self, ends: dict[TopicPartitionKey, tuple[int, int]]) -> None:
        """Record offsets whose records are handled; stale epochs are dropped."""
        with self._lock:
            epochs, pending, high = self._epochs, self._pending, self._acknowledged
            for key, (next_offset, epoch) in ends.items():
                if epochs.get(key) != epoch:
                    self.stale += 1
                    continue
                if next_offset > pending.get(key, -1):
                    pending[key] = next_offset
                if next_offset > high.get(key, -1):
                    high[key] = next_offset

    def take_commits(self) -> dict[TopicPartitionKey, int]:
        """The acknowledged offsets to commit now (forgotten here; give them back with
        :meth:`restore` if the commit fails)."""
        with self._lock:
            pending, self._pending = self._pending, {}
            return pending

    def restore(self, offsets: dict[TopicPartitionKey, int]) -> None:
        """Offsets whose commit failed: commit them with the next ones if still owned."""
        with self._lock:
            for key, next_offset in offsets.items():
                if key in self._epochs and next_offset > self._pending.get(key, -1):
                    self._pending[key] = next_offset

    def sent(self, offsets: dict[TopicPartitionKey, int]) -> None:
        """``offsets`` (from :meth:`take_commits`) went out in an asynchronous commit."""
        with self._lock:
            get = self._epochs.get
            for key, next_offset in offsets.items():
                self._in_flight[key] = (next_offset, get(key, 0))
            self.outstanding += 1

    def commit_result(self, key: TopicPartitionKey, next_offset: int, failed: bool) -> bool:
        """The broker's answer to an asynchronous commit of ``next_offset``. A failed commit
        is given back (committed with the next ones) only if it is the last one sent for
        the partition in the epoch still current: a later commit carries a later offset,
        and a partition revoked since is read again from its committed offset. Returns
        whether it was given back."""
        with self._lock:
            flight = self._in_flight.get(key)
            if flight is None or flight[0] != next_offset:
                return False  # a later commit for this partition is on its way
            del self._in_flight[key]
            if not failed or self._epochs.get(key) != flight[1]:
                return False
            if next_offset > self._pending.get(key, -1):
                self._pending[key] = next_offset
            return True

    def answered(self) -> None:
        """An asynchronous commit got its answer, or was refused before it was sent."""
        with self._lock:
            self.outstanding -= 1

    def take_final(self) -> dict[TopicPartitionKey, int]:
        """The highest offset acknowledged for every partition still owned, committed or
        not, for the synchronous commit when the consumer closes (sent once no asynchronous
        commit is outstanding, so none lands after it)."""
        with self._lock:
            owned = self._epochs
            final = {key: offset for key, offset in self._acknowledged.items() if key in owned}
            # Forgotten: the revoke callback that closing the consumer runs commits nothing
            # more (a commit there, while the member leaves, is one round trip for nothing).
            self._pending, self._in_flight, self._acknowledged = {}, {}, {}
            return final

    def revoke(self, partitions: list[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        """Give ``partitions`` up; returns the highest offset acknowledged for each in its
        current epoch: the revoke callback commits them before the next owner starts."""
        with self._lock:
            commits = {}
            for key in partitions:
                self._epochs.pop(key, None)
                self._in_flight.pop(key, None)
                self._pending.pop(key, None)
                high = self._acknowledged.pop(key, None)
                if high is not None:
                    commits[key] = high
            return commits

    def lose(self, partitions: list[TopicPartitionKey]) -> None:
        """``partitions`` were taken away without a chance to commit (session lost)."""
        with self._lock:
            for key in partitions:
                self._epochs.pop(key, None)
                self._pending.pop(key, None)
                self._in_flight.pop(key, None)
                self._acknowledged.pop(key, None)
