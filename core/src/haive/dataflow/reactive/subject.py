"""Hot streams: :class:`ReactiveStream`, which you emit into.

The other hot kinds are made by operators, so they are defined beside
:class:`~haive.dataflow.reactive.Observable` and re-exported here:
:class:`~haive.dataflow.reactive.SharedObservable` (``obs.share()``: one upstream run
multicast to many subscribers) and :class:`~haive.dataflow.reactive.Window` (``window``,
``window_time``: a finished or growing slice of a stream, replayed to each reader). Their
machinery, and the :class:`HotReader` every hot reader is, is in ``_hot``.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from ..errors import ClosedError, ConfigError
from ._hot import YIELD_EVERY, HotReader, HotSource, SharedSource
from ._runtime import collapsing_groups
from .observable import Observable, SharedObservable, Window

if TYPE_CHECKING:
    from .subscription import Subscription

__all__ = ["YIELD_EVERY", "HotReader", "ReactiveStream", "SharedObservable", "Window"]

T = TypeVar("T")


class ReactiveStream(HotSource[T], Observable[T]):
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
        self._shares: list[SharedSource[Any]] = []
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
