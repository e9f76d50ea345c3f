"""``Operators``: every operator as a function for ``stream.pipe(ops.map(f), ops.filter(g))``."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from ..runtime.retry import RetryPolicy
from ..runtime.units import Duration
from ._runtime import NOTHING
from .observable import Observable

Operator = Callable[[Observable[Any]], Observable[Any]]


def _checked(operator: Operator) -> Operator:
    """Apply ``operator`` once to an empty observable, so bad arguments (``take(-1)``,
    ``debounce("soon")``) fail where the operator is made, not where it is piped.

    Applying an operator only builds an observable; nothing runs.
    """
    operator(Observable.of())
    return operator


class Operators:
    """The operators of :class:`~haive.dataflow.reactive.Observable` as pipeable functions.

    ``ops.map(f)`` returns a function that applies ``.map(f)`` to the observable it gets;
    :meth:`Observable.pipe` applies several in order (fusion is the same as with methods).
    Durations (``debounce``, ``throttle``, ``sample``, ``buffer_time``, ``window_time``,
    ``delay``, ``timeout``, ``retry``'s ``backoff``) are in seconds as in trio, not
    milliseconds; a :class:`~datetime.timedelta` or ``"250ms"`` works too.

    Example::

        >>> import trio
        >>> from haive.dataflow.reactive import Observable, Operators as ops
        >>> pipeline = Observable.of(1, 2, 3, 4).pipe(
        ...     ops.filter(lambda n: n % 2 == 0),
        ...     ops.map(lambda n: n * 100),
        ...     ops.start_with(0),
        ... )
        >>> trio.run(pipeline.to_list)
        [0, 200, 400]
    """

    @staticmethod
    def map(fn: Callable[[Any], Any]) -> Operator:
        return _checked(lambda source: source.map(fn))

    @staticmethod
    def filter(predicate: Callable[[Any], object]) -> Operator:
        return _checked(lambda source: source.filter(predicate))

    @staticmethod
    def flat_map(fn: Callable[[Any], Any], *, max_concurrent: int | None = 16) -> Operator:
        return _checked(lambda source: source.flat_map(fn, max_concurrent=max_concurrent))

    @staticmethod
    def scan(fn: Callable[[Any, Any], Any], seed: Any = NOTHING) -> Operator:
        return _checked(lambda source: source.scan(fn, seed))

    @staticmethod
    def reduce(fn: Callable[[Any, Any], Any], seed: Any = NOTHING) -> Operator:
        return _checked(lambda source: source.reduce(fn, seed))

    @staticmethod
    def take(count: int) -> Operator:
        return _checked(lambda source: source.take(count))

    @staticmethod
    def skip(count: int) -> Operator:
        return _checked(lambda source: source.skip(count))

    @staticmethod
    def distinct(key: Callable[[Any], Hashable] | None = None) -> Operator:
        return _checked(lambda source: source.distinct(key))

    @staticmethod
    def distinct_until_changed(key: Callable[[Any], Any] | None = None) -> Operator:
        return _checked(lambda source: source.distinct_until_changed(key))

    @staticmethod
    def debounce(period: Duration) -> Operator:
        return _checked(lambda source: source.debounce(period))

    @staticmethod
    def throttle(period: Duration) -> Operator:
        return _checked(lambda source: source.throttle(period))

    @staticmethod
    def sample(period: Duration) -> Operator:
        return _checked(lambda source: source.sample(period))

    @staticmethod
    def buffer(count: int) -> Operator:
        return _checked(lambda source: source.buffer(count))

    @staticmethod
    def buffer_time(
        period: Duration, *, max_count: int | None = None, emit_empty: bool = False
    ) -> Operator:
        return _checked(
            lambda source: source.buffer_time(period, max_count=max_count, emit_empty=emit_empty)
        )

    @staticmethod
    def window(count: int) -> Operator:
        return _checked(lambda source: source.window(count))

    @staticmethod
    def window_time(period: Duration) -> Operator:
        return _checked(lambda source: source.window_time(period))

    @staticmethod
    def delay(period: Duration) -> Operator:
        return _checked(lambda source: source.delay(period))

    @staticmethod
    def timeout(period: Duration, fallback: Observable[Any] | None = None) -> Operator:
        return _checked(lambda source: source.timeout(period, fallback))

    @staticmethod
    def retry(
        retries: int | RetryPolicy | None = None,
        *,
        backoff: Duration = 0.0,
        multiplier: float = 2.0,
        reset_on_success: bool = True,
    ) -> Operator:
        return _checked(
            lambda source: source.retry(
                retries, backoff=backoff, multiplier=multiplier, reset_on_success=reset_on_success
            )
        )

    @staticmethod
    def catch_error(
        handler: Callable[[BaseException], Any],
        *,
        exceptions: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    ) -> Operator:
        return _checked(lambda source: source.catch_error(handler, exceptions=exceptions))

    @staticmethod
    def share() -> Operator:
        return _checked(lambda source: source.share())

    @staticmethod
    def merge(*others: Observable[Any]) -> Operator:
        return _checked(lambda source: Observable.merge(source, *others))

    @staticmethod
    def zip(*others: Any) -> Operator:
        return _checked(lambda source: Observable.zip(source, *others))

    @staticmethod
    def concat(*others: Observable[Any]) -> Operator:
        return _checked(lambda source: Observable.concat(source, *others))

    @staticmethod
    def combine_latest(*others: Any) -> Operator:
        return _checked(lambda source: Observable.combine_latest(source, *others))

    @staticmethod
    def with_latest_from(*others: Any) -> Operator:
        return _checked(lambda source: source.with_latest_from(*others))

    @staticmethod
    def start_with(*items: Any) -> Operator:
        return _checked(lambda source: source.start_with(*items))

    @staticmethod
    def tap(
        on_next: Callable[[Any], Any] | None = None,
        on_error: Callable[[BaseException], Any] | None = None,
        on_completed: Callable[[], Any] | None = None,
    ) -> Operator:
        return _checked(lambda source: source.tap(on_next, on_error, on_completed))
