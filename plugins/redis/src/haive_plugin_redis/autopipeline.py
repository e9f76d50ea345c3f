"""Auto-pipelining: commands issued while a round trip is in flight share the next one.

A lone command goes out at once (one round trip, no added delay). While ``pipelines``
round trips are in flight, further commands wait in a bounded queue; when a round trip
ends, everything queued goes out in ONE write on one connection and every caller gets
its own reply (replies come back in the order the commands were written). The caller
that finds a free round trip "leads" it; when it ends it hands the lead to the head of
the queue, so no background task is needed and no caller leads forever.

Cancellation never desynchronises a connection: a round trip, once its commands are
taken from the queue, runs shielded to the end (all replies read); a caller cancelled
after its command was sent just drops its reply, one cancelled before drops its command.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from redis.exceptions import ResponseError

from haive.dataflow.errors import ConfigError


class _Command:
    # No trio.Event per command: its caller parks itself (``task``) and is rescheduled
    # directly, one step per command instead of an Event's parking lot and set of waiters
    # (64 writers: 30 commands per round trip, all woken in one pass).
    __slots__ = ("done", "error", "lead", "packed", "reply", "task")

    def __init__(self, packed: bytes) -> None:
        self.packed = packed
        self.reply: Any = None
        self.error: BaseException | None = None
        self.done = False
        self.lead = False  # woken to lead the next round trip
        #: The caller while it is parked waiting (None otherwise).
        self.task: trio.lowlevel.Task | None = None

    async def wait(self) -> None:
        """Park until :meth:`wake` (cancellable)."""
        self.task = trio.lowlevel.current_task()

        def abort(_: Any) -> trio.lowlevel.Abort:
            self.task = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def wake(self) -> None:
        """Reschedule the caller if it is parked (else it sees ``done``/``lead`` itself)."""
        task = self.task
        if task is not None:
            self.task = None
            trio.lowlevel.reschedule(task)


class AutoPipeline:
    """Coalesce concurrent single commands into pipelined round trips.

    ``roundtrip(packed, n)`` is a blocking function (run in a worker thread) that writes
    ``packed`` (``n`` RESP commands) on one connection and returns the ``n`` replies in
    order, an error reply as a :class:`~redis.exceptions.ResponseError` in the list.
    ``send``, when given, is the same as an async function, awaited in trio instead (no
    thread per round trip). ``limiter`` is held for each round trip (the connection
    pool's limiter).

    Example::

        >>> from haive_plugin_redis._resp import pack
        >>> from haive_plugin_redis.client import RedisClient
        >>> async def main():
        ...     client = RedisClient(pool_size=2)
        ...     pipe = AutoPipeline(client._send, client.limiter, buffer_size=64)
        ...     replies = []
        ...     async def echo(i):
        ...         replies.append(await pipe.execute(pack("ECHO", i)))
        ...     try:
        ...         async with trio.open_nursery() as nursery:
        ...             for i in range(10):
        ...                 nursery.start_soon(echo, i)
        ...     finally:
        ...         client.close()
        ...     return sorted(int(r) for r in replies), pipe.round_trips < 10
        >>> trio.run(main)
        ([0, 1, 2, 3, 4, 5, 6, 7, 8, 9], True)
    """

    def __init__(
        self,
        roundtrip: Callable[[bytes, int], list[Any]],
        limiter: trio.CapacityLimiter,
        *,
        buffer_size: int = 1024,
        pipelines: int = 1,
        send: Callable[[bytes, int], Awaitable[list[Any]]] | None = None,
    ) -> None:
        for name, value in (("buffer_size", buffer_size), ("pipelines", pipelines)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"AutoPipeline({name}={value!r}): {name} must be an int >= 1")
        self._roundtrip = roundtrip
        #: The same round trip done from trio (RedisClient's trio-driven connections), called
        #: with ``limiter`` held; without it ``roundtrip`` runs in a worker thread.
        self._send = send
        self._limiter = limiter
        self.buffer_size = buffer_size
        self.pipelines = pipelines
        self._threads = trio.CapacityLimiter(pipelines)
        self._queue: deque[_Command] = deque()
        self._space = trio.lowlevel.ParkingLot()
        self._in_flight = 0
        #: Round trips made and commands sent (how well commands were coalesced).
        self.round_trips = 0
        self.commands = 0

    def __repr__(self) -> str:
        return f"AutoPipeline(buffer_size={self.buffer_size}, pipelines={self.pipelines})"

    async def execute(self, packed: bytes) -> Any:
        """Send one RESP-packed command; its raw reply (an error reply is raised)."""
        command = _Command(packed)
        while len(self._queue) >= self.buffer_size:  # bounded: wait for the next write
            await self._space.park()
        self._queue.append(command)
        try:
            if self._in_flight < self.pipelines:
                await self._lead()  # nothing in the way: the command goes out at once
            while not command.done:
                if not command.lead:  # (a lead handed over while it was busy: no park)
                    await command.wait()
                if command.lead and not command.done:
                    command.lead = False
                    await self._lead()
        except BaseException:
            if not command.done:
                try:
                    self._queue.remove(command)  # not sent yet: drop the command
                    self._space.unpark()
                except ValueError:
                    pass  # already written: its reply is read with the others and dropped
            self._wake_next()
            raise
        if command.error is not None:
            raise command.error
        return command.reply

    async def _lead(self) -> None:
        """Send everything queued in one round trip (if a round trip is free)."""
        if self._in_flight >= self.pipelines or not self._queue:
            return
        self._in_flight += 1
        try:
            async with self._limiter:  # cancellable: nothing taken from the queue yet
                if not self._queue:
                    return
                batch = list(self._queue)
                self._queue.clear()
                self._space.unpark_all()
                self.round_trips += 1
                self.commands += len(batch)
                packed = b"".join(command.packed for command in batch)
                with trio.CancelScope(
                    shield=True
                ):  # every reply read: the connection stays in sync
                    try:
                        if self._send is not None:
                            replies = await self._send(packed, len(batch))
                        else:
                            replies = await trio.to_thread.run_sync(
                                self._roundtrip, packed, len(batch), limiter=self._threads
                            )
                    except Exception as exc:  # the connection broke: every caller sees it
                        for command in batch:
                            command.error = exc
                    else:
                        for command, reply in zip(batch, replies, strict=True):
                            if isinstance(reply, ResponseError):
                                command.error = reply
                            else:
                                command.reply = reply
                for command in batch:
                    command.done = True
                    command.wake()
        finally:
            self._in_flight -= 1
            self._wake_next()

    def _wake_next(self) -> None:
        """Hand the lead to the oldest queued command when a round trip is free."""
        if self._queue and self._in_flight < self.pipelines:
            head = self._queue[0]
            if not head.lead:
                head.lead = True
                head.wake()
