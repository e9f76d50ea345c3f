"""Hot streams: :class:`ReactiveStream` (you emit into it), :class:`SharedObservable` (one
upstream run multicast to many subscribers) and :class:`Window` (a finished or growing slice
of a stream, replayed to each reader)."""

from __future__ import annotations

import logging
import weakref
from collections.abc import AsyncIterator, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from ..errors import ClosedError, ConfigError
from ..runtime.backpressure import BoundedBuffer
from ._runtime import Emit, Ready, collapsing_groups
from ._source import PullOptions
from .observable import Observable

if TYPE_CHECKING:
    from .subscription import Subscription

T = TypeVar("T")

log = logging.getLogger("haive.dataflow.reactive")

#: A hot stream yields to other tasks at least once per this many emits.
YIELD_EVERY = 32


class _Hot(Observable[T]):
    """Shared machinery of hot streams: readers, each behind its own bounded buffer.

    The producer only puts into the readers' buffers; everything a subscriber's chain does
    (operators, handlers) runs in the subscriber's own task, where unsubscribing cancels it.
    """

    def __init__(self, *, label: str, roots: tuple[ReactiveStream[Any], ...]) -> None:
        super().__init__(label=label, roots=roots)
        self._readers: list[_Inlet] = []
        self._delivering = False
        self._turn = trio.lowlevel.ParkingLot()
        self._closing = False
        self._ended = False
        self._error: BaseException | None = None
        #: Items emitted, and items emitted while nobody was attached (lost, as hot items are).
        self.emitted = 0
        self.unobserved = 0
        self._unyielded = 0

    @property
    def closed(self) -> bool:
        """True once the stream was completed or failed."""
        return self._closing

    @property
    def subscriber_count(self) -> int:
        """How many readers are attached right now."""
        return len(self._readers)

    # -- delivering --------------------------------------------------------------------
    async def _deliver(self, items: list[Any]) -> None:
        """Put ``items`` in every reader's buffer, waiting on full blocking ones.

        Always a cancel point. It yields to other tasks whenever it has to wait, and at
        least every ``YIELD_EVERY`` calls otherwise: consecutive emits then reach a reader
        as one batch instead of costing a task switch each (readers still see items within
        a bounded number of emits).
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        self.emitted += len(items)
        waited = False
        if not self._readers:
            self.unobserved += len(items)
        elif items:
            # One delivery at a time, so every reader sees batches in the same order.
            while self._delivering:
                await self._turn.park()
                waited = True
            if self._ended:
                raise ClosedError(
                    f"{self._label}: ended while {len(items)} item(s) waited to be emitted"
                )
            self._delivering = True
            try:
                for inlet in tuple(self._readers):
                    buffer = inlet.buffer
                    try:
                        try:
                            buffer.put_nowait_batch(items)
                        except trio.WouldBlock:
                            await buffer.put_batch(items)
                            waited = True
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        self._detach(inlet)  # that reader went away meanwhile
            finally:
                self._delivering = False
                if self._turn:
                    self._turn.unpark()
        self._unyielded += 1
        if not waited and self._unyielded >= YIELD_EVERY:
            self._unyielded = 0
            await trio.lowlevel.cancel_shielded_checkpoint()
        elif waited:
            self._unyielded = 0

    async def _end(self, error: BaseException | None) -> None:
        if self._closing:
            await trio.lowlevel.checkpoint()
            return
        self._closing = True
        while self._delivering:  # in-flight deliveries go first
            await self._turn.park()
        try:
            self._ended = True
            self._error = error
            for inlet in tuple(self._readers):
                inlet.finish(error)
            self._readers.clear()
        finally:
            if self._turn:
                self._turn.unpark_all()
        await trio.lowlevel.checkpoint()

    def _detach(self, inlet: _Inlet) -> None:
        try:
            self._readers.remove(inlet)
        except ValueError:
            pass

    # -- reading -----------------------------------------------------------------------
    def _pullable(self) -> bool:
        return True

    def _open_pull(self, options: PullOptions) -> AsyncIterator[list[T]] | None:
        return HotReader(self, options)

    async def _run(self, emit: Emit, ready: Ready) -> None:
        reader = HotReader(self, PullOptions())
        ready.started()
        try:
            buffer = reader.buffer
            while True:
                try:
                    batch = await buffer.get_batch()
                except trio.EndOfChannel:
                    break
                await emit(batch)
        finally:
            reader._close()
        if reader._inlet.error is not None:
            raise reader._inlet.error


class _Inlet:
    """What a hot stream holds of a reader: its buffer and how it ended."""

    __slots__ = ("active", "buffer", "error")

    def __init__(self, buffer: BoundedBuffer[Any]) -> None:
        self.buffer = buffer
        self.active = True
        self.error: BaseException | None = None

    def finish(self, error: BaseException | None) -> None:
        """The stream ended: the reader drains what is buffered, then ends (with ``error``)."""
        self.error = error
        self.active = False
        self.buffer.close()


class HotReader:
    """One reader of a hot stream: attached when created, fed through its own
    :class:`~haive.dataflow.BoundedBuffer` (buffer_size and strategy of its consumer).

    Iterating it yields batches; at the end the stream's error, if any, is raised. A
    reader dropped without being closed (a ``break`` out of ``async for``) detaches itself
    when collected, so it never holds a producer back.

    Example::

        >>> async def main():
        ...     stream = ReactiveStream[int]()
        ...     reader = HotReader(stream, PullOptions(buffer_size=2, backpressure="drop_oldest"))
        ...     await stream.emit_batch([1, 2, 3])
        ...     await stream.complete()
        ...     return [batch async for batch in reader], reader.buffer.stats.dropped
        >>> trio.run(main)
        ([[2, 3]], 1)
    """

    def __init__(self, stream: _Hot[Any], options: PullOptions) -> None:
        self.stream = stream
        self.buffer: BoundedBuffer[Any] = BoundedBuffer(
            options.buffer_size, options.backpressure, name=f"{stream._label}.reader"
        )
        self._inlet = inlet = _Inlet(self.buffer)
        options.readers.append(self)
        if stream._ended:
            inlet.finish(stream._error)
        else:
            stream._readers.append(inlet)
            weakref.finalize(self, stream._detach, inlet)

    @property
    def active(self) -> bool:
        """True while new items still arrive."""
        return self._inlet.active

    def stop(self) -> None:
        """Stop receiving new items; what is buffered is still read, then the reader ends."""
        inlet = self._inlet
        if inlet.active:
            inlet.active = False
            self.stream._detach(inlet)
            self.buffer.close()

    def __aiter__(self) -> HotReader:
        return self

    async def __anext__(self) -> list[Any]:
        try:
            return await self.buffer.get_batch()
        except trio.EndOfChannel:
            self._close()
            error, self._inlet.error = self._inlet.error, None
            if error is not None:
                raise error from None
            raise StopAsyncIteration from None

    def _close(self) -> None:
        self._inlet.active = False
        self.stream._detach(self._inlet)
        self.buffer.close_receiving()

    async def aclose(self) -> None:
        self._close()
        await trio.lowlevel.checkpoint()


class ReactiveStream(_Hot[T]):
    """A hot stream you push items into: ``await stream.emit(item)``.

    Every subscriber attached at the time of an emit receives the item; items emitted while
    nobody listens are lost (counted in ``unobserved``). ``emit`` waits while a subscriber
    with a blocking buffer is full, so a slow consumer slows the producer down instead of
    growing memory; subscribers with a dropping strategy never make it wait. An error in
    one subscriber (its handler, or an operator of its own chain) never reaches the others.

    ``async with stream:`` gives the stream a lifetime: subscriptions made without a
    nursery (``@stream.subscribe``, also on observables built from the stream) start on
    entry, already attached; on exit the stream completes and the block waits until every
    subscriber has drained its buffer. A subscription made without a nursery while the
    stream is open starts in the stream's nursery at its next scheduling point (``await
    sub.wait_started()`` before emitting if it must not miss anything).

    Example::

        >>> async def main():
        ...     stream = ReactiveStream[int]()
        ...     seen = []
        ...     @stream.filter(lambda n: n % 2).map(lambda n: n * 10).subscribe
        ...     def on_item(item):
        ...         seen.append(item)
        ...     async with stream:
        ...         for n in range(5):
        ...             await stream.emit(n)
        ...     return seen
        >>> trio.run(main)
        [10, 30]
    """

    def __init__(self, *, name: str = "stream") -> None:
        super().__init__(label=name, roots=())
        self._roots = (self,)
        self.name = name
        self._pending: list[Subscription[Any]] = []
        self._shares: list[SharedObservable[Any]] = []
        self._nursery: trio.Nursery | None = None
        self._nursery_manager: Any = None

    async def emit(self, item: T) -> None:
        """Deliver ``item`` to every current subscriber (waits on full blocking buffers)."""
        if self._closing:
            raise ClosedError(f"ReactiveStream {self.name!r} is closed; cannot emit {item!r}")
        await self._deliver([item])

    async def emit_batch(self, items: Iterable[T]) -> None:
        """Deliver several items at once (cheaper than one ``emit`` each)."""
        batch = list(items)
        if self._closing:
            raise ClosedError(
                f"ReactiveStream {self.name!r} is closed; cannot emit {len(batch)} items"
            )
        await self._deliver(batch)

    async def complete(self) -> None:
        """End the stream: subscribers drain what they have, then complete. Idempotent."""
        await self._end(None)

    async def error(self, error: BaseException) -> None:
        """End the stream with ``error``: subscribers drain, then get ``on_error(error)``."""
        if not isinstance(error, BaseException):
            raise ConfigError(f"ReactiveStream.error expects an exception, got {error!r}")
        await self._end(error)

    # -- lifetime ----------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self._nursery is not None

    def _adopt(self, subscription: Subscription[Any]) -> None:
        """A subscription made without a nursery: start it now if open, else on entry."""
        if self._nursery is not None:
            subscription.start_soon(self._nursery)
        else:
            self._pending.append(subscription)

    async def __aenter__(self) -> ReactiveStream[T]:
        if self._nursery is not None:
            raise RuntimeError(f"ReactiveStream {self.name!r} is already open")
        manager = trio.open_nursery()
        nursery = await manager.__aenter__()
        self._nursery_manager, self._nursery = manager, nursery
        try:
            for share in tuple(self._shares):
                if not share._connected:
                    await share._connect(nursery)
            while self._pending:
                subscription = self._pending.pop(0)
                if subscription.state == "pending":
                    await subscription.start(nursery)
        except BaseException as exc:
            nursery.cancel_scope.cancel()
            await self._close_nursery(type(exc), exc, exc.__traceback__)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._nursery is None:
            return
        if exc_type is None:
            try:
                await self.complete()
            except BaseException:
                self._nursery.cancel_scope.cancel()
                raise
        else:
            self._nursery.cancel_scope.cancel()
        await self._close_nursery(exc_type, exc, tb)

    async def _close_nursery(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        manager, self._nursery_manager, self._nursery = self._nursery_manager, None, None
        with collapsing_groups:
            await manager.__aexit__(exc_type, exc, tb)


class SharedObservable(_Hot[T]):
    """One run of an upstream observable, multicast to every subscriber (``obs.share()``).

    The upstream run (the *connection*) is owned by a nursery, so it outlives any single
    subscriber: it starts when the hot stream it is built on is opened (``async with
    stream:``), or for the duration of ``async with shared:``. Subscribers come and go
    without restarting it; each has its own buffer and strategy, and an error in one never
    reaches the others. When the upstream completes or fails, every subscriber does.

    Example::

        >>> async def main():
        ...     source = ReactiveStream[int]()
        ...     shared = source.map(lambda n: n * n).share()
        ...     a, b = [], []
        ...     shared.subscribe(a.append)
        ...     shared.filter(lambda n: n > 1).subscribe(b.append)
        ...     async with source:
        ...         await source.emit_batch([1, 2, 3])
        ...     return a, b
        >>> trio.run(main)
        ([1, 4, 9], [4, 9])
    """

    def __init__(self, upstream: Observable[T]) -> None:
        super().__init__(label=f"{upstream._label} → share", roots=upstream._roots)
        self._upstream = upstream
        self._connected = False
        self._connection_scope: trio.CancelScope | None = None
        self._nursery_manager: Any = None
        for root in self._roots:
            root._shares.append(self)

    async def _connect(self, nursery: trio.Nursery) -> None:
        if self._connected:
            raise RuntimeError(f"{self!r} is already connected")
        self._connected = True
        await nursery.start(self._connection)

    async def _connection(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        ready = Ready(task_status)
        error: BaseException | None = None
        self._connection_scope = scope = trio.CancelScope()
        try:
            with scope:
                await self._upstream._run(self._deliver, ready)
        except Exception as exc:
            error = exc
        ready.started()
        with trio.CancelScope(shield=True):
            await self._end(error)

    async def __aenter__(self) -> SharedObservable[T]:
        manager = trio.open_nursery()
        nursery = await manager.__aenter__()
        self._nursery_manager = manager
        try:
            await self._connect(nursery)
        except BaseException as exc:
            nursery.cancel_scope.cancel()
            await manager.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Leaving the block disconnects: the upstream is cancelled, subscribers complete.
        if self._connection_scope is not None:
            self._connection_scope.cancel()
        manager, self._nursery_manager = self._nursery_manager, None
        with collapsing_groups:
            await manager.__aexit__(exc_type, exc, tb)


class Window(Observable[T]):
    """A slice of a stream made by ``window``/``window_time``: it keeps its items and
    replays them to every reader, then follows live until the window closes.

    Example::

        >>> async def main():
        ...     windows = await Observable.of(1, 2, 3).window(2).to_list()
        ...     return [await w.to_list() for w in windows], len(windows[0])
        >>> trio.run(main)
        ([[1, 2], [3]], 2)
    """

    def __init__(self, *, name: str = "window") -> None:
        super().__init__(label=name, roots=())
        self.items: list[T] = []
        self.closed = False
        self.error: BaseException | None = None
        self._changed = trio.lowlevel.ParkingLot()

    def __len__(self) -> int:
        return len(self.items)

    def _push_now(self, items: list[T]) -> None:
        self.items.extend(items)
        self._changed.unpark_all()

    def _finish(self, error: BaseException | None = None) -> None:
        if not self.closed:
            self.closed = True
            self.error = error
            self._changed.unpark_all()

    async def _run(self, emit: Emit, ready: Ready) -> None:
        ready.started()
        sent = 0
        while True:
            if sent < len(self.items):
                chunk = self.items[sent:]
                sent += len(chunk)
                await emit(chunk)
            elif self.closed:
                await trio.lowlevel.checkpoint()
                if self.error is not None:
                    raise self.error
                return
            else:
                await self._changed.park()

    async def _pull(self) -> AsyncIterator[list[T]]:
        sent = 0
        while True:
            if sent < len(self.items):
                chunk = self.items[sent:]
                sent += len(chunk)
                await trio.lowlevel.checkpoint()
                yield chunk
            elif self.closed:
                if self.error is not None:
                    raise self.error
                return
            else:
                await self._changed.park()

    def _pullable(self) -> bool:
        return True

    def _open_pull(self, options: PullOptions) -> AsyncIterator[list[T]] | None:
        return self._pull()
