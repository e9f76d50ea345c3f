"""The webhook source's bounded buffer: accepted requests waiting for the pipeline.

A request's events are accepted all together or not at all (:meth:`Intake.offer`), and only
while they fit in the free capacity: a full intake makes the endpoint answer 429, so the
callers wait instead of the worker's memory growing. The source's reading task takes events
out in batches (:meth:`Intake.take`); until then they count against the capacity.

Example::

    >>> import trio
    >>> intake = Intake(3)
    >>> intake.offer(["a", "b"], None), intake.offer(["c", "d"], None), intake.free
    (True, False, 1)
    >>> async def main():
    ...     taken, tickets = await intake.take(10)
    ...     intake.close()
    ...     return taken, await intake.take(10)
    >>> trio.run(main)
    (['a', 'b'], None)
"""

from __future__ import annotations

from collections import deque
from typing import Any

import attrs
import trio

COALESCE_PASSES = 16  # scheduler passes at most before a batch is taken (see Intake.take)


@attrs.define(eq=False)
class Ticket:
    """One request accepted with ``ack="written"``: its answer waits for its events.

    ``remaining`` counts its events not yet acknowledged by the pipeline; ``done`` is set
    when none remain (or when the source closes first, with ``error`` saying why).
    ``failures`` lists ``(index, reason)`` of events that failed in the pipeline.

    Example::

        >>> ticket = Ticket(size=2, remaining=2)
        >>> ticket.settle(1); ticket.done.is_set()
        False
        >>> ticket.settle(1); ticket.done.is_set()
        True
    """

    size: int
    remaining: int
    done: trio.Event = attrs.field(factory=trio.Event)
    failures: list[tuple[int, str]] = attrs.field(factory=list)
    error: str | None = None

    def settle(self, count: int) -> None:
        """``count`` more of its events are handled."""
        self.remaining -= count
        if self.remaining <= 0:
            self.done.set()

    def abandon(self, reason: str) -> None:
        """Answer now: the events were not (all) written."""
        if not self.done.is_set():
            self.error = self.error or reason
            self.done.set()


class Intake:
    """At most ``capacity`` events, in requests, waiting for the pipeline (one reader).

    Example::

        >>> intake = Intake(2)
        >>> intake.offer([1, 2, 3], None), intake.offer([1], None), intake.free
        (False, True, 1)
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.size = 0
        self.closed = False
        self._requests: deque[tuple[list[Any], Ticket | None]] = deque()
        self._taken_of_first = 0  # events of the first request already taken
        self._wakeup = trio.Event()

    @property
    def free(self) -> int:
        return self.capacity - self.size

    def offer(self, events: list[Any], ticket: Ticket | None) -> bool:
        """Accept all of ``events`` if they fit and the intake is open; else nothing."""
        if self.closed or len(events) > self.capacity - self.size:
            return False
        self._requests.append((events, ticket))
        self.size += len(events)
        self._wakeup.set()
        return True

    def close(self) -> None:
        """Accept nothing more; :meth:`take` returns what is left, then None."""
        self.closed = True
        self._wakeup.set()

    async def take(self, limit: int) -> tuple[list[Any], list[tuple[Ticket, int]]] | None:
        """Up to ``limit`` events, oldest first, with the tickets they belong to and how
        many of each ticket's events are in the batch; waits while the intake is empty
        and open; None once it is closed and empty."""
        while not self.size:
            if self.closed:
                return None
            self._wakeup = trio.Event()
            await self._wakeup.wait()
        # Let the requests already being handled land first: each scheduler pass runs every
        # ready task once (and polls the sockets), so while passes keep adding events the
        # batch grows. A pipeline batch costs several task switches whatever its size, so
        # under load this turns one batch per request into one per burst; when nothing else
        # is ready, one pass and the event goes at once.
        size = -1
        passes = 0
        while self.size != size and self.size < limit and passes < COALESCE_PASSES:
            size = self.size
            passes += 1
            await trio.lowlevel.checkpoint()
        taken: list[Any] = []
        tickets: list[tuple[Ticket, int]] = []
        requests = self._requests
        while requests and len(taken) < limit:
            events, ticket = requests[0]
            start = self._taken_of_first
            part = events[start : start + limit - len(taken)]
            taken.extend(part)
            if ticket is not None:
                tickets.append((ticket, len(part)))
            if start + len(part) == len(events):
                requests.popleft()
                self._taken_of_first = 0
            else:
                self._taken_of_first = start + len(part)
        self.size -= len(taken)
        return taken, tickets

    def abandon_all(self, reason: str) -> int:
        """Drop what is left (the source is closing); answer its tickets. Returns the count."""
        dropped = self.size
        for _, ticket in self._requests:
            if ticket is not None:
                ticket.abandon(reason)
        self._requests.clear()
        self._taken_of_first = 0
        self.size = 0
        return dropped
