"""Dead letters a console can browse and replay.

A single ``haive run`` process keeps the dead letters its pipeline emits in a bounded
:class:`DeadLetterStore`, fed by the pipeline's failure observer
(``StreamingPipeline.observe_failures``): it sees every failure once the dead-letter sink (or
the acknowledging source's ``reject``) took it, and changes nothing of where it goes.
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

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
        >>> letter.to_dict()["id"]
        '7'
    """

    id: int | str
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
            "id": str(self.id),
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

    def observe(self, failed: list[Any]) -> None:
        """The failure observer: keep failed results (``Result``), as their records."""
        self.add(result.to_dict() for result in failed)

    def add(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Keep failed results' records (``Result.to_dict()``), evicting the oldest."""
        for record in records:
            letter_id = next(self._ids)
            self._letters[letter_id] = DeadLetter.from_record(letter_id, record)
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
            self._letters[int(letter.id)] = letter
        self._letters = OrderedDict(sorted(self._letters.items()))


class LocalDeadLetters:
    """A :class:`DeadLetterStore` as the console's dead letters: replay feeds the payloads
    into the running pipeline's input (``PipelineRun.inject``).

    Example::

        >>> import trio
        >>> store = DeadLetterStore()
        >>> store.add([{"data": 5, "error": {"type": "E", "message": "m", "node": "n"}}])
        >>> letters = LocalDeadLetters(store)
        >>> [d.payload for d in trio.run(letters.find_all)]
        [5]
    """

    def __init__(self, store: DeadLetterStore) -> None:
        self.store = store

    async def find_all(self) -> list[DeadLetter]:
        return self.store.find()

    async def find(
        self, *, node: str | None, error: str | None, offset: int, limit: int
    ) -> list[DeadLetter]:
        return self.store.find(node=node, error=error, offset=offset, limit=limit)

    async def get(self, letter_id: str) -> DeadLetter | None:
        return self.store.get(int(letter_id)) if letter_id.isdigit() else None

    async def count(self) -> int:
        return len(self.store)

    async def replay(self, ids: list[str], run: Any) -> tuple[list[str], list[str]]:
        """Feed the letters into ``run``; they leave the store, or go back to it (and the
        error propagates) when the input refuses them."""
        wanted = [int(i) for i in ids if i.isdigit()]
        letters = self.store.take(wanted)
        try:
            await run.inject([d.payload for d in letters])
        except BaseException:
            self.store.put_back(letters)
            raise
        replayed = [str(d.id) for d in letters]
        return replayed, [i for i in ids if i not in replayed]
