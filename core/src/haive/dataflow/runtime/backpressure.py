"""Bounded buffers with pluggable overflow strategies, and the signals producers await.

Every edge of a pipeline is a :class:`BoundedBuffer`. It is a bounded queue like a trio
memory channel, with three differences that a memory channel cannot offer:

* its size (``buffer_size``) is counted in *items* while items move in *batches*: a consumer
  takes whatever is ready, up to ``chunk_size`` items, in one call (adaptive micro-batching:
  flush what is there, never wait to fill);
* when it is full a :class:`BackpressureStrategy` decides: ``block`` the producer (default),
  ``drop_oldest``, ``drop_newest`` or ``sliding_window`` (drop by age), each drop counted;
* producers can await a low-water mark (:meth:`BoundedBuffer.wait_below`) to slow down
  before anything is dropped, which :class:`FlowController` wraps.
"""

from __future__ import annotations

import abc
import enum
from collections import deque
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any, ClassVar, Generic, TypeVar

import attrs
import trio

from ..errors import ConfigError
from .defaults import DEFAULT_BACKPRESSURE, DEFAULT_BUFFER_SIZE
from .validation import FRACTION, POSITIVE_INT, POSITIVE_NUMBER, invalid, registered

T = TypeVar("T")


class BufferStrategy(enum.StrEnum):
    """What a full buffer does. The values are the registered strategy names.

    Example::

        >>> BoundedBuffer(10, strategy=BufferStrategy.SLIDING_WINDOW).strategy.PLUGIN_NAME
        'sliding_window'
    """

    BLOCK = "block"
    DROP_OLDEST = "drop_oldest"
    DROP_NEWEST = "drop_newest"
    SLIDING_WINDOW = "sliding_window"


class DropStrategy(enum.StrEnum):
    """Which items a full, non-blocking buffer drops (the seed's names).

    Example::

        >>> BoundedBuffer(10, strategy=DropStrategy.OLDEST_FIRST).strategy.PLUGIN_NAME
        'drop_oldest'
    """

    OLDEST_FIRST = "drop_oldest"
    NEWEST_FIRST = "drop_newest"


@attrs.define
class BufferStats:
    """Counters of one buffer, updated per batch (cheap enough for the hot path).

    Example::

        >>> BufferStats().dropped
        0
    """

    items_in: int = 0
    items_out: int = 0
    dropped: int = 0
    blocked_count: int = 0
    blocked_seconds: float = 0.0
    max_depth: int = 0


class BackpressureStrategy(abc.ABC):
    """Decides what happens to items that do not fit in a full buffer.

    One instance serves one buffer. ``blocks = True`` makes the producer wait for room;
    otherwise :meth:`overflow` is called with the items that do not fit and may evict.

    The buffer counts every item that ``overflow`` does not return as dropped; items it
    evicts through :meth:`BoundedBuffer.evict_oldest` are counted there.

    Example: a strategy that throws away the whole backlog when the consumer falls behind::

        >>> class ResetOnOverflow(BackpressureStrategy):
        ...     PLUGIN_NAME = "reset_on_overflow"
        ...     def overflow(self, buffer, items):
        ...         buffer.evict_oldest(len(buffer))
        ...         return items[-buffer.buffer_size:]
        >>> buf = BoundedBuffer(2, strategy=ResetOnOverflow())
        >>> buf.put_nowait_batch([1])
        >>> buf.put_nowait_batch([2, 3, 4])
        >>> buf.get_nowait_batch(), buf.stats.dropped
        ([3, 4], 2)
    """

    PLUGIN_NAME: ClassVar[str]
    blocks: ClassVar[bool] = False
    uses_time: ClassVar[bool] = False

    def overflow(self, buffer: BoundedBuffer[Any], items: Sequence[Any]) -> Sequence[Any]:
        """Called with ``items`` that do not fit; evict and return what to enqueue now."""
        raise NotImplementedError

    def expire(self, buffer: BoundedBuffer[Any], now: float) -> None:
        """Called before every get and put when ``uses_time``; may evict stale items."""


class BlockStrategy(BackpressureStrategy):
    """Producers wait until the consumer makes room. Nothing is ever dropped (default).

    Example::

        >>> BoundedBuffer(5, strategy="block").strategy.blocks
        True
    """

    PLUGIN_NAME = "block"
    blocks = True


class DropNewestStrategy(BackpressureStrategy):
    """A full buffer rejects the incoming items (they are counted as dropped).

    Example::

        >>> buf = BoundedBuffer(2, strategy="drop_newest")
        >>> buf.put_nowait_batch([1, 2, 3])
        >>> buf.get_nowait_batch(), buf.stats.dropped
        ([1, 2], 1)
    """

    PLUGIN_NAME = "drop_newest"

    def overflow(self, buffer: BoundedBuffer[Any], items: Sequence[Any]) -> Sequence[Any]:
        return items[: buffer.room()]


class DropOldestStrategy(BackpressureStrategy):
    """A full buffer evicts its oldest items to take the new ones.

    Example::

        >>> buf = BoundedBuffer(2, strategy="drop_oldest")
        >>> buf.put_nowait_batch([1, 2, 3])
        >>> buf.get_nowait_batch(), buf.stats.dropped
        ([2, 3], 1)
    """

    PLUGIN_NAME = "drop_oldest"

    def overflow(self, buffer: BoundedBuffer[Any], items: Sequence[Any]) -> Sequence[Any]:
        if len(items) >= buffer.buffer_size:
            buffer.evict_oldest(len(buffer))
            return items[len(items) - buffer.buffer_size :]
        buffer.evict_oldest(len(items) - buffer.room())
        return items


@attrs.define
class SlidingWindowStrategy(DropOldestStrategy):
    """Keep only items younger than ``window`` seconds (and at most ``buffer_size`` of them).

    Consumers always see the most recent window of data; stale items are dropped by age on
    every put and get, overflow evicts the oldest.

    Example::

        >>> SlidingWindowStrategy(window=5.0).window
        5.0
    """

    PLUGIN_NAME: ClassVar[str] = "sliding_window"
    uses_time: ClassVar[bool] = True
    window: float = attrs.field(default=1.0, validator=POSITIVE_NUMBER)

    def expire(self, buffer: BoundedBuffer[Any], now: float) -> None:
        buffer.evict_older_than(now - self.window)


StrategySpec = BackpressureStrategy | type[BackpressureStrategy]


def strategy_spec(
    spec: object, *, owner: str = "BoundedBuffer", parameter: str = "strategy"
) -> StrategySpec:
    """Check a backpressure setting now: names resolve through the plugin registry.

    Returns the strategy class (each buffer then makes its own instance) or the instance
    given. Pipelines call this when they are built, so a misspelled name fails there, with
    the parameter named, instead of when the first buffer is made.

    Example::

        >>> strategy_spec(BufferStrategy.DROP_NEWEST).__name__
        'DropNewestStrategy'
        >>> strategy_spec("drop_olde", owner="EventPipeline", parameter="backpressure")
        Traceback (most recent call last):
        ...
        haive.dataflow.errors.UnknownSettingError: EventPipeline(backpressure='drop_olde'): no backpressure named 'drop_olde' is installed. ... Did you mean 'drop_oldest'?
    """
    if isinstance(spec, BackpressureStrategy):
        return spec
    if isinstance(spec, type) and issubclass(spec, BackpressureStrategy):
        return spec
    name = spec.value if isinstance(spec, enum.Enum) else spec
    if isinstance(name, str):
        builtin = _BUILTIN_STRATEGIES.get(name)
        if builtin is not None:
            # The core's own strategies need no plugin discovery (a buffer is often the
            # first thing a program makes); the registry refuses any plugin reusing these names.
            return builtin
        cls: type[BackpressureStrategy] = registered(owner, parameter, "backpressure", name)
        return cls
    raise ConfigError(
        invalid(
            owner,
            parameter,
            spec,
            "a backpressure strategy name (block, drop_oldest, drop_newest, sliding_window or "
            "a plugin's), a BufferStrategy/DropStrategy member, or a BackpressureStrategy "
            "class or instance",
        )
    )


def resolve_strategy(
    spec: object, *, owner: str = "BoundedBuffer", parameter: str = "strategy"
) -> BackpressureStrategy:
    """Turn a name, enum member, class or instance into a strategy instance.

    Example::

        >>> type(resolve_strategy("drop_newest")).__name__
        'DropNewestStrategy'
    """
    resolved = strategy_spec(spec, owner=owner, parameter=parameter)
    return resolved if isinstance(resolved, BackpressureStrategy) else resolved()


_BUILTIN_STRATEGIES: dict[str, type[BackpressureStrategy]] = {
    cls.PLUGIN_NAME: cls
    for cls in (BlockStrategy, DropOldestStrategy, DropNewestStrategy, SlidingWindowStrategy)
}


class BoundedBuffer(Generic[T]):
    """A bounded, batch-aware queue between producers and one consuming side.

    ``buffer_size`` bounds the number of buffered items. Producers call :meth:`put` /
    :meth:`put_batch`; consumers call :meth:`get` / :meth:`get_batch`, which returns every
    ready item, up to ``chunk_size`` (by default ``buffer_size``: all of them), at once. When
    every producer handle is closed (:meth:`open_producer`, or :meth:`close` without handles)
    and the buffer is drained, getters raise :class:`trio.EndOfChannel`.

    Example::

        >>> async def demo():
        ...     buf = BoundedBuffer(100)
        ...     async with buf.open_producer() as producer:
        ...         await producer.put_batch([1, 2, 3])
        ...     return await buf.get_batch()
        >>> trio.run(demo)
        [1, 2, 3]
        >>> buf = BoundedBuffer(100, chunk_size=2)
        >>> buf.put_nowait_batch([1, 2, 3])
        >>> buf.get_nowait_batch(), buf.get_nowait_batch()
        ([1, 2], [3])
    """

    #: Puts that fit without a schedule point before one is forced (see :meth:`put_batch`).
    YIELD_EVERY = 64

    def __init__(
        self,
        buffer_size: int,
        strategy: object = DEFAULT_BACKPRESSURE,
        *,
        chunk_size: int | None = None,
        name: str = "buffer",
    ) -> None:
        self.name = name
        self.buffer_size = POSITIVE_INT.check("BoundedBuffer", "buffer_size", buffer_size)
        # Without a chunk size a consumer takes everything ready: at most the buffer's size.
        self.chunk_size = (
            self.buffer_size
            if chunk_size is None
            else POSITIVE_INT.check("BoundedBuffer", "chunk_size", chunk_size)
        )
        self.strategy = resolve_strategy(strategy)
        self.stats = BufferStats()
        self._chunks: deque[list[T]] = deque()
        self._times: deque[float] = deque()
        self._count = 0
        self._puts_without_yield = 0
        self._producers = 0
        self._producers_opened = False
        self._send_closed = False
        self._receive_closed = False
        self._not_empty = trio.lowlevel.ParkingLot()
        self._not_full = trio.lowlevel.ParkingLot()
        self._level = trio.lowlevel.ParkingLot()

    # -- inspection ----------------------------------------------------------------------
    def __len__(self) -> int:
        return self._count

    def room(self) -> int:
        """How many more items fit before the strategy is consulted."""
        return self.buffer_size - self._count

    @property
    def pressure(self) -> float:
        """Fill level in [0, 1]: the signal an adaptive producer slows down on."""
        return self._count / self.buffer_size

    @property
    def closed(self) -> bool:
        """True once no producer can add items any more."""
        return self._send_closed

    # -- strategy helpers ----------------------------------------------------------------
    def evict_oldest(self, n: int) -> None:
        """Drop the ``n`` oldest items, counting them as dropped (used by strategies)."""
        n = min(n, self._count)
        if n <= 0:
            return
        self.stats.dropped += n
        self._count -= n
        chunks = self._chunks
        while n:
            first = chunks[0]
            if len(first) <= n:
                n -= len(first)
                chunks.popleft()
                if self._times:
                    self._times.popleft()
            else:
                chunks[0] = first[n:]
                n = 0
        self._wake_level()

    def evict_older_than(self, cutoff: float) -> None:
        """Drop every chunk enqueued before trio time ``cutoff`` (used by strategies)."""
        dropped = 0
        while self._times and self._times[0] < cutoff:
            self._times.popleft()
            dropped += len(self._chunks.popleft())
        if dropped:
            self._count -= dropped
            self.stats.dropped += dropped
            self._wake_level()

    # -- producing -----------------------------------------------------------------------
    def open_producer(self) -> BufferProducer[T]:
        """A producer handle; the buffer ends once every handle opened is closed."""
        if self._send_closed:
            raise trio.ClosedResourceError(f"buffer {self.name!r} is closed for producers")
        self._producers += 1
        self._producers_opened = True
        return BufferProducer(self)

    def _producer_closed(self) -> None:
        self._producers -= 1
        if self._producers == 0:
            self.close()

    def close(self) -> None:
        """No more items will be put; consumers drain what is buffered, then see the end."""
        self._send_closed = True
        self._not_empty.unpark_all()
        self._not_full.unpark_all()

    def close_receiving(self) -> None:
        """The consumer is gone: buffered items are discarded, producers get BrokenResource."""
        self._receive_closed = True
        self._not_full.unpark_all()
        self._level.unpark_all()

    def _check_can_put(self) -> None:
        if self._receive_closed:
            raise trio.BrokenResourceError(f"buffer {self.name!r} has no consumer any more")
        if self._send_closed:
            raise trio.ClosedResourceError(f"buffer {self.name!r} is closed for producers")

    def _append(self, items: list[T]) -> None:
        self._chunks.append(items)
        if self.strategy.uses_time:
            self._times.append(trio.current_time())
        self._count += len(items)
        self.stats.items_in += len(items)
        if self._count > self.stats.max_depth:
            self.stats.max_depth = self._count
        # Only when a consumer waits: unpark() is a KI-protected call that costs more than
        # the rest of a put, and a producer that is ahead of its consumer pays it per put.
        if self._not_empty:
            self._not_empty.unpark()

    def put_nowait_batch(self, items: Iterable[T]) -> None:
        """Enqueue ``items`` now; a blocking strategy raises :class:`trio.WouldBlock` if full.

        With a blocking strategy nothing is enqueued unless all of ``items`` fit.
        """
        self._check_can_put()
        batch = items if isinstance(items, list) else list(items)
        if not batch:
            return
        strategy = self.strategy
        if strategy.uses_time:
            strategy.expire(self, trio.current_time())
        if len(batch) > self.buffer_size - self._count:
            if strategy.blocks:
                raise trio.WouldBlock
            before = len(batch)
            kept = strategy.overflow(self, batch)
            self.stats.dropped += before - len(kept)
            if not kept:
                return
            batch = kept if isinstance(kept, list) else list(kept)
        self._append(batch)

    def put_nowait(self, item: T) -> None:
        """Enqueue one item now (see :meth:`put_nowait_batch`)."""
        self.put_nowait_batch([item])

    async def put_batch(self, items: Iterable[T]) -> None:
        """Enqueue ``items``, waiting for room under a blocking strategy.

        Under a blocking strategy the part that fits is enqueued at once and the rest as room
        appears, so a batch larger than ``buffer_size`` still goes through, in order.

        Every call is a cancel point. When the batch fits, the call yields to the scheduler
        only every ``YIELD_EVERY`` puts or once the buffer is half full: a producer emitting
        small batches in a tight loop then hands its consumer one larger batch instead of
        forcing a task switch per item, and still cannot run more than half a buffer ahead.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check_can_put()
        batch = items if isinstance(items, list) else list(items)
        strategy = self.strategy
        if not strategy.blocks or len(batch) <= self.buffer_size - self._count:
            self.put_nowait_batch(batch)
            self._puts_without_yield += 1
            if self._puts_without_yield >= self.YIELD_EVERY or self._count * 2 >= self.buffer_size:
                self._puts_without_yield = 0
                await trio.lowlevel.cancel_shielded_checkpoint()
            return
        parked = False
        while batch:
            room = self.buffer_size - self._count
            if room >= len(batch):
                self._append(batch)
                break
            if room > 0:
                self._append(batch[:room])
                batch = batch[room:]
            started = trio.current_time()
            self.stats.blocked_count += 1
            try:
                await self._not_full.park()
            finally:
                self.stats.blocked_seconds += trio.current_time() - started
            parked = True
            self._check_can_put()
        if not parked:
            # Parking was the schedule point; without it, this is (see get_batch).
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def put(self, item: T) -> None:
        """Enqueue one item (see :meth:`put_batch`)."""
        await self.put_batch([item])

    async def wait_below(self, level: float) -> None:
        """Wait until the fill level is at or below ``level`` (0..1): the slow-down signal."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while self._count > level * self.buffer_size and not self._receive_closed:
            await self._level.park()
        await trio.lowlevel.cancel_shielded_checkpoint()

    # -- consuming -----------------------------------------------------------------------
    def _wake_level(self) -> None:
        if self._level:
            self._level.unpark_all()

    def _take(self, chunk_size: int) -> list[T]:
        chunks = self._chunks
        first = chunks.popleft()
        times = self._times
        first_time = times.popleft() if times else None
        if len(first) > chunk_size:
            chunks.appendleft(first[chunk_size:])
            if first_time is not None:
                times.appendleft(first_time)
            first = first[:chunk_size]
        elif chunks and len(first) < chunk_size:
            out = list(first)
            while chunks and len(out) + len(chunks[0]) <= chunk_size:
                out.extend(chunks.popleft())
                if times:
                    times.popleft()
            first = out
        n = len(first)
        self._count -= n
        self.stats.items_out += n
        if self._not_full:
            self._not_full.unpark_all()
        self._wake_level()
        return first

    def get_nowait_batch(self, chunk_size: int | None = None) -> list[T]:
        """Every ready item, up to ``chunk_size`` (default: the buffer's); WouldBlock if none,
        EndOfChannel at the end."""
        if self.strategy.uses_time:
            self.strategy.expire(self, trio.current_time())
        if self._count:
            return self._take(self.chunk_size if chunk_size is None else chunk_size)
        if self._send_closed:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    async def get_batch(self, chunk_size: int | None = None) -> list[T]:
        """Wait for at least one item, then return every ready item, up to ``chunk_size``
        (default: the buffer's)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        parked = False
        while True:
            try:
                batch = self.get_nowait_batch(chunk_size)
            except trio.WouldBlock:
                await self._not_empty.park()
                parked = True
                continue
            if not parked:
                # Found items at once: still a schedule point, as every trio operation is.
                # After parking it already was one; yielding again would cost a pass of
                # the scheduler per hop (latency) before the batch is handled.
                await trio.lowlevel.cancel_shielded_checkpoint()
            return batch

    async def get(self) -> T:
        """Wait for and return the oldest item."""
        return (await self.get_batch(1))[0]

    def __aiter__(self) -> BoundedBuffer[T]:
        return self

    async def __anext__(self) -> list[T]:
        try:
            return await self.get_batch()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None


class BufferProducer(Generic[T]):
    """One producer's handle on a :class:`BoundedBuffer`; close it when done producing.

    Example::

        >>> async def demo():
        ...     buf = BoundedBuffer(10)
        ...     async with buf.open_producer() as p:
        ...         await p.put("a")
        ...     return [item async for batch in buf for item in batch]
        >>> trio.run(demo)
        ['a']
    """

    __slots__ = ("_buffer", "_closed")

    def __init__(self, buffer: BoundedBuffer[T]) -> None:
        self._buffer = buffer
        self._closed = False

    @property
    def buffer(self) -> BoundedBuffer[T]:
        return self._buffer

    def _check(self) -> BoundedBuffer[T]:
        if self._closed:
            raise trio.ClosedResourceError("this producer handle is closed")
        return self._buffer

    async def put_batch(self, items: Iterable[T]) -> None:
        await self._check().put_batch(items)

    async def put(self, item: T) -> None:
        await self._check().put_batch([item])

    def put_nowait_batch(self, items: Iterable[T]) -> None:
        self._check().put_nowait_batch(items)

    def clone(self) -> BufferProducer[T]:
        """Another handle for another task (the buffer ends when all are closed)."""
        return self._check().open_producer()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._buffer._producer_closed()

    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> BufferProducer[T]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class FlowController:
    """Tells producers to slow down before a buffer overflows (high/low water marks).

    ``paused`` turns true when the buffer fills past ``high``; :meth:`wait_resumed` returns
    once the consumer drained it to ``low``. A producer that awaits it before each batch never
    fills the buffer, so non-blocking strategies never need to drop.

    Example::

        >>> async def demo():
        ...     buf = BoundedBuffer(10, strategy="drop_newest")
        ...     flow = FlowController(buf, high=0.8, low=0.2)
        ...     buf.put_nowait_batch(range(9))
        ...     paused = flow.paused
        ...     buf.get_nowait_batch(8)
        ...     await flow.wait_resumed()
        ...     return paused, flow.paused
        >>> trio.run(demo)
        (True, False)
    """

    def __init__(self, buffer: BoundedBuffer[Any], *, high: float = 0.8, low: float = 0.5) -> None:
        if not isinstance(buffer, BoundedBuffer):
            raise ConfigError(invalid("FlowController", "buffer", buffer, "a BoundedBuffer"))
        FRACTION.check("FlowController", "high", high)
        FRACTION.check("FlowController", "low", low)
        if low > high:
            raise ConfigError(
                f"FlowController(low={low!r}, high={high!r}): low must be <= high "
                "(the buffer resumes below low after pausing above high)"
            )
        self.buffer = buffer
        self.high = high
        self.low = low
        self.pauses = 0
        self._paused = False

    @property
    def paused(self) -> bool:
        """True while the producer should hold back."""
        pressure = self.buffer.pressure
        if not self._paused and pressure >= self.high:
            self._paused = True
            self.pauses += 1
        elif self._paused and pressure <= self.low:
            self._paused = False
        return self._paused

    async def wait_resumed(self) -> None:
        """Return at once if not paused, else when the buffer has drained to ``low``."""
        if self.paused:
            await self.buffer.wait_below(self.low)
            self._paused = False
        else:
            await trio.lowlevel.checkpoint()


@attrs.define
class BackpressureManager:
    """Creates and tracks the named buffers of an application, for metrics and control.

    Example::

        >>> manager = BackpressureManager()
        >>> buf = manager.buffer("ingest", buffer_size=1000, strategy=DropStrategy.OLDEST_FIRST)
        >>> buf.put_nowait_batch(range(1500))
        >>> manager.snapshot()["ingest"]["dropped"]
        500
    """

    buffers: dict[str, BoundedBuffer[Any]] = attrs.field(factory=dict)

    def buffer(
        self,
        name: str,
        *,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        strategy: object = DEFAULT_BACKPRESSURE,
    ) -> BoundedBuffer[Any]:
        """Create (or return the existing) buffer called ``name``."""
        if name not in self.buffers:
            owner = "BackpressureManager.buffer"
            POSITIVE_INT.check(owner, "buffer_size", buffer_size)
            spec = strategy_spec(strategy, owner=owner, parameter="strategy")
            self.buffers[name] = BoundedBuffer(buffer_size, spec, name=name)
        return self.buffers[name]

    def track(self, buffer: BoundedBuffer[Any]) -> None:
        """Include a buffer made elsewhere (e.g. a pipeline edge) in snapshots."""
        self.buffers[buffer.name] = buffer

    def flow_controller(self, name: str, *, high: float = 0.8, low: float = 0.5) -> FlowController:
        """A :class:`FlowController` for the buffer called ``name``."""
        buffer = self.buffers.get(name)
        if buffer is None:
            known = ", ".join(sorted(self.buffers)) or "(none yet)"
            raise ConfigError(
                f"BackpressureManager.flow_controller(name={name!r}): no buffer named {name!r}; "
                f"buffers: {known}"
            )
        return FlowController(buffer, high=high, low=low)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Depth, pressure and counters of every tracked buffer."""
        return {
            name: {
                "depth": len(buf),
                "buffer_size": buf.buffer_size,
                "pressure": buf.pressure,
                "strategy": buf.strategy.PLUGIN_NAME,
                **attrs.asdict(buf.stats),
            }
            for name, buf in self.buffers.items()
        }
