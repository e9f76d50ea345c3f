"""What a join is and what it yields: :class:`IntervalJoin`, :class:`JoinResult`.

A stream-stream join pairs the items of two sides that share a key and meet in time: in the
same window (a :class:`~haive.dataflow.state.TumblingWindow`, ``SlidingWindow`` or
``SessionWindow``) or within an interval of each other (:class:`IntervalJoin`).
:class:`~haive.dataflow.state.JoinNode` runs it; :class:`JoinResult` is one pair.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

import attrs

from ..errors import ConfigError
from ..runtime.units import parse_duration

JoinHow = Literal["inner", "left", "outer"]
JOIN_HOWS: tuple[str, ...] = ("inner", "left", "outer")


def _signed_seconds(parameter: str, value: object) -> float:
    # Interval bounds may be negative ("the right item up to 5s before the left one"), so a
    # string may start with "-"; the rest is a duration.
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(
            f"IntervalJoin({parameter}={value!r}): {parameter} must be seconds (a number, a "
            f"timedelta or a string like '-5s'), got {value!r}"
        )
    if isinstance(value, str):
        text = value.strip()
        sign = -1.0 if text.startswith("-") else 1.0
        try:
            return sign * parse_duration(text.lstrip("-+"), what=parameter)
        except (ConfigError, TypeError):
            raise ConfigError(
                f"IntervalJoin({parameter}={value!r}): {parameter} must be seconds (a number, "
                f"a timedelta or a string like '-5s'), got {value!r}"
            ) from None
    return float(value)


def _lower(value: object) -> float:
    return _signed_seconds("lower", value)


def _upper(value: object) -> float:
    return _signed_seconds("upper", value)


@attrs.frozen
class IntervalJoin:
    """Pairs a left item at ``t`` with right items of its key at ``t + lower .. t + upper``.

    Both bounds are inclusive, in seconds (a number, a timedelta or a string such as
    ``"-5s"``), and may be negative (Flink's ``between(lower, upper)``). A pair is emitted as
    soon as its second item arrives; an item is forgotten once the watermark has passed the
    last time a partner could have.

    Example::

        >>> IntervalJoin("-5s", "10s")
        IntervalJoin(lower=-5.0, upper=10.0)
    """

    lower: float = attrs.field(converter=_lower)
    upper: float = attrs.field(converter=_upper)

    def __attrs_post_init__(self) -> None:
        if self.lower > self.upper:
            raise ConfigError(
                f"IntervalJoin(lower={self.lower!r}, upper={self.upper!r}): lower must be <= upper"
            )


@attrs.frozen(slots=True)
class JoinResult:
    """One joined pair of ``key``: a ``left`` and a ``right`` item. In a left or outer join
    the missing side is None. Window joins give the window ``[start, end)``; interval and
    table joins leave them None.

    Example::

        >>> JoinResult("u1", {"order": 1}, {"paid": True}, 0.0, 60.0).to_dict()["right"]
        {'paid': True}
    """

    key: Any
    left: Any
    right: Any
    start: float | None = None
    end: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "left": self.left,
            "right": self.right,
            "start": self.start,
            "end": self.end,
        }
