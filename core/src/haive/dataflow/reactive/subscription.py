"""Consumers: :class:`Subscription` (handlers in a task of their own, behind a bounded
buffer), :class:`Subscriber` (a handler object) and :class:`StreamIterator` (``async for``)."""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

import trio

from ..errors import ConfigError
from ..runtime.backpressure import BoundedBuffer, BufferStats
from ._runtime import (
    Ready,
    call,
    check_callable,
    close_pull,
    collapsing_groups,
    is_async_callable,
)
from ._source import PullOptions, Source

if TYPE_CHECKING:
    # Only a type: observable.py imports this module (Observable.subscribe, .iterate).
    from .observable import Observable

T = TypeVar("T")

log = logging.getLogger("haive.dataflow.reactive")

State = Literal["pending", "running", "completed", "failed", "unsubscribed"]


class Subscriber(Generic[T]):
    """A handler object: override ``on_next`` and, if you care, ``on_error`` and
    ``on_completed`` (each sync or async), then ``stream.subscribe(MySubscriber())``.

    Example::

        >>> from haive.dataflow.reactive import Observable
        >>> class Printer(Subscriber):
        ...     def on_next(self, item):
        ...         print("got", item)
        ...     def on_completed(self):
        ...         print("done")
        >>> async def main():
        ...     async with Observable.of(1, 2).subscribe(Printer()) as sub:
        ...         await sub.wait()
        >>> trio.run(main)
        got 1
        got 2
        done
    """

    def on_next(self, item: T) -> Any:
        """Called with every item."""

    def on_error(self, error: BaseException) -> Any:
        """Called once if the stream (or ``on_next``) fails. Not overriding it means the
        error is logged and re-raised by ``wait()`` / ``async with``."""

    def on_completed(self) -> Any:
        """Called once when the stream completes."""


def _overridden(subscriber: Subscriber[Any], name: str) -> Callable[..., Any] | None:
    if getattr(type(subscriber), name) is getattr(Subscriber, name):
        return None
    method: Callable[..., Any] = getattr(subscriber, name)
    return method


class _Feed:
    """Runs an observable into a bounded buffer in a task; the reader drains the buffer,
    then learns the outcome (completed, failed, or stopped)."""

    __slots__ = ("buffer", "outcome", "scope", "source")

    def __init__(self, source: Source[Any], buffer: BoundedBuffer[Any]) -> None:
        self.source = source
        self.buffer = buffer
        self.scope = trio.CancelScope()
        self.outcome: BaseException | bool | None = None  # True: completed

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        producer = self.buffer.open_producer()
        ready = Ready(task_status)
        try:
            with self.scope:
                await self.source._run(self.buffer.put_batch, ready)
                self.outcome = True
        except Exception as exc:
            self.outcome = exc
        finally:
            producer.close()
        ready.started()

    async def batches(self) -> AsyncIterator[list[Any]]:
        """What the buffer holds, then the upstream's error if it failed."""
        while True:
            try:
                batch = await self.buffer.get_batch()
            except trio.EndOfChannel:
                break
            yield batch
        if isinstance(self.outcome, BaseException):
            raise self.outcome


class Subscription(Generic[T]):
    """One consumer of an observable: handlers run in a task of their own, fed through a
    bounded buffer with its own backpressure strategy (made by ``obs.subscribe``).

    Where the observable is built on a hot stream, the subscription's buffer sits right
    behind it (``buffer_size`` items, ``backpressure`` strategy) and the operators of its
    chain run in this subscription's task. Cold sources are read on demand by the same
    task, so nothing piles up; an observable that needs tasks of its own runs in a child
    task that feeds the buffer.

    ``state`` is ``pending`` (not started), ``running``, ``completed``, ``failed`` (see
    ``error``) or ``unsubscribed``. ``stats`` adds up the counters of its buffers
    (``dropped``, ``blocked_seconds``, ``max_depth``...); ``delivered`` counts items
    handed to ``on_next``.

    Unsubscribing cancels all upstream work of this subscription (operators' tasks, the
    attachment to a hot stream); items already buffered are still delivered unless
    ``drain=False``.

    Errors stay inside the subscription: a failing stream or handler calls ``on_error``;
    without one the error is re-raised by ``await sub.wait()`` and at the end of ``async
    with`` (and logged when the subscription runs in someone else's nursery).

    Example::

        >>> from haive.dataflow.reactive import ReactiveStream
        >>> async def main():
        ...     stream = ReactiveStream[int]()
        ...     seen = []
        ...     async with stream.subscribe(seen.append, buffer_size=2, backpressure="drop_oldest") as sub:
        ...         await stream.emit_batch(range(5))   # nobody reads yet: 3 oldest dropped
        ...     return seen, sub.stats.dropped
        >>> trio.run(main)
        ([3, 4], 3)
    """

    def __init__(
        self,
        source: Observable[T],
        on_next: Callable[[T], Any] | Subscriber[T] | None = None,
        on_error: Callable[[BaseException], Any] | None = None,
        on_completed: Callable[[], Any] | None = None,
        *,
        buffer_size: int,
        backpressure: object = "block",
        name: str | None = None,
    ) -> None:
        if isinstance(on_next, Subscriber):
            subscriber = on_next
            if on_error is None:
                on_error = _overridden(subscriber, "on_error")
            if on_completed is None:
                on_completed = _overridden(subscriber, "on_completed")
            on_next = subscriber.on_next
        for fn, what in (
            (on_next, "on_next"),
            (on_error, "on_error"),
            (on_completed, "on_completed"),
        ):
            if fn is not None:
                check_callable(fn, f"subscribe: {what}")
        self.source = source
        self.name = name or f"subscription({source._label})"
        # Validates buffer_size and strategy now (PullOptions), before anything runs.
        self._options = PullOptions(buffer_size, backpressure, config_owner="subscribe")
        self._buffer: BoundedBuffer[T] = BoundedBuffer(
            buffer_size, self._options.backpressure, name=self.name
        )
        self.state: State = "pending"
        self.error: BaseException | None = None
        self.delivered = 0
        self._on_next = on_next
        self._on_error = on_error
        self._on_completed = on_completed
        self._feed: _Feed | None = None
        self._scope = trio.CancelScope()
        self._stopping = False
        self._started = trio.Event()
        self._ended = trio.Event()
        self._handled = False
        self._owner_reraises = False
        self._manager: Any = None

    def __repr__(self) -> str:
        return f"<Subscription {self.name} {self.state}>"

    def __call__(self, on_next: Callable[[T], Any]) -> Subscription[T]:
        """Decorator form with options: ``@stream.subscribe(buffer_size=10)``."""
        if self._on_next is not None or self.state != "pending":
            raise ConfigError(f"{self!r} already has an on_next handler")
        check_callable(on_next, "subscribe")
        self._on_next = on_next
        return self

    @property
    def on_next(self) -> Callable[[T], Any] | None:
        return self._on_next

    @property
    def buffers(self) -> list[BoundedBuffer[Any]]:
        """The bounded buffers in front of this subscription's handler."""
        if self._feed is not None:
            return [self._buffer]
        return [reader.buffer for reader in self._options.readers]

    @property
    def stats(self) -> BufferStats:
        """Counters of :attr:`buffers`, added up."""
        total = BufferStats()
        for buffer in self.buffers:
            stats = buffer.stats
            total.items_in += stats.items_in
            total.items_out += stats.items_out
            total.dropped += stats.dropped
            total.blocked_count += stats.blocked_count
            total.blocked_seconds += stats.blocked_seconds
            total.max_depth = max(total.max_depth, stats.max_depth)
        return total

    # -- starting --------------------------------------------------------------------------
    def _claim(self) -> None:
        if self.state != "pending":
            raise RuntimeError(f"{self!r} cannot start: it is {self.state}")
        self.state = "running"
        for root in self.source._roots:
            if self in root._pending:
                root._pending.remove(self)

    def _defer(self) -> None:
        """No nursery given: the hot streams this is built on start it when opened."""
        for root in self.source._roots:
            if self.state != "pending":
                break
            root._adopt(self)

    async def start(self, nursery: trio.Nursery) -> Subscription[T]:
        """Start in ``nursery``; returns once subscribed (no hot item is missed after)."""
        self._claim()
        await nursery.start(self._run, name=self.name)
        return self

    def start_soon(self, nursery: trio.Nursery) -> None:
        """Start in ``nursery`` at its next scheduling point (see :meth:`wait_started`)."""
        self._claim()
        nursery.start_soon(self._run, name=self.name)

    async def wait_started(self) -> None:
        """Wait until subscribed upstream."""
        await self._started.wait()

    async def wait(self) -> None:
        """Wait until the subscription ended; re-raise its error if nothing handled it."""
        await self._ended.wait()
        if self.state == "failed" and not self._handled and self.error is not None:
            raise self.error

    def unsubscribe(self, *, drain: bool = True) -> None:
        """Stop: cancel upstream work; with ``drain`` buffered items are still delivered."""
        if self.state == "pending":
            self.state = "unsubscribed"
            for root in self.source._roots:
                if self in root._pending:
                    root._pending.remove(self)
            self._ended.set()
            return
        self._stopping = True
        if not drain:
            self._scope.cancel()
        elif self._feed is not None:
            self._feed.scope.cancel()  # the feed ends, the buffer drains
        else:
            readers = [r for r in self._options.readers if r.active]
            if not readers:
                self._scope.cancel()  # nothing is buffered: a cold source just stops
            for reader in readers:
                reader.stop()

    async def __aenter__(self) -> Subscription[T]:
        self._claim()
        self._owner_reraises = True
        manager = trio.open_nursery()
        nursery = await manager.__aenter__()
        self._manager = manager
        try:
            await nursery.start(self._run, name=self.name)
        except BaseException as exc:
            nursery.cancel_scope.cancel()
            await self._exit_nursery(type(exc), exc, exc.__traceback__)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.state == "running":
            self.unsubscribe(drain=exc_type is None)
        await self._exit_nursery(exc_type, exc, tb)
        if exc_type is None and self.state == "failed" and not self._handled and self.error:
            raise self.error

    async def _exit_nursery(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        manager, self._manager = self._manager, None
        with collapsing_groups:
            await manager.__aexit__(exc_type, exc, tb)

    # -- running ---------------------------------------------------------------------------
    async def _run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            with self._scope:
                if self.source._pullable():
                    await self._run_pulled(task_status)
                else:
                    await self._run_fed(task_status)
        finally:
            if self.state == "running":
                self.state = "unsubscribed"
            self._ended.set()

    async def _run_pulled(self, task_status: trio.TaskStatus[None]) -> None:
        batches = self.source._open_pull(self._options)
        if batches is None:  # a deferred factory produced something that needs tasks
            await self._run_fed(task_status)
            return
        task_status.started()
        self._started.set()
        try:
            await self._consume(batches)
        finally:
            await close_pull(batches)

    async def _run_fed(self, task_status: trio.TaskStatus[None]) -> None:
        self._feed = feed = _Feed(self.source, self._buffer)
        with collapsing_groups:
            async with trio.open_nursery() as nursery:
                await nursery.start(feed.run)
                task_status.started()
                self._started.set()
                try:
                    await self._consume(feed.batches())
                finally:
                    feed.scope.cancel()
                    self._buffer.close_receiving()

    async def _consume(self, batches: AsyncIterator[list[Any]]) -> None:
        on_next = self._on_next
        next_is_async = on_next is not None and is_async_callable(on_next)
        isawaitable = inspect.isawaitable
        try:
            async for batch in batches:
                if on_next is None:
                    pass
                elif next_is_async:
                    for item in batch:
                        await on_next(item)
                else:
                    # Handlers returning None (the usual case) are called from C; a plain
                    # function that returned an awaitable has it awaited, in order.
                    for result in filter(None, map(on_next, batch)):
                        if isawaitable(result):
                            await result
                self.delivered += len(batch)
        except Exception as exc:
            # The stream or a handler failed: this subscription stops, nobody else is affected.
            await self._failed(exc)
            return
        if self._stopping and not (self._feed is not None and self._feed.outcome is True):
            self.state = "unsubscribed"
            return
        self.state = "completed"
        if self._on_completed is not None:
            try:
                await call(self._on_completed)
            except Exception as exc:
                self.state = "failed"
                self.error = exc
                self._report(exc, "on_completed raised")

    async def _failed(self, error: BaseException) -> None:
        self.state = "failed"
        self.error = error
        if self._on_error is None:
            if not self._owner_reraises:
                self._report(error, "failed and has no on_error handler")
            return
        try:
            await call(self._on_error, error)
        except Exception as exc:
            self._report(exc, "on_error raised")
        else:
            self._handled = True

    def _report(self, error: BaseException, what: str) -> None:
        log.error("%s %s: %s: %s", self.name, what, type(error).__name__, error, exc_info=error)


class StreamIterator(Generic[T]):
    """``async for`` over an observable (made by ``obs.iterate()`` or ``async for item in
    obs``).

    Observables made of sources, hot streams and fused operators are read in the iterating
    task itself. Observables that need tasks of their own (time operators, merging...) must
    be iterated inside ``async with obs.iterate() as items:``, which owns those tasks and
    cancels them when the block ends.

    Example::

        >>> from trio.testing import MockClock
        >>> from haive.dataflow.reactive import Observable
        >>> async def main():
        ...     ticks = Observable.interval(0.01).take(3).debounce(0.005)
        ...     async with ticks.iterate() as items:
        ...         return [n async for n in items]
        >>> trio.run(main, clock=MockClock(autojump_threshold=0))
        [0, 1, 2]
    """

    def __init__(self, source: Observable[T], *, buffer_size: int, backpressure: object) -> None:
        self.source = source
        self._options = PullOptions(buffer_size, backpressure, config_owner="iterate")
        self._batches: AsyncIterator[list[T]] | None = None
        self._batch: list[T] = []
        self._index = 0
        self._feed: _Feed | None = None
        self._manager: Any = None

    def _open(self) -> AsyncIterator[list[T]]:
        if self._batches is None:
            pulled = self.source._open_pull(self._options)
            if pulled is None:
                raise TypeError(
                    f"{self.source!r} runs tasks of its own (time or combining operators), so it "
                    f"cannot be iterated directly: use `async with obs.iterate() as items: "
                    f"async for item in items: ...` or subscribe to it"
                )
            self._batches = pulled
        return self._batches

    def __aiter__(self) -> StreamIterator[T]:
        self._open()
        return self

    async def __anext__(self) -> T:
        if self._index < len(self._batch):
            item = self._batch[self._index]
            self._index += 1
            return item
        batches = self._batches if self._batches is not None else self._open()
        batch = await batches.__anext__()
        self._batch = batch
        self._index = 1
        return batch[0]

    async def aclose(self) -> None:
        """Stop reading (detach from a hot stream, close the source)."""
        batches, self._batches = self._batches, None
        closer = getattr(batches, "aclose", None)
        if closer is not None:
            await closer()
        else:
            await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> StreamIterator[T]:
        if self._batches is not None:
            raise RuntimeError("this iterator is already being read")
        buffer: BoundedBuffer[T] = BoundedBuffer(
            self._options.buffer_size,
            self._options.backpressure,
            name=f"iterate({self.source._label})",
        )
        feed = _Feed(self.source, buffer)
        manager = trio.open_nursery()
        nursery = await manager.__aenter__()
        self._manager, self._feed = manager, feed
        try:
            await nursery.start(feed.run)
        except BaseException as exc:
            nursery.cancel_scope.cancel()
            await manager.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        self._batches = feed.batches()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        feed, manager = self._feed, self._manager
        self._feed = self._manager = None
        if feed is None or manager is None:
            return
        feed.scope.cancel()
        feed.buffer.close_receiving()
        batches, self._batches = self._batches, None
        with collapsing_groups:
            if batches is not None:
                with trio.CancelScope(shield=True):
                    await batches.aclose()  # type: ignore[attr-defined]
            await manager.__aexit__(exc_type, exc, tb)
