"""Reactive streams on trio: observables, hot streams, operators and subscribers.

* :class:`Observable`: cold and composable (``map``, ``filter``, ``debounce``, ``merge``...).
  Consecutive per-item operators are fused into one step that runs in one task over
  batches, so a chain costs one pass per batch, not one task hop per operator.
* :class:`ReactiveStream`: a hot stream you ``await stream.emit(item)`` into.
* :class:`Subscription` / :class:`Subscriber`: handlers in a task of their own, behind a
  bounded buffer with the core's backpressure strategies (block by default).
* :class:`Operators`: the operators as functions for ``obs.pipe(ops.map(f), ...)``.
* :class:`ObservableSource` and :meth:`Observable.from_pipeline`: bridges to pipelines.

Time is trio's clock everywhere: ``trio.testing.MockClock`` drives every time operator.
Durations are in seconds, as in trio, not milliseconds: the product description's
``debounce(1000)`` is ``debounce(1.0)`` here, or ``debounce(timedelta(seconds=1))``, or
``debounce("1000ms")``.

Example::

    >>> import trio
    >>> async def main():
    ...     stream = ReactiveStream[int]()
    ...     totals = []
    ...     stream.buffer(2).map(sum).subscribe(totals.append)
    ...     async with stream:
    ...         await stream.emit_batch([1, 2, 3, 4, 5])
    ...     return totals
    >>> trio.run(main)
    [3, 7, 5]
"""

from __future__ import annotations

from ._fused import EmptyStreamError
from .bridges import ObservableSource
from .observable import Observable
from .operators import Operators
from .subject import HotReader, ReactiveStream, SharedObservable, Window
from .subscription import StreamIterator, Subscriber, Subscription

__all__ = [
    "EmptyStreamError",
    "HotReader",
    "Observable",
    "ObservableSource",
    "Operators",
    "ReactiveStream",
    "SharedObservable",
    "StreamIterator",
    "Subscriber",
    "Subscription",
    "Window",
]
