"""Window kinds and window results: what a window is, and what a closed window yields.

:class:`TumblingWindow`, :class:`SlidingWindow` and :class:`SessionWindow` are the frozen
specifications (time or count, validated on construction) that
:class:`~haive.dataflow.state.WindowedAggregateNode` takes; :class:`WindowResult` is one
closed window of one key, and :func:`window_results_by_key` groups them.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import attrs

from ..errors import ConfigError
from ..runtime.units import Duration
from ..runtime.validation import POSITIVE_INT, duration, number, optional_duration


def _tumbling_size(value: object) -> float | None:
    return optional_duration("TumblingWindow", "size", value)


def _sliding_size(value: object) -> float | None:
    return optional_duration("SlidingWindow", "size", value)


def _offset(owner: str, value: object) -> float:
    # An offset shifts window boundaries and may be negative, so it is a number of seconds
    # (or a timedelta), not a duration.
    if isinstance(value, timedelta):
        value = value.total_seconds()
    return float(_OFFSET.check(owner, "offset", value))  # type: ignore[arg-type]


def _tumbling_offset(value: object) -> float:
    return _offset("TumblingWindow", value)


def _sliding_offset(value: object) -> float:
    return _offset("SlidingWindow", value)


_OFFSET = number()


@attrs.frozen
class TumblingWindow:
    """Fixed, non-overlapping windows: ``TumblingWindow("1s")`` or ``TumblingWindow(count=100)``.

    Time windows are aligned to ``offset`` (seconds; windows are ``[offset + k*size, ...)``).
    ``size`` and ``offset`` are in seconds, not milliseconds: a number, a
    :class:`~datetime.timedelta` or a string such as ``"250ms"`` or ``"5m"``.

    Example::

        >>> TumblingWindow("5m").size, TumblingWindow(count=10).count
        (300.0, 10)
    """

    size: float | None = attrs.field(default=None, converter=_tumbling_size)
    count: int | None = attrs.field(default=None, kw_only=True, validator=POSITIVE_INT.optional())
    offset: float = attrs.field(default=0.0, kw_only=True, converter=_tumbling_offset)

    def __attrs_post_init__(self) -> None:
        if (self.size is None) == (self.count is None):
            raise ConfigError(
                f"TumblingWindow(size={self.size!r}, count={self.count!r}): give a size (time) "
                "or count=N, not both"
            )


@attrs.frozen
class SlidingWindow:
    """Overlapping windows of ``size`` starting every ``every``: ``SlidingWindow("10s", "5s")``.

    By count: ``SlidingWindow(count=100, every=10)`` emits, every 10 items of a key, the
    last (up to) 100 of them. Time ``size`` and ``every`` are in seconds, not milliseconds: a
    number, a :class:`~datetime.timedelta` or a string such as ``"10s"``.

    Example::

        >>> w = SlidingWindow("1m", every="10s")
        >>> w.size, w.every
        (60.0, 10.0)
    """

    size: float | None = attrs.field(default=None, converter=_sliding_size)
    every: Duration | None = attrs.field(default=None)
    count: int | None = attrs.field(default=None, kw_only=True, validator=POSITIVE_INT.optional())
    offset: float = attrs.field(default=0.0, kw_only=True, converter=_sliding_offset)

    def __attrs_post_init__(self) -> None:
        if (self.size is None) == (self.count is None):
            raise ConfigError(
                f"SlidingWindow(size={self.size!r}, count={self.count!r}): give a size (time) "
                "or count=N, not both"
            )
        if self.every is None:
            raise ConfigError("SlidingWindow(every=None): give every= (how often a window starts)")
        if self.size is not None:
            every = duration("SlidingWindow", "every", self.every)
            object.__setattr__(self, "every", every)
        else:
            POSITIVE_INT.check("SlidingWindow", "every", self.every)


def _gap(value: Duration) -> float:
    return duration("SessionWindow", "gap", value)


@attrs.frozen
class SessionWindow:
    """Per-key sessions: a window closes after ``gap`` without events of its key.

    ``gap`` is in seconds, not milliseconds: a number, a :class:`~datetime.timedelta` or a
    string such as ``"30m"``.

    Example::

        >>> SessionWindow("30m").gap
        1800.0
    """

    gap: float = attrs.field(converter=_gap)


WindowSpec = TumblingWindow | SlidingWindow | SessionWindow


@attrs.frozen(slots=True)
class WindowResult:
    """One closed window of one key: ``[start, end)`` (seconds, or item numbers for count
    windows), the aggregate ``value`` and how many items it holds.

    Example::

        >>> WindowResult("a", 0.0, 1.0, 6, 3).to_dict()["value"]
        6
    """

    key: Any
    start: float
    end: float
    value: Any
    count: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "start": self.start,
            "end": self.end,
            "value": self.value,
            "count": self.count,
        }


def window_results_by_key(results: Iterable[WindowResult]) -> dict[Any, list[WindowResult]]:
    """Group results per key, in window order (handy in tests and reports).

    Example::

        >>> window_results_by_key([WindowResult("a", 0, 1, 1, 1)])["a"][0].value
        1
    """
    grouped: dict[Any, list[WindowResult]] = {}
    for result in results:
        grouped.setdefault(result.key, []).append(result)
    for rows in grouped.values():
        rows.sort(key=lambda r: r.start)
    return grouped
