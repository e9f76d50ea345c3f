"""Hot sources: the machinery of hot streams (:class:`HotSource`: readers, each behind its
own bounded buffer; :class:`HotReader`), of one upstream run multicast to them
(:class:`SharedSource`) and of a window that replays its items (:class:`WindowSource`).

They are sources, not observables (see :mod:`._source`):
:class:`~haive.dataflow.reactive.ReactiveStream`, :class:`~haive.dataflow.reactive.SharedObservable`
and :class:`~haive.dataflow.reactive.Window` add the fluent API of
:class:`~haive.dataflow.reactive.Observable` to them.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

import trio

from ..errors import ClosedError
from ..runtime.backpressure import BoundedBuffer
from ._runtime import Emit, Ready, collapsing_groups
from ._source import PullOptions, Source

if TYPE_CHECKING:
    from .subject import ReactiveStream

T = TypeVar("T")

#: A hot stream yields to other tasks at least once per this many emits.
YIELD_EVERY = 32


class HotSource(Source[T]):
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

        >>> from haive.dataflow.reactive import ReactiveStream
        >>> async def main():
        ...     stream = ReactiveStream[int]()
        ...     reader = HotReader(stream, PullOptions(buffer_size=2, backpressure="drop_oldest"))
        ...     await stream.emit_batch([1, 2, 3])
        ...     await stream.complete()
        ...     return [batch async for batch in reader], reader.buffer.stats.dropped
        >>> trio.run(main)
        ([[2, 3]], 1)
    """

    def __init__(self, stream: HotSource[Any], options: PullOptions) -> None:
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


class SharedSource(HotSource[T]):
    """The hot stream behind :class:`~haive.dataflow.reactive.SharedObservable`: one run of
    ``upstream`` (the connection) delivered to every reader, owned by a nursery (the one of
    the hot stream it is built on, or of ``async with``)."""

    def __init__(self, upstream: Source[T]) -> None:
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

    async def __aenter__(self) -> Self:
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


class WindowSource(Source[T]):
    """The replaying source behind :class:`~haive.dataflow.reactive.Window`: it keeps the
    items pushed into it and replays them to every reader, then follows live until it is
    finished."""

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
