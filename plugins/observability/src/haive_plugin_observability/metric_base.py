"""The metric protocol: :class:`Metric`, the base of everything a collector holds.

A metric learns from recorded events and pipeline samples and answers with an immutable
snapshot; time is the collector's clock (trio's by default). ``_AsNumber`` lets metrics
with one headline figure be used as a number.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import trio

from .sampling import RunSample

Clock = Callable[[], float]


def _default_clock() -> float:
    return trio.current_time()


class Metric(abc.ABC):
    """Base of everything a :class:`MetricsCollector` holds.

    A metric learns from events (:meth:`observe`), from pipeline samples
    (:meth:`observe_sample`) and answers with an immutable :meth:`snapshot`. Subclass it for
    custom metrics; unknown event shapes should be ignored, not raise.

    Example::

        >>> from haive_plugin_observability import MetricsCollector
        >>> class Bytes(Metric):
        ...     kind = "bytes"
        ...     def __init__(self):
        ...         self.total = 0
        ...     def observe(self, event, now):
        ...         self.total += len(event.get("payload", b""))
        ...     def snapshot(self, now):
        ...         return self.total
        >>> collector = MetricsCollector({"bytes": Bytes()}, clock=lambda: 0.0)
        >>> collector.record_nowait({"payload": b"abc"})
        >>> collector.get_current().bytes
        3
    """

    kind: ClassVar[str] = "custom"
    name: str = ""
    _clock: Clock = staticmethod(_default_clock)

    _refresh: Callable[[], None] | None = None

    def bind(self, name: str, clock: Clock, refresh: Callable[[], None] | None = None) -> None:
        """Called by the collector: this metric's name, the clock it shares, and how to make
        it sample the pipelines it monitors now (so reading a figure is always current)."""
        self.name = name
        self._clock = clock
        self._refresh = refresh

    def now(self) -> float:
        return self._clock()

    def fresh_now(self) -> float:
        """Sample what the collector monitors, then return the time (for live properties)."""
        if self._refresh is not None:
            self._refresh()
        return self._clock()

    def observe(self, event: Any, now: float) -> None:
        """Learn from one recorded event."""

    def observe_sample(self, sample: RunSample, now: float) -> None:
        """Learn from one sample of a running pipeline."""

    def poll(self, now: float) -> None:
        """Sample whatever this metric watches by itself (called on every collector sample)."""

    @abc.abstractmethod
    def snapshot(self, now: float) -> Any:
        """An immutable view of the metric at ``now``."""


class _AsNumber:
    """For metrics with one headline figure, ``current``: ``float(metric)`` and
    ``f"{metric:.1f}"`` use it."""

    if TYPE_CHECKING:

        @property
        def current(self) -> float: ...

    def __float__(self) -> float:
        return self.current

    def __format__(self, spec: str) -> str:
        return format(self.current, spec)
