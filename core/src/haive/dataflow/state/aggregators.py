"""Window aggregators: how the items of one window fold into the value it emits.

:class:`Aggregator` is the interface (``create``/``add``/``merge``/``result``, fed lists of
items so the built-ins fold at C speed); the built-ins are :class:`Count`, :class:`Sum`,
:class:`Mean`, :class:`Min`, :class:`Max`, :class:`Collect` and :class:`Fold`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

from ..errors import ConfigError
from .fields import FieldGetter


class Aggregator(abc.ABC):
    """Folds the items of a window into an accumulator, batch by batch.

    ``add`` receives a *list* of items (all for the same window) so built-ins can fold at C
    speed; ``merge`` combines two accumulators (session windows merging); ``result`` turns
    the accumulator into the emitted value.

    Example: the largest item per window::

        >>> class Largest(Aggregator):
        ...     def create(self): return None
        ...     def add(self, acc, items):
        ...         top = max(items)
        ...         return top if acc is None else max(acc, top)
        ...     def merge(self, a, b): return b if a is None else a if b is None else max(a, b)
        >>> agg = Largest()
        >>> agg.result(agg.add(agg.create(), [3, 9, 4]))
        9
    """

    @abc.abstractmethod
    def create(self) -> Any:
        """A new, empty accumulator."""

    @abc.abstractmethod
    def add(self, acc: Any, items: list[Any]) -> Any:
        """The accumulator after adding ``items``."""

    @abc.abstractmethod
    def merge(self, a: Any, b: Any) -> Any:
        """One accumulator holding what ``a`` and ``b`` hold."""

    def result(self, acc: Any) -> Any:
        """The value emitted for a closed window (default: the accumulator)."""
        return acc


class Count(Aggregator):
    """The number of items in the window.

    Example::

        >>> Count().add(Count().create(), ["a", "b"])
        2
    """

    def create(self) -> int:
        return 0

    def add(self, acc: int, items: list[Any]) -> int:
        return acc + len(items)

    def merge(self, a: int, b: int) -> int:
        return a + b


class _FieldAggregator(Aggregator):
    """An aggregator of one ``field`` of the items (a name, a function, or None for the
    items themselves; see :class:`FieldGetter`)."""

    def __init__(self, field: str | Callable[[Any], Any] | None = None) -> None:
        self.field = FieldGetter(field)


class Sum(_FieldAggregator):
    """The sum of ``field`` (a name or a function; default the items themselves).

    Example::

        >>> Sum("v").add(0, [{"v": 2}, {"v": 3}])
        5
    """

    def create(self) -> Any:
        return 0

    def add(self, acc: Any, items: list[Any]) -> Any:
        return acc + sum(self.field.many(items))

    def merge(self, a: Any, b: Any) -> Any:
        return a + b


class Mean(_FieldAggregator):
    """The mean of ``field`` (None for an empty window).

    Example::

        >>> m = Mean()
        >>> m.result(m.add(m.create(), [1, 2, 6]))
        3.0
    """

    def create(self) -> tuple[float, int]:
        return (0.0, 0)

    def add(self, acc: tuple[float, int], items: list[Any]) -> tuple[float, int]:
        return (acc[0] + sum(self.field.many(items)), acc[1] + len(items))

    def merge(self, a: tuple[float, int], b: tuple[float, int]) -> tuple[float, int]:
        return (a[0] + b[0], a[1] + b[1])

    def result(self, acc: tuple[float, int]) -> float | None:
        return acc[0] / acc[1] if acc[1] else None


class Min(_FieldAggregator):
    """The smallest ``field`` value.

    Example::

        >>> Min().add(None, [3, 1, 2])
        1
    """

    def create(self) -> Any:
        return None

    def add(self, acc: Any, items: list[Any]) -> Any:
        low = min(self.field.many(items))
        return low if acc is None or low < acc else acc

    def merge(self, a: Any, b: Any) -> Any:
        if a is None:
            return b
        return a if b is None or a <= b else b


class Max(_FieldAggregator):
    """The largest ``field`` value.

    Example::

        >>> Max().add(None, [3, 1, 2])
        3
    """

    def create(self) -> Any:
        return None

    def add(self, acc: Any, items: list[Any]) -> Any:
        high = max(self.field.many(items))
        return high if acc is None or high > acc else acc

    def merge(self, a: Any, b: Any) -> Any:
        if a is None:
            return b
        return a if b is None or a >= b else b


class Collect(Aggregator):
    """The window's items as a list, or ``fn(items)`` when a function is given.

    Example::

        >>> c = Collect(len)
        >>> c.result(c.add(c.create(), ["a", "b"]))
        2
    """

    def __init__(self, fn: Callable[[list[Any]], Any] | None = None) -> None:
        if fn is not None and not callable(fn):
            raise ConfigError(f"Collect: fn must be callable, got {fn!r}")
        self.fn = fn

    def create(self) -> list[Any]:
        return []

    def add(self, acc: list[Any], items: list[Any]) -> list[Any]:
        acc.extend(items)
        return acc

    def merge(self, a: list[Any], b: list[Any]) -> list[Any]:
        return a + b

    def result(self, acc: list[Any]) -> Any:
        return acc if self.fn is None else self.fn(acc)


class Fold(Aggregator):
    """Per-item folding: ``fold(acc, item)`` from ``initial()``; ``merge`` for sessions.

    Example::

        >>> f = Fold(set, lambda acc, item: acc | {item}, lambda a, b: a | b)
        >>> sorted(f.add(f.create(), ["x", "y", "x"]))
        ['x', 'y']
    """

    def __init__(
        self,
        initial: Callable[[], Any],
        fold: Callable[[Any, Any], Any],
        merge: Callable[[Any, Any], Any] | None = None,
    ) -> None:
        if not callable(initial) or not callable(fold):
            raise ConfigError("Fold: initial and fold must be callables")
        self.initial = initial
        self.fold = fold
        self.merge_fn = merge

    def create(self) -> Any:
        return self.initial()

    def add(self, acc: Any, items: list[Any]) -> Any:
        fold = self.fold
        for item in items:
            acc = fold(acc, item)
        return acc

    def merge(self, a: Any, b: Any) -> Any:
        if self.merge_fn is None:
            raise ConfigError("Fold: session windows merge accumulators; give merge=")
        return self.merge_fn(a, b)
