"""``Observable``: a cold, composable description of a stream of items on trio's clock.

Also the two hot kinds its operators make, :class:`SharedObservable` (``share``) and
:class:`Window` (``window``, ``window_time``): the fluent API on top of their sources in
``_hot``. This is the one module that turns sources into observables: the operator modules
below it work on :class:`~._source.Source` and never import it (see ``_source``).
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Hashable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar, overload

import trio

from ..errors import ConfigError
from ..runtime.defaults import DEFAULT_BUFFER_SIZE, DEFAULT_CHUNK_SIZE
from ..runtime.retry import RetryPolicy
from ..runtime.units import Duration
from ..runtime.validation import duration
from . import _combine, _create, _fused, _recover, _timed
from ._hot import SharedSource, WindowSource
from ._runtime import (
    NOTHING,
    Emit,
    Ready,
    check_callable,
    is_async_callable,
    positive_int,
    seconds,
)
from ._source import PullOptions, Source, as_source
from .subscription import StreamIterator, Subscriber, Subscription

if TYPE_CHECKING:
    from ..pipelines.streaming_pipeline import StreamingPipeline

T = TypeVar("T")
U = TypeVar("U")


class _Combinator:
    """A method that also works on the class: ``a.merge(b)`` and ``Observable.merge(a, b)``."""

    def __init__(self, fn: Callable[..., Observable[Any]]) -> None:
        self.fn = fn
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]

    def __get__(self, obj: object, owner: type | None = None) -> Callable[..., Observable[Any]]:
        if obj is None:
            return self.fn
        return functools.partial(self.fn, obj)


class Observable(Source[T]):
    """A stream of items you transform with operators and consume with subscribers.

    Observables are *cold*: nothing runs until something consumes them, and every consumer
    gets its own run (a :class:`~haive.dataflow.reactive.ReactiveStream` is the hot kind).
    Operators return new observables; consecutive per-item operators are fused into one
    step, so ``map``/``filter``/``map`` costs one pass over each batch in one task.

    Consume with ``await obs.to_list()``, ``await obs.for_each(fn)``, ``async for item in
    obs`` or :meth:`subscribe`. Time is trio's clock (``trio.testing.MockClock`` works).

    Example::

        >>> async def main():
        ...     evens = Observable.from_iterable(range(10)).filter(lambda n: n % 2 == 0)
        ...     return await evens.map(lambda n: n * 10).scan(lambda a, b: a + b).to_list()
        >>> trio.run(main)
        [0, 20, 60, 120, 200]
    """

    __slots__ = ()

    # The run protocol (_run, _pullable, _open_pull) is Source's; see _source and _runtime.
    def _unwrapped(self) -> Source[T]:
        """The source operators are applied to: this observable, or the operator's source
        it stands for (see :class:`_SourceObservable`)."""
        return self

    def _then(self, spec: _fused.StepSpec) -> Observable[Any]:
        return _observable(_fused.fuse(self._unwrapped(), spec))

    # -- creating -------------------------------------------------------------------------
    @staticmethod
    def of(*items: U) -> Observable[U]:
        """The given items, then completion.

        Example::

            >>> trio.run(Observable.of(1, 2, 3).to_list)
            [1, 2, 3]
        """
        return Observable.from_iterable(items)

    @staticmethod
    def from_iterable(
        iterable: Iterable[U], *, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> Observable[U]:
        """Items of a list, range or generator, moved ``chunk_size`` at a time.

        Example::

            >>> trio.run(Observable.from_iterable(range(3)).to_list)
            [0, 1, 2]
        """
        return _observable(_create.from_iterable(iterable, chunk_size))

    @staticmethod
    def from_async_iterable(iterable: AsyncIterable[U]) -> Observable[U]:
        """Items of an async iterable, each passed on as it arrives.

        An async generator can be consumed once; wrap its creation in :meth:`defer` to run
        it again for every consumer.

        Example::

            >>> async def numbers():
            ...     for n in range(3):
            ...         yield n
            >>> trio.run(Observable.from_async_iterable(numbers()).to_list)
            [0, 1, 2]
        """
        return _observable(_create.from_async_iterable(iterable))

    @staticmethod
    def from_(value: object) -> Observable[Any]:
        """An observable from whatever ``value`` is: an observable, an (async) iterable, an
        awaitable (its result), or a single value.

        Example::

            >>> trio.run(Observable.from_("ab").to_list), trio.run(Observable.from_([1, 2]).to_list)
            (['ab'], [1, 2])
        """
        return _observable(_create.from_(value))

    @staticmethod
    def interval(period: Duration) -> Observable[int]:
        """0, 1, 2... one every ``period`` seconds of trio time, forever.

        ``period`` is in seconds, as in trio, not milliseconds: ``interval(1)`` ticks once a
        second; a :class:`~datetime.timedelta` or ``"250ms"`` works too.

        Ticks stay on the schedule of the first one (no drift). A consumer that blocks for
        several periods does not get a burst of stale ticks afterwards: the next tick comes
        at the next slot of the schedule.

        Example::

            >>> async def main():
            ...     return await Observable.interval(0.01).take(3).to_list()
            >>> trio.run(main)
            [0, 1, 2]
        """
        return _observable(
            _create.ticks(seconds(period, "interval", "period"), "interval", first=None)
        )

    @staticmethod
    def timer(due: Duration, period: Duration | None = None) -> Observable[int]:
        """0 after ``due`` seconds, then completion; with ``period``, 1, 2... every period.

        Both are in seconds, as in trio, not milliseconds; a :class:`~datetime.timedelta` or
        ``"250ms"`` works too.

        Example::

            >>> trio.run(Observable.timer(0.01).to_list)
            [0]
        """
        due_s = duration("timer", "due", due, positive=False)
        if period is None:
            return _observable(_create.ticks(math.inf, "timer", first=due_s))
        return _observable(_create.ticks(seconds(period, "timer", "period"), "timer", first=due_s))

    @staticmethod
    def empty() -> Observable[Any]:
        """Completes at once without items.

        Example::

            >>> trio.run(Observable.empty().to_list)
            []
        """
        return _observable(_create.empty())

    @staticmethod
    def never() -> Observable[Any]:
        """Never emits and never completes (until cancelled).

        Example::

            >>> async def main():
            ...     with trio.move_on_after(0.01):
            ...         await Observable.never().to_list()
            ...     return "still waiting"
            >>> trio.run(main)
            'still waiting'
        """
        return _observable(_create.never())

    @staticmethod
    def throw(error: BaseException | Callable[[], BaseException]) -> Observable[Any]:
        """Fails at once with ``error`` (an exception, or a function making one per run).

        Example::

            >>> async def main():
            ...     try:
            ...         await Observable.throw(ValueError("boom")).to_list()
            ...     except ValueError as exc:
            ...         return str(exc)
            >>> trio.run(main)
            'boom'
        """
        return _observable(_create.throw(error))

    @staticmethod
    def defer(factory: Callable[[], Any]) -> Observable[Any]:
        """Calls ``factory`` (sync or async) for every run and streams what it returns.

        Example::

            >>> async def numbers():
            ...     yield 1
            ...     yield 2
            >>> source = Observable.defer(numbers)   # a fresh generator for every consumer
            >>> async def main():
            ...     return await source.to_list(), await source.to_list()
            >>> trio.run(main)
            ([1, 2], [1, 2])
        """
        return _observable(_create.defer(factory))

    @staticmethod
    def create(
        producer: Callable[[Callable[[Any], Awaitable[None]]], Awaitable[None]],
    ) -> Observable[Any]:
        """A stream produced by ``async def producer(emit)``: each ``await emit(item)`` sends
        an item (and waits while the consumer is behind); returning completes, raising fails.

        Example::

            >>> async def countdown(emit):
            ...     for n in (3, 2, 1):
            ...         await emit(n)
            >>> trio.run(Observable.create(countdown).to_list)
            [3, 2, 1]
        """
        return _observable(_create.create(producer))

    @staticmethod
    def from_pipeline(pipeline: StreamingPipeline, *, results: bool = False) -> Observable[Any]:
        """The outputs of a :class:`~haive.dataflow.StreamingPipeline`, run once per consumer.

        By default the data of successful results is emitted (failed items are counted in
        the pipeline's report and go to its dead-letter sink); ``results=True`` emits every
        :class:`~haive.dataflow.Result`. Example: see :mod:`haive.dataflow.reactive.bridges`.
        """
        return _observable(_create.from_pipeline(pipeline, results=results))

    # -- combining (also callable on the class: Observable.merge(a, b)) -------------------
    @_Combinator
    def merge(*sources: Observable[Any]) -> Observable[Any]:
        """Items of all sources as they come; completes when all have completed.

        Example::

            >>> from trio.testing import MockClock
            >>> async def main():
            ...     a = Observable.timer(0.01).map(lambda _: "a")
            ...     b = Observable.timer(0.02).map(lambda _: "b")
            ...     return await Observable.merge(b, a).to_list(), await a.merge(b).to_list()
            >>> trio.run(main, clock=MockClock(autojump_threshold=0))
            (['a', 'b'], ['a', 'b'])
        """
        return _observable(_combine.merge(_sources(sources)))

    @_Combinator
    def zip(*sources: Any) -> Observable[Any]:
        """Tuples of the n-th items of every source (or ``fn(*items)`` when the last argument
        is a function); completes when any source completes and nothing is left to pair.

        Example::

            >>> async def main():
            ...     letters = Observable.of("a", "b", "c")
            ...     return await letters.zip(Observable.of(1, 2), lambda l, n: l * n).to_list()
            >>> trio.run(main)
            ['a', 'bb']
        """
        return _observable(_combine.zip_(_sources(sources)))

    @_Combinator
    def concat(*sources: Observable[Any]) -> Observable[Any]:
        """Every item of the first source, then of the second once the first completed...

        Example::

            >>> trio.run(Observable.of(1, 2).concat(Observable.of(3)).to_list)
            [1, 2, 3]
        """
        return _observable(_combine.concat(_sources(sources)))

    @_Combinator
    def combine_latest(*sources: Any) -> Observable[Any]:
        """Whenever any source emits (once all have emitted), the tuple of every source's
        latest item, or ``fn(*latest)`` when the last argument is a function.

        Example::

            >>> async def main():
            ...     temps = Observable.of(20, 21)
            ...     units = Observable.timer(0.01).map(lambda _: "C")
            ...     return await Observable.combine_latest(temps, units, lambda t, u: f"{t}{u}").to_list()
            >>> trio.run(main)
            ['21C']
        """
        return _observable(_combine.combine_latest(_sources(sources)))

    def with_latest_from(self, *others: Any) -> Observable[Any]:
        """For each item of this stream, ``(item, *latest of others)`` (or ``fn(item,
        *latest)`` when the last argument is a function); items before every other stream
        has emitted are skipped. Completes with this stream.

        Example::

            >>> async def main():
            ...     clicks = Observable.timer(0.02, 0.01).take(2)
            ...     mode = Observable.of("light", "dark")
            ...     return await clicks.with_latest_from(mode).to_list()
            >>> trio.run(main)
            [(0, 'dark'), (1, 'dark')]
        """
        return _observable(_combine.with_latest_from(self._unwrapped(), _sources(others)))

    def start_with(self, *items: Any) -> Observable[Any]:
        """Emits ``items`` first, then this stream (already subscribed, so a hot stream loses
        nothing meanwhile).

        Example::

            >>> trio.run(Observable.of(3).start_with(1, 2).to_list)
            [1, 2, 3]
        """
        return _observable(_combine.start_with(self._unwrapped(), items))

    # -- per-item operators (fused) -------------------------------------------------------
    def map(self, fn: Callable[[T], U] | Callable[[T], Awaitable[U]]) -> Observable[U]:
        """``fn(item)`` for every item (``fn`` sync or async).

        Example::

            >>> trio.run(Observable.of(1, 2).map(str).to_list)
            ['1', '2']
        """
        check_callable(fn, "map")
        return self._then(_fused.map_step(fn))

    def filter(self, predicate: Callable[[T], object]) -> Observable[T]:
        """Items for which ``predicate(item)`` is true (sync or async predicate).

        Example::

            >>> trio.run(Observable.of(1, 2, 3).filter(lambda n: n != 2).to_list)
            [1, 3]
        """
        check_callable(predicate, "filter")
        return self._then(_fused.filter_step(predicate))

    def scan(self, fn: Callable[[Any, T], Any], seed: Any = NOTHING) -> Observable[Any]:
        """Every accumulated value ``acc = fn(acc, item)``; without ``seed`` the first item
        is the first accumulator.

        Example::

            >>> trio.run(Observable.of(1, 2, 3).scan(lambda a, b: a + b, 10).to_list)
            [11, 13, 16]
        """
        check_callable(fn, "scan")
        return self._then(_fused.scan_step(fn, seed))

    def reduce(self, fn: Callable[[Any, T], Any], seed: Any = NOTHING) -> Observable[Any]:
        """The final accumulated value, at completion (see :meth:`scan`).

        Example::

            >>> trio.run(Observable.of(1, 2, 3).reduce(lambda a, b: a * b).to_list)
            [6]
        """
        check_callable(fn, "reduce")
        return self._then(_fused.scan_step(fn, seed, emit_each=False))

    def take(self, count: int) -> Observable[T]:
        """The first ``count`` items, then completion (upstream is unsubscribed).

        Example::

            >>> trio.run(Observable.interval(0.001).take(2).to_list)
            [0, 1]
        """
        positive_int(count, "take", "count", minimum=0)
        return self._then(_fused.take_step(count))

    def skip(self, count: int) -> Observable[T]:
        """Everything but the first ``count`` items.

        Example::

            >>> trio.run(Observable.of(1, 2, 3).skip(2).to_list)
            [3]
        """
        positive_int(count, "skip", "count", minimum=0)
        return self._then(_fused.skip_step(count))

    def distinct(self, key: Callable[[T], Hashable] | None = None) -> Observable[T]:
        """Items whose key (the item itself by default; must be hashable) was not seen yet.

        Remembers every key for the life of the run: use on bounded key spaces.

        Example::

            >>> trio.run(Observable.of(1, 2, 1, 3, 2).distinct().to_list)
            [1, 2, 3]
        """
        if key is not None:
            check_callable(key, "distinct")
        return self._then(_fused.distinct_step(key))

    def distinct_until_changed(self, key: Callable[[T], Any] | None = None) -> Observable[T]:
        """Items whose key differs from the previous item's key.

        Example::

            >>> trio.run(Observable.of(1, 1, 2, 2, 1).distinct_until_changed().to_list)
            [1, 2, 1]
        """
        if key is not None:
            check_callable(key, "distinct_until_changed")
        return self._then(_fused.distinct_until_changed_step(key))

    def tap(
        self,
        on_next: Callable[[T], Any] | None = None,
        on_error: Callable[[BaseException], Any] | None = None,
        on_completed: Callable[[], Any] | None = None,
    ) -> Observable[T]:
        """Calls the functions for side effects (logging, metrics); items pass unchanged.

        Example::

            >>> seen = []
            >>> trio.run(Observable.of(1, 2).tap(seen.append).map(lambda n: -n).to_list)
            [-1, -2]
            >>> seen
            [1, 2]
        """
        for fn, what in (
            (on_next, "tap"),
            (on_error, "tap: on_error"),
            (on_completed, "tap: on_completed"),
        ):
            if fn is not None:
                check_callable(fn, what)
        return self._then(_fused.tap_step(on_next, on_error, on_completed))

    def buffer(self, count: int) -> Observable[list[T]]:
        """Lists of ``count`` items; the last, shorter list at completion.

        Example::

            >>> trio.run(Observable.of(1, 2, 3, 4, 5).buffer(2).to_list)
            [[1, 2], [3, 4], [5]]
        """
        positive_int(count, "buffer", "count")
        return self._then(_fused.buffer_step(count))

    def window(self, count: int) -> Observable[Observable[T]]:
        """An observable per ``count`` consecutive items, emitted when its first item
        arrives. A window keeps its items, so it can be consumed at any time, even after it
        closed (it holds at most ``count`` items). Consume windows with ``flat_map`` or in
        handlers; the upstream keeps filling them meanwhile (a bounded number of windows
        may wait for the consumer, then the upstream waits).

        Example::

            >>> async def main():
            ...     windows = Observable.of(1, 2, 3, 4, 5).window(2)
            ...     return await windows.flat_map(lambda w: w.reduce(lambda a, b: a + b)).to_list()
            >>> trio.run(main)
            [3, 7, 5]
        """
        positive_int(count, "window", "count")
        return _observable(_timed.windows(self._unwrapped(), count, None, Window))

    def throttle(self, period: Duration) -> Observable[T]:
        """Emits an item, then ignores items for ``period`` seconds (throttle-first).

        ``period`` is in seconds, as in trio, not milliseconds: ``throttle(1)`` lets one item
        a second through; a :class:`~datetime.timedelta` or ``"250ms"`` works too.

        Example::

            >>> from trio.testing import MockClock
            >>> async def main():
            ...     return await Observable.interval(0.01).throttle(0.025).take(3).to_list()
            >>> trio.run(main, clock=MockClock(autojump_threshold=0))
            [0, 3, 6]
        """
        return self._then(_fused.throttle_step(seconds(period, "throttle", "period")))

    # -- operators that run tasks ---------------------------------------------------------
    def flat_map(
        self, fn: Callable[[T], Any], *, max_concurrent: int | None = 16
    ) -> Observable[Any]:
        """Maps each item to a stream and merges their items.

        ``fn`` may return an observable, an async iterable, an iterable (flattened in
        place, no task), an awaitable (e.g. a coroutine, which is how an ``async def fn``
        runs: its result is one item, as in Rx) or a single value (one item; strings and
        mappings are single values). At most ``max_concurrent`` inner streams run at once
        (``None``: no limit); when all slots are busy the upstream waits (backpressure).
        ``max_concurrent=1`` keeps the order (concat-map).

        Example::

            >>> async def slow_square(n):
            ...     await trio.sleep(0.001 * (3 - n))
            ...     return n * n
            >>> async def main():
            ...     items = Observable.of(1, 2)
            ...     in_order = await items.flat_map(slow_square, max_concurrent=1).to_list()
            ...     doubled = await items.flat_map(lambda n: [n, n]).to_list()
            ...     return in_order, doubled
            >>> trio.run(main)
            ([1, 4], [1, 1, 2, 2])
        """
        check_callable(fn, "flat_map")
        if max_concurrent is not None:
            positive_int(max_concurrent, "flat_map", "max_concurrent")
        return _observable(_combine.flat_map(self._unwrapped(), fn, max_concurrent))

    def debounce(self, period: Duration) -> Observable[T]:
        """An item once ``period`` seconds pass without a newer one (the latest of a burst);
        at completion the pending item is emitted.

        ``period`` is in seconds, as in trio, not milliseconds: the product description's
        ``debounce(1000)`` is ``debounce(1.0)`` (or ``debounce(timedelta(seconds=1))``,
        ``debounce("1000ms")``).

        Example::

            >>> from trio.testing import MockClock
            >>> async def main():
            ...     burst = Observable.of(1, 2, 3).concat(Observable.timer(0.05).map(lambda _: 4))
            ...     return await burst.debounce(0.02).to_list()
            >>> trio.run(main, clock=MockClock(autojump_threshold=0))
            [3, 4]
        """
        return _observable(
            _timed.debounce(self._unwrapped(), seconds(period, "debounce", "period"))
        )

    def sample(self, period: Duration) -> Observable[T]:
        """Every ``period`` seconds, the latest item if a new one arrived since the last
        sample; at completion the pending item, if any.

        ``period`` is in seconds, as in trio, not milliseconds; a
        :class:`~datetime.timedelta` or ``"250ms"`` works too.

        Example::

            >>> from trio.testing import MockClock
            >>> async def main():
            ...     return await Observable.interval(0.01).sample(0.023).take(2).to_list()
            >>> trio.run(main, clock=MockClock(autojump_threshold=0))
            [1, 3]
        """
        return _observable(_timed.sample(self._unwrapped(), seconds(period, "sample", "period")))

    def buffer_time(
        self, period: Duration, *, max_count: int | None = None, emit_empty: bool = False
    ) -> Observable[list[T]]:
        """A list of the items of every ``period`` seconds (empty lists only with
        ``emit_empty``); with ``max_count`` a full list is emitted early and the period
        starts again. What is left is emitted at completion.

        ``period`` is in seconds, as in trio, not milliseconds; a
        :class:`~datetime.timedelta` or ``"250ms"`` works too.

        Example::

            >>> from trio.testing import MockClock
            >>> async def main():
            ...     ticks = Observable.interval(0.01).take(5)
            ...     return await ticks.buffer_time(0.022).to_list()
            >>> trio.run(main, clock=MockClock(autojump_threshold=0))
            [[0, 1], [2, 3], [4]]
        """
        if max_count is not None:
            positive_int(max_count, "buffer_time", "max_count")
        period_s = seconds(period, "buffer_time", "period")
        return _observable(_timed.buffer_time(self._unwrapped(), period_s, max_count, emit_empty))

    def window_time(self, period: Duration) -> Observable[Observable[T]]:
        """A window (see :meth:`window`) every ``period`` seconds, starting at subscription.

        ``period`` is in seconds, as in trio, not milliseconds; a
        :class:`~datetime.timedelta` or ``"250ms"`` works too.

        Example::

            >>> from trio.testing import MockClock
            >>> async def main():
            ...     ticks = Observable.interval(0.01).take(5)
            ...     windows = ticks.window_time(0.022).flat_map(lambda w: w.to_list(), max_concurrent=1)
            ...     return await windows.to_list()
            >>> trio.run(main, clock=MockClock(autojump_threshold=0))
            [[0, 1], [2, 3], [4]]
        """
        period_s = seconds(period, "window_time", "period")
        return _observable(_timed.windows(self._unwrapped(), None, period_s, Window))

    def delay(self, period: Duration) -> Observable[T]:
        """Every item (and the completion) ``period`` seconds later; errors at once.

        At most ``DEFAULT_BUFFER_SIZE`` items wait at a time; a faster upstream waits.
        ``period`` is in seconds, as in trio, not milliseconds; a
        :class:`~datetime.timedelta` or ``"250ms"`` works too.

        Example::

            >>> async def main():
            ...     start = trio.current_time()
            ...     await Observable.of(1).delay(0.02).to_list()
            ...     return trio.current_time() - start >= 0.02
            >>> trio.run(main)
            True
        """
        return _observable(_timed.delay(self._unwrapped(), seconds(period, "delay", "period")))

    def timeout(self, period: Duration, fallback: Observable[T] | None = None) -> Observable[T]:
        """Fails with :class:`TimeoutError` (or switches to ``fallback``) when the first item
        takes more than ``period`` seconds, or the next one more than ``period`` after the
        previous. Time the consumer spends applying backpressure does not count.
        ``period`` is in seconds, as in trio, not milliseconds; a
        :class:`~datetime.timedelta` or ``"250ms"`` works too.

        Example::

            >>> async def main():
            ...     slow = Observable.timer(1.0)
            ...     return await slow.timeout(0.01, fallback=Observable.of("fallback")).to_list()
            >>> trio.run(main)
            ['fallback']
        """
        if fallback is not None:
            as_source(fallback, "timeout: fallback")
        period_s = seconds(period, "timeout", "period")
        inner = None if fallback is None else fallback._unwrapped()
        return _observable(_timed.timeout(self._unwrapped(), period_s, inner))

    # -- errors ---------------------------------------------------------------------------
    def retry(
        self,
        retries: int | RetryPolicy | None = None,
        *,
        backoff: Duration = 0.0,
        multiplier: float = 2.0,
        reset_on_success: bool = True,
    ) -> Observable[T]:
        """On error, subscribes again, up to ``retries`` times in a row (``None``: forever),
        waiting ``backoff * multiplier ** (n - 1)`` seconds before retry ``n`` (``backoff``
        is in seconds, not milliseconds; a :class:`~datetime.timedelta` works too); or per a
        :class:`~haive.dataflow.RetryPolicy`. Items emitted before an error stay emitted. With
        ``reset_on_success`` (default) a run that emitted an item resets the count, so a
        long-lived stream survives occasional failures.

        Example::

            >>> attempts = []
            >>> def flaky():
            ...     attempts.append(1)
            ...     return Observable.of("ok") if len(attempts) == 3 else Observable.throw(OSError())
            >>> trio.run(Observable.defer(flaky).retry(3, backoff=0.001).to_list)
            ['ok']
        """
        return _observable(
            _recover.retry(self._unwrapped(), retries, backoff, multiplier, reset_on_success)
        )

    def catch_error(
        self,
        handler: Callable[[BaseException], Any],
        *,
        exceptions: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    ) -> Observable[Any]:
        """On an error of type ``exceptions``, calls ``handler(error)`` (sync or async) and
        continues with what it returns: an observable or iterable to switch to, ``None`` to
        complete, or a single fallback item.

        Example::

            >>> failing = Observable.of(1, 0, 2).map(lambda n: 10 // n)
            >>> trio.run(failing.catch_error(lambda error: [-1]).to_list)
            [10, -1]
        """
        check_callable(handler, "catch_error")
        return _observable(_recover.catch_error(self._unwrapped(), handler, exceptions))

    # -- multicasting ---------------------------------------------------------------------
    def join(
        self,
        other: Observable[Any],
        window: Any,
        *,
        key: str | Callable[[Any], Hashable] | None = None,
        how: str = "inner",
        timestamp: str | Callable[[Any], Any] = "timestamp",
        left_key: str | Callable[[Any], Hashable] | None = None,
        right_key: str | Callable[[Any], Hashable] | None = None,
        allowed_lateness: Duration = 0.0,
        idle_timeout: Duration | None = None,
        on_late: Any = None,
        name: str = "join",
    ) -> Observable[Any]:
        """This stream (left) joined with ``other`` (right) by key in event time: a
        :class:`~haive.dataflow.state.JoinResult` per pair, from a
        :class:`~haive.dataflow.state.JoinNode` (see it for ``window``, ``how``, the
        watermark over both streams, ``idle_timeout`` and ``allowed_lateness``). Late items
        are counted and given to ``on_late`` (a function of the list of late items or a
        StreamSink); there are no dead letters in a reactive stream.

        Example: clicks within 5 seconds after a view of the same ad::

            >>> from haive.dataflow.state import IntervalJoin
            >>> views = Observable.of({"ad": 1, "ts": 0.0}, {"ad": 2, "ts": 1.0})
            >>> clicks = Observable.of({"ad": 1, "ts": 3.0}, {"ad": 2, "ts": 9.0})
            >>> async def main():
            ...     pairs = views.join(clicks, IntervalJoin(0, "5s"), key="ad", timestamp="ts",
            ...                        how="left")
            ...     return [(p.key, p.right) for p in await pairs.to_list()]
            >>> trio.run(main)
            [(1, {'ad': 1, 'ts': 3.0}), (2, None)]
        """
        from ..state.join_node import JoinNode
        from ._join import LEFT, RIGHT
        from ._join import join as join_operator

        node = JoinNode(
            name=name,
            window=window,
            key=key,
            how=how,
            left=LEFT,
            right=RIGHT,
            timestamp=timestamp,
            left_key=left_key,
            right_key=right_key,
            allowed_lateness=allowed_lateness,
            idle_timeout=idle_timeout,
            on_late=on_late,
        )
        return _observable(
            join_operator(self._unwrapped(), _sources([other])[0], node.fresh, "join")
        )

    def join_table(
        self,
        changelog: Observable[Any],
        *,
        key: str | Callable[[Any], Hashable] | None = None,
        how: str = "inner",
        table_key: str | Callable[[Any], Hashable] | None = None,
        table_value: str | Callable[[Any], Any] | None = None,
        store: Any = None,
        name: str = "join_table",
    ) -> Observable[Any]:
        """Each item of this stream with the latest value of its key in the table that
        ``changelog``'s items build (a value of None deletes the key): a
        :class:`~haive.dataflow.state.JoinResult` per item, from a
        :class:`~haive.dataflow.state.TableJoinNode` (see it for ``store``, which keeps the
        table over restarts). An item sees the changelog items that arrived before it.

        Example::

            >>> async def main():
            ...     profiles = Observable.of({"user": "ada", "country": "UK"})
            ...     clicks = Observable.timer(0.01).map(lambda _: {"user": "ada"})
            ...     pairs = clicks.join_table(profiles, key="user", table_value="country")
            ...     return [(p.key, p.right) for p in await pairs.to_list()]
            >>> trio.run(main)
            [('ada', 'UK')]
        """
        from ..state.table_join import TableJoinNode
        from ._join import LEFT, RIGHT
        from ._join import join as join_operator

        node = TableJoinNode(
            name=name,
            key=key,
            how=how,
            left=LEFT,
            right=RIGHT,
            table_key=table_key,
            table_value=table_value,
            store=store,
        )
        return _observable(
            join_operator(self._unwrapped(), _sources([changelog])[0], node.fresh, "join_table")
        )

    def share(self) -> SharedObservable[T]:
        """One upstream run shared by every subscriber (see
        :class:`~haive.dataflow.reactive.SharedObservable`)."""

        return SharedObservable(self)

    # -- composing ------------------------------------------------------------------------
    def pipe(self, *operators: Callable[[Observable[Any]], Observable[Any]]) -> Observable[Any]:
        """Applies operator functions in order (see
        :class:`~haive.dataflow.reactive.Operators`).

        Example::

            >>> from haive.dataflow.reactive import Operators as ops
            >>> trio.run(Observable.of(1, 2, 3).pipe(ops.map(lambda n: n * n), ops.take(2)).to_list)
            [1, 4]
        """
        result: Observable[Any] = self
        for operator in operators:
            check_callable(operator, "pipe")
            result = operator(result)
            if not isinstance(result, Observable):
                raise ConfigError(
                    f"pipe: {operator!r} returned {type(result).__name__}, not an Observable"
                )
        return result

    # -- consuming ------------------------------------------------------------------------
    @overload
    def subscribe(
        self,
        on_next: Callable[[T], Any] | Subscriber[T],
        on_error: Callable[[BaseException], Any] | None = None,
        on_completed: Callable[[], Any] | None = None,
        *,
        nursery: trio.Nursery | None = None,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        backpressure: object = "block",
        name: str | None = None,
    ) -> Subscription[T]: ...

    @overload
    def subscribe(
        self,
        on_next: None = None,
        on_error: Callable[[BaseException], Any] | None = None,
        on_completed: Callable[[], Any] | None = None,
        *,
        nursery: trio.Nursery | None = None,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        backpressure: object = "block",
        name: str | None = None,
    ) -> Subscription[T]: ...

    def subscribe(
        self,
        on_next: Callable[[T], Any] | Subscriber[T] | None = None,
        on_error: Callable[[BaseException], Any] | None = None,
        on_completed: Callable[[], Any] | None = None,
        *,
        nursery: trio.Nursery | None = None,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        backpressure: object = "block",
        name: str | None = None,
    ) -> Subscription[T]:
        """Delivers items to handlers (sync or async) in a task of their own.

        Each subscription has its own bounded buffer of ``buffer_size`` items and a
        ``backpressure`` strategy for when its handler falls behind: ``"block"`` (default:
        the producer waits), ``"drop_oldest"``, ``"drop_newest"``, ``"sliding_window"`` or
        any registered :class:`~haive.dataflow.BackpressureStrategy`. An error raised by a
        handler ends this subscription only.

        Where it runs: with ``nursery=`` it starts there at once; ``async with
        obs.subscribe(...) as sub:`` runs it for the block; otherwise it waits until the
        hot stream it is built on is opened (``async with stream:``) or until
        ``await sub.start(nursery)``. Used as a decorator (``@obs.subscribe``) it returns
        the :class:`~haive.dataflow.reactive.Subscription`.

        Example::

            >>> async def main():
            ...     seen = []
            ...     async with Observable.of(1, 2).subscribe(seen.append) as sub:
            ...         await sub.wait()
            ...     return seen, sub.state
            >>> trio.run(main)
            ([1, 2], 'completed')
        """
        subscription: Subscription[T] = Subscription(
            self,
            on_next,
            on_error,
            on_completed,
            buffer_size=buffer_size,
            backpressure=backpressure,
            name=name,
        )
        if nursery is not None:
            subscription.start_soon(nursery)
        else:
            subscription._defer()
        return subscription

    def iterate(
        self, *, buffer_size: int = DEFAULT_BUFFER_SIZE, backpressure: object = "block"
    ) -> StreamIterator[T]:
        """An async iterator over the items: ``async for item in obs.iterate(...)``.

        Sources, hot streams and fused operators are read directly in the iterating task;
        an observable that needs tasks (``debounce``, ``merge``...) is iterated inside
        ``async with obs.iterate() as items: async for item in items: ...``. ``buffer_size``
        and ``backpressure`` size the buffer between a hot stream and a slow reader.

        Example::

            >>> async def main():
            ...     return [n async for n in Observable.of(1, 2, 3).iterate()]
            >>> trio.run(main)
            [1, 2, 3]
        """
        return StreamIterator(self, buffer_size=buffer_size, backpressure=backpressure)

    def __aiter__(self) -> StreamIterator[T]:
        return self.iterate()

    async def to_list(self) -> list[T]:
        """Runs to completion and returns every item (in the calling task).

        Example::

            >>> trio.run(Observable.of("a").to_list)
            ['a']
        """
        out: list[T] = []

        async def collect(batch: list[Any]) -> None:
            out.extend(batch)

        await self._run(collect, Ready())
        return out

    async def for_each(self, fn: Callable[[T], Any]) -> None:
        """Runs to completion calling ``fn(item)`` (sync or async) in the calling task; the
        stream waits for ``fn`` (backpressure without any buffer).

        Example::

            >>> seen = []
            >>> trio.run(Observable.of(1, 2).for_each, seen.append)
            >>> seen
            [1, 2]
        """
        check_callable(fn, "for_each")
        if is_async_callable(fn):

            async def each_async(batch: list[Any]) -> None:
                for item in batch:
                    await fn(item)

            await self._run(each_async, Ready())
            return

        isawaitable = inspect.isawaitable

        async def each(batch: list[Any]) -> None:
            for result in filter(None, map(fn, batch)):
                if isawaitable(result):
                    await result

        await self._run(each, Ready())


class SharedObservable(SharedSource[T], Observable[T]):
    """One run of an upstream observable, multicast to every subscriber (``obs.share()``).

    The upstream run (the *connection*) is owned by a nursery, so it outlives any single
    subscriber: it starts when the hot stream it is built on is opened (``async with
    stream:``), or for the duration of ``async with shared:``. Subscribers come and go
    without restarting it; each has its own buffer and strategy, and an error in one never
    reaches the others. When the upstream completes or fails, every subscriber does.

    Example::

        >>> from haive.dataflow.reactive import ReactiveStream
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
        super().__init__(upstream)


class Window(WindowSource[T], Observable[T]):
    """A slice of a stream made by ``window``/``window_time``: it keeps its items and
    replays them to every reader, then follows live until the window closes.

    Example::

        >>> async def main():
        ...     windows = await Observable.of(1, 2, 3).window(2).to_list()
        ...     return [await w.to_list() for w in windows], len(windows[0])
        >>> trio.run(main)
        ([[1, 2], [3]], 2)
    """


class _SourceObservable(Observable[T]):
    """The observable an operator returns: the fluent API over the source the operator
    module made (operator modules work on sources and never need this class, which is what
    keeps them below this module). The next operator is applied to that source itself, so a
    chain of operators runs without these in between."""

    __slots__ = ("_source",)

    def __init__(self, source: Source[T]) -> None:
        super().__init__(label=source._label, roots=source._roots)
        self._source = source

    def __repr__(self) -> str:
        return repr(self._source)

    def _unwrapped(self) -> Source[T]:
        return self._source

    async def _run(self, emit: Emit, ready: Ready) -> None:
        await self._source._run(emit, ready)

    def _pullable(self) -> bool:
        return self._source._pullable()

    def _open_pull(self, options: PullOptions) -> AsyncIterator[list[T]] | None:
        return self._source._open_pull(options)


def _observable(source: Source[U]) -> Observable[U]:
    """What an operator module made, as an observable (an observable stays itself)."""
    if isinstance(source, Observable):
        return source
    return _SourceObservable(source)


def _sources(args: Iterable[Any]) -> list[Any]:
    """Arguments for an operator module: observables as their sources (see
    :meth:`Observable._unwrapped`), anything else as given, for the operator to check."""
    return [arg._unwrapped() if isinstance(arg, Observable) else arg for arg in args]
