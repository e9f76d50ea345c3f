"""Sliding time windows over cumulative counters (rates and ratios without per-event state).

A :class:`CounterWindow` is told the *cumulative* value of a few counters now and then
(each sample, or each recorded event) and keeps at most one mark per ``resolution``
seconds. The change of a counter over the window is the current value minus the value at
the newest mark at least ``window`` seconds old, so memory is bounded by
``window / resolution`` marks whatever the event rate.
"""

from __future__ import annotations

from collections import deque

from haive.dataflow.errors import ConfigError
from haive.dataflow.runtime.units import Duration, parse_duration


def as_seconds(value: Duration, what: str) -> float:
    """A positive duration in seconds from ``1.5`` or ``"1m"`` / ``"500ms"``.

    Example::

        >>> as_seconds("1m", "window"), as_seconds(2, "window")
        (60.0, 2.0)
    """
    seconds = parse_duration(value, what=what)
    if seconds <= 0:
        raise ConfigError(f"{what}: must be longer than 0 s, got {value!r}")
    return seconds


class CounterWindow:
    """Changes of ``width`` cumulative counters over the last ``window`` seconds.

    Example: a throughput of 100 items/s measured over a 1 s window::

        >>> w = CounterWindow(window=1.0, width=1)
        >>> for tick in range(31):
        ...     w.update(tick * 0.1, (tick * 10,))
        >>> w.delta(3.0), w.rate(3.0)
        ((100,), (100.0,))

    and 20 events recorded every 0.1 s (each batch counts in windows ending at its time)::

        >>> w = CounterWindow(window=1.0, width=1)
        >>> total = 0
        >>> for tick in range(30):
        ...     total += 20
        ...     w.advance(tick * 0.1, (total,))
        >>> w.delta(3.0), w.rate(3.0)
        ((200,), (200.0,))
    """

    __slots__ = ("_advancing", "_last", "_marks", "_values", "resolution", "width", "window")

    def __init__(self, window: float, *, width: int = 1, resolution: float | None = None) -> None:
        if window <= 0:
            raise ConfigError(f"CounterWindow: window must be > 0 s, got {window!r}")
        self.window = float(window)
        self.resolution = float(resolution) if resolution is not None else self.window / 20
        self.width = width
        self._marks: deque[tuple[float, tuple[float, ...]]] = deque()
        self._last: float | None = None
        self._advancing = False
        self._values: tuple[float, ...] = (0,) * width

    def update(self, now: float, values: tuple[float, ...]) -> None:
        """The counters' cumulative ``values`` at time ``now``, everything up to ``now`` included.

        The form for periodic samples. Counters start from zero at the first call.
        """
        marks = self._marks
        if not marks:
            marks.append((now, (0,) * self.width))
        elif now - marks[-1][0] >= self.resolution:
            marks.append((now, values))
            self._prune(now)
        self._last = now
        self._advancing = False
        self._values = values

    def advance(self, now: float, values: tuple[float, ...]) -> None:
        """The counters grew to ``values`` through events that happen at ``now``.

        The form for per-event recording: a mark taken now holds the values from *before*
        these events, so they count inside any window ending at or after ``now``.
        """
        marks = self._marks
        if not marks or now - marks[-1][0] >= self.resolution:
            marks.append((now, self._values))
            self._prune(now)
        self._last = now
        self._advancing = True
        self._values = values

    def _prune(self, now: float) -> None:
        # Keep exactly one mark at or before the window's start: the base of deltas.
        marks = self._marks
        cutoff = now - self.window
        while len(marks) > 1 and marks[1][0] <= cutoff:
            marks.popleft()

    def _base(self, now: float) -> tuple[float, tuple[float, ...]] | None:
        """Time and counter values at the start of the window ending at ``now``."""
        self._prune(now)
        marks = self._marks
        if not marks:
            return None
        first_time = marks[0][0]
        cutoff = now - self.window
        if first_time > cutoff:
            return marks[0]  # the window is not full yet: count from the first update
        if self._last is not None and self._last <= cutoff:
            return cutoff, self._values  # nothing happened inside the window
        if self._advancing and len(marks) > 1 and cutoff >= first_time + self.resolution:
            # No event can lie between first_time + resolution and the next mark (it would
            # have made a mark), so the counters at the cutoff are the next mark's values.
            return cutoff, marks[1][1]
        return marks[0]

    def delta(self, now: float) -> tuple[float, ...]:
        """How much each counter grew over the window ending at ``now``."""
        base = self._base(now)
        if base is None:
            return (0,) * self.width
        return tuple(v - b for v, b in zip(self._values, base[1], strict=True))

    def span(self, now: float) -> float:
        """Seconds the window really covers at ``now`` (shorter just after the start)."""
        base = self._base(now)
        return now - base[0] if base is not None else 0.0

    def rate(self, now: float) -> tuple[float, ...]:
        """Growth per second of each counter over the window ending at ``now``."""
        base = self._base(now)
        if base is None or now <= base[0]:
            return (0.0,) * self.width
        # Just after the start the window is short; a floor (a tenth of the window, at most
        # 1 s) keeps a few early events from reading as an enormous rate.
        elapsed = max(now - base[0], min(self.window / 10, 1.0))
        return tuple((v - b) / elapsed for v, b in zip(self._values, base[1], strict=True))

    @property
    def values(self) -> tuple[float, ...]:
        """The latest cumulative values."""
        return self._values
