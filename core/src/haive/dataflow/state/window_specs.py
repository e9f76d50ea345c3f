"""Window kinds and window results: what a window is, and what a closed window yields.

:class:`TumblingWindow`, :class:`SlidingWindow` and :class:`SessionWindow` are the frozen
specifications (time or count, validated on construction) that
:class:`~haive.dataflow.state.WindowedAggregateNode` takes; :class:`WindowResult` is one
closed window of one key, and :func:`window_results_by_key` groups them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from ..errors import ConfigError
from ..units import Duration, parse_duration


def _opt_duration(value: Duration | None) -> float | None:
    return None if value is None else parse_duration(value, what="window size")


def _offset(value: Duration) -> float:
    return parse_duration(value, what="window offset")


def _positive_int(value: int | None, what: str) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ConfigError(f"{what} must be an int >= 1, got {value!r}")


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

    size: float | None = attrs.field(default=None, converter=_opt_duration)
    count: int | None = attrs.field(default=None, kw_only=True)
    offset: float = attrs.field(default=0.0, kw_only=True, converter=_offset)

    def __attrs_post_init__(self) -> None:
        if (self.size is None) == (self.count is None):
            raise ConfigError("TumblingWindow: give a size (time) or count=N, not both")
        if self.size is not None and self.size <= 0:
            raise ConfigError(f"TumblingWindow: size must be positive, got {self.size!r}")
        _positive_int(self.count, "TumblingWindow: count")


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

    size: float | None = attrs.field(default=None, converter=_opt_duration)
    every: Duration | None = attrs.field(default=None)
    count: int | None = attrs.field(default=None, kw_only=True)
    offset: float = attrs.field(default=0.0, kw_only=True, converter=_offset)

    def __attrs_post_init__(self) -> None:
        if (self.size is None) == (self.count is None):
            raise ConfigError("SlidingWindow: give a size (time) or count=N, not both")
        if self.every is None:
            raise ConfigError("SlidingWindow: give every= (how often a window starts)")
        if self.size is not None:
            every = parse_duration(self.every, what="SlidingWindow every")
            if self.size <= 0 or every <= 0:
                raise ConfigError("SlidingWindow: size and every must be positive")
            object.__setattr__(self, "every", every)
        else:
            _positive_int(self.count, "SlidingWindow: count")
            _positive_int(self.every, "SlidingWindow: every (for count windows)")  # type: ignore[arg-type]


def _gap(value: Duration) -> float:
    return parse_duration(value, what="session gap")


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

    def __attrs_post_init__(self) -> None:
        if self.gap <= 0:
            raise ConfigError(f"SessionWindow: gap must be positive, got {self.gap!r}")


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
