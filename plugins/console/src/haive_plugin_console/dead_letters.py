"""Dead letters a console can browse and replay.

A single ``haive run`` process keeps the dead letters its pipeline emits in a bounded
:class:`DeadLetterStore`: :class:`RecordingDeadLetterSink` is set as the pipeline's dead-letter
sink (wrapping the one the pipeline had, which still gets every record first).
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from haive.dataflow.io.sinks import StreamSink
from haive.dataflow.runtime.validation import POSITIVE_INT


@attrs.frozen
class DeadLetter:
    """One failed item: its payload and why it failed.

    ``payload`` is the item as the failing node received it; ``node`` the node that failed
    (``None`` when unknown); ``time`` a wall-clock Unix time.

    Example::

        >>> letter = DeadLetter.from_record(7, {"success": False, "data": {"n": 1},
        ...     "error": {"type": "ValueError", "message": "bad n", "node": "parse", "attempts": 2}})
        >>> letter.node, letter.error_type, letter.reason, letter.to_dict()["payload"]
        ('parse', 'ValueError', 'bad n', {'n': 1})
    """

    id: int
    payload: Any
    node: str | None
    error_type: str
    reason: str
    attempts: int = 1
    time: float = attrs.field(factory=time.time)

    @classmethod
    def from_record(cls, letter_id: int, record: Mapping[str, Any]) -> DeadLetter:
        """From a failed result's ``to_dict()`` (what the core writes to dead-letter sinks)."""
        error = record.get("error")
        if not isinstance(error, Mapping):
            error = {}
        node = error.get("node")
        attempts = error.get("attempts")
        return cls(
            id=letter_id,
            payload=record.get("data"),
            node=str(node) if node is not None else None,
            error_type=str(error.get("type", "unknown")),
            reason=str(error.get("message", "")),
            attempts=attempts if isinstance(attempts, int) else 1,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "payload": self.payload,
            "node": self.node,
            "error_type": self.error_type,
            "reason": self.reason,
            "attempts": self.attempts,
            "time": self.time,
        }


class DeadLetterStore:
    """The last ``capacity`` dead letters of one pipeline, oldest evicted first.

    Example::

        >>> store = DeadLetterStore(capacity=2)
        >>> store.add([{"data": i, "error": {"type": "E", "message": "m", "node": "n"}}
        ...            for i in range(3)])
        >>> [d.payload for d in store.find()], store.evicted
        ([1, 2], 1)
        >>> [d.payload for d in store.take([1, 99])], len(store)
        ([1], 1)
    """

    def __init__(self, capacity: int = 1000) -> None:
        POSITIVE_INT.check("DeadLetterStore", "capacity", capacity)
        self.capacity = capacity
        self._letters: OrderedDict[int, DeadLetter] = OrderedDict()
        self._ids = itertools.count()
        #: Dead letters forgotten because the store was full.
        self.evicted = 0
        #: Dead letters recorded since the store was created.
        self.recorded = 0

    def __len__(self) -> int:
        return len(self._letters)

    def add(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Keep failed results' records (``Result.to_dict()``), evicting the oldest."""
        for record in records:
            letter = DeadLetter.from_record(next(self._ids), record)
            self._letters[letter.id] = letter
            self.recorded += 1
            if len(self._letters) > self.capacity:
                self._letters.popitem(last=False)
                self.evicted += 1

    def get(self, letter_id: int) -> DeadLetter | None:
        return self._letters.get(letter_id)

    def find(
        self,
        *,
        node: str | None = None,
        error: str | None = None,
        offset: int = 0,
        limit: int | None = None,
    ) -> list[DeadLetter]:
        """Dead letters, oldest first, of ``node`` and whose error type or reason contains
        ``error`` (case-insensitive)."""
        needle = error.lower() if error else None
        found = [
            letter
            for letter in self._letters.values()
            if (node is None or letter.node == node)
            and (
                needle is None
                or needle in letter.error_type.lower()
                or needle in letter.reason.lower()
            )
        ]
        end = None if limit is None else offset + limit
        return found[offset:end]

    def count(self, *, node: str | None = None, error: str | None = None) -> int:
        return len(self.find(node=node, error=error))

    def take(self, ids: Iterable[int]) -> list[DeadLetter]:
        """Remove and return the dead letters with these ids (unknown ids are skipped)."""
        return [self._letters.pop(i) for i in ids if i in self._letters]

    def put_back(self, letters: Iterable[DeadLetter]) -> None:
        """Return taken letters (a replay that could not be fed), keeping their ids."""
        for letter in letters:
            self._letters[letter.id] = letter
        self._letters = OrderedDict(sorted(self._letters.items()))


class RecordingDeadLetterSink(StreamSink):
    """A dead-letter sink that keeps what it gets in a :class:`DeadLetterStore`, after
    writing it to ``inner`` (the pipeline's own dead-letter sink) when there is one.

    Example::

        >>> import trio
        >>> from haive.dataflow import StreamingPipeline
        >>> from haive.dataflow.builtins.sources import IterableSource
        >>> pipeline = StreamingPipeline("doc")
        >>> pipeline.set_source(IterableSource([1, 0, 2]))
        >>> pipeline.add_processor(lambda x: 1 // x)
        >>> store = DeadLetterStore()
        >>> pipeline.set_dead_letter_sink(RecordingDeadLetterSink(store))
        >>> report = trio.run(pipeline.execute)
        >>> [(d.payload, d.error_type) for d in store.find()]
        [(0, 'ZeroDivisionError')]
    """

    def __init__(self, store: DeadLetterStore, inner: StreamSink | None = None) -> None:
        self.store = store
        self.inner = inner

    async def open(self) -> None:
        if self.inner is not None:
            await self.inner.open()

    async def aclose(self) -> None:
        if self.inner is not None:
            await self.inner.aclose()

    async def write_batch(self, items: list[Any]) -> None:
        # The pipeline's own dead-letter sink first: the store only shows what it accepted.
        if self.inner is not None:
            await self.inner.write_batch(items)
        self.store.add(item for item in items if isinstance(item, Mapping))
