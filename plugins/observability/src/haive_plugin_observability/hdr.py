"""HDR-style log-bucketed histograms: constant relative error, cheap to record and merge.

Values are non-negative integers (latencies are recorded in microseconds). As in
HdrHistogram, the value range is split into power-of-two buckets, each cut into the same
number of linear sub-buckets, so every recorded value is known to within a fixed relative
error (below 1 % with the default two significant figures) whatever its magnitude. Recording
is a ``bit_length`` and a list increment; a histogram covering 1 µs to an hour has under
4,000 counters.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence

from haive.dataflow.errors import ConfigError


class LogHistogram:
    """Counts of non-negative integer values in log-linear buckets (HdrHistogram layout).

    ``significant_figures`` (1 to 4) sets the precision: values are kept to within
    ``1 / 10**significant_figures`` relative error. Values above ``highest`` are recorded
    as ``highest`` (and counted in :attr:`clamped`).

    Example::

        >>> h = LogHistogram()
        >>> for us in range(1, 1001):
        ...     h.record(us)
        >>> h.count, h.min, h.max
        (1000, 1, 1000)
        >>> h.percentile(50), h.percentile(99), h.percentile(100)
        (501, 991, 1000)
        >>> h.percentile(99.9)
        999
    """

    __slots__ = (
        "_counts",
        "_half_magnitude",
        "_hi",
        "_lo",
        "_sub_half",
        "clamped",
        "count",
        "highest",
        "max",
        "min",
        "significant_figures",
        "total",
    )

    def __init__(self, significant_figures: int = 2, highest: int = 3_600_000_000) -> None:
        if not isinstance(significant_figures, int) or not 1 <= significant_figures <= 4:
            raise ConfigError(
                f"LogHistogram: significant_figures must be an int from 1 to 4, "
                f"got {significant_figures!r}"
            )
        if not isinstance(highest, int) or highest < 2:
            raise ConfigError(f"LogHistogram: highest must be an int >= 2, got {highest!r}")
        self.significant_figures = significant_figures
        self.highest = highest
        largest_single_unit = 2 * 10**significant_figures
        sub_count_magnitude = math.ceil(math.log2(largest_single_unit))
        self._half_magnitude = sub_count_magnitude - 1
        self._sub_half = 1 << self._half_magnitude
        self._counts: list[int] = [0] * (self._index(highest) + 1)
        # Indexes of the lowest and highest non-empty counters: loops touch only those.
        self._lo = len(self._counts)
        self._hi = -1
        self.count = 0
        self.total = 0
        self.min = 0
        self.max = 0
        self.clamped = 0

    # -- layout --------------------------------------------------------------------------
    def _index(self, value: int) -> int:
        bucket = value.bit_length() - self._half_magnitude - 1
        if bucket <= 0:
            return value
        return (bucket << self._half_magnitude) + (value >> bucket)

    def _range(self, index: int) -> tuple[int, int]:
        """Lowest and highest value that land in counter ``index``."""
        half = self._sub_half
        if index < 2 * half:
            return index, index
        bucket = (index >> self._half_magnitude) - 1
        sub = index - (bucket << self._half_magnitude)
        low = sub << bucket
        return low, low + (1 << bucket) - 1

    # -- recording -----------------------------------------------------------------------
    def record(self, value: int, count: int = 1) -> None:
        """Add ``count`` occurrences of ``value`` (a non-negative int)."""
        if value < 0:
            raise ValueError(f"LogHistogram records non-negative values, got {value!r}")
        if count <= 0:
            return
        if value > self.highest:
            self.clamped += count
            value = self.highest
        index = self._index(value)
        self._counts[index] += count
        if index < self._lo:
            self._lo = index
        if index > self._hi:
            self._hi = index
        if self.count == 0 or value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        self.count += count
        self.total += value * count

    def record_many(self, values: Iterable[int]) -> None:
        """Record each of ``values`` once."""
        for value in values:
            self.record(value)

    def merge(self, other: LogHistogram) -> None:
        """Add every count of ``other`` (same precision and range) into this histogram."""
        if (other.significant_figures, other.highest) != (self.significant_figures, self.highest):
            raise ConfigError("LogHistogram.merge: histograms have different precision or range")
        if not other.count:
            return
        counts = self._counts
        theirs = other._counts
        for index in range(other._lo, other._hi + 1):
            n = theirs[index]
            if n:
                counts[index] += n
        self._lo = min(self._lo, other._lo)
        self._hi = max(self._hi, other._hi)
        if self.count == 0 or other.min < self.min:
            self.min = other.min
        self.max = max(self.max, other.max)
        self.count += other.count
        self.total += other.total
        self.clamped += other.clamped

    def reset(self) -> None:
        """Forget every recorded value."""
        self._counts = [0] * len(self._counts)
        self._lo, self._hi = len(self._counts), -1
        self.count = self.total = self.min = self.max = self.clamped = 0

    # -- reading -------------------------------------------------------------------------
    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def percentile(self, p: float) -> int:
        """The value at or below which ``p`` percent of recorded values fall (0 if empty).

        Reported as the highest value equivalent to the bucket found (HdrHistogram's
        convention), clipped to the exact recorded minimum and maximum.
        """
        if not self.count:
            _rank(p, 1)
            return 0
        target = _rank(p, self.count)
        seen = 0
        for index in range(self._lo, self._hi + 1):
            n = self._counts[index]
            if n:
                seen += n
                if seen >= target:
                    value = self._range(index)[1]
                    return min(max(value, self.min), self.max)
        return self.max

    def percentiles(self, ps: Sequence[float]) -> list[int]:
        """Several percentiles in one pass over the counters."""
        if not self.count:
            return [0 for _ in ps]
        order = sorted(range(len(ps)), key=lambda i: ps[i])
        out = [0] * len(ps)
        targets = [_rank(ps[i], self.count) for i in order]
        k = 0
        seen = 0
        for index in range(self._lo, self._hi + 1):
            n = self._counts[index]
            if not n:
                continue
            seen += n
            while k < len(order) and seen >= targets[k]:
                value = self._range(index)[1]
                out[order[k]] = min(max(value, self.min), self.max)
                k += 1
            if k == len(order):
                break
        for i in order[k:]:
            out[i] = self.max
        return out

    def buckets(self) -> Iterator[tuple[int, int, int]]:
        """``(lowest, highest, count)`` of every non-empty counter, in value order."""
        for index in range(self._lo, self._hi + 1):
            n = self._counts[index]
            if n:
                low, high = self._range(index)
                yield low, min(high, self.max), n

    def count_at_or_below(self, bounds: Sequence[float]) -> list[int]:
        """Cumulative counts of values ``<= bound`` for each of the sorted ``bounds``.

        A counter counts toward a bound when its lowest value is within it, so the answer is
        exact to the histogram's precision.
        """
        out = [0] * len(bounds)
        k = 0
        seen = 0
        for low, _high, n in self.buckets():
            while k < len(bounds) and low > bounds[k]:
                out[k] = seen
                k += 1
            seen += n
        while k < len(bounds):
            out[k] = seen
            k += 1
        return out


def _rank(p: float, count: int) -> int:
    """How many of ``count`` values lie at or below the ``p``-th percentile (at least 1)."""
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must be within 0..100, got {p!r}")
    return max(1, math.ceil(p * count / 100 - 1e-9))


class RollingHistogram:
    """A :class:`LogHistogram` over a sliding time window, kept as rotating slices.

    The window is cut into ``slices`` equal parts; the oldest part is dropped as time moves
    on, so queries cover between ``window * (slices - 1) / slices`` and ``window`` seconds.

    Example::

        >>> r = RollingHistogram(window=60.0, slices=6)
        >>> r.record(1000, now=0.0)
        >>> r.record(5000, now=30.0)
        >>> r.snapshot(now=30.0).count, r.snapshot(now=65.0).count, r.snapshot(now=200.0).count
        (2, 1, 0)
    """

    def __init__(
        self,
        window: float,
        *,
        slices: int = 6,
        significant_figures: int = 2,
        highest: int = 3_600_000_000,
    ) -> None:
        if window <= 0:
            raise ConfigError(f"RollingHistogram: window must be > 0 seconds, got {window!r}")
        if not isinstance(slices, int) or slices < 1:
            raise ConfigError(f"RollingHistogram: slices must be an int >= 1, got {slices!r}")
        self.window = float(window)
        self.slice_seconds = self.window / slices
        self.slices = slices
        self._significant_figures = significant_figures
        self._highest = highest
        #: (slice number, histogram) for the live slices, oldest first.
        self._parts: list[tuple[int, LogHistogram]] = []

    def _new(self) -> LogHistogram:
        return LogHistogram(self._significant_figures, self._highest)

    def _current(self, now: float) -> LogHistogram:
        number = math.floor(now / self.slice_seconds)
        parts = self._parts
        if parts and parts[-1][0] == number:
            return parts[-1][1]
        oldest = number - self.slices + 1
        while parts and parts[0][0] < oldest:
            parts.pop(0)
        hist = self._new()
        parts.append((number, hist))
        return hist

    def record(self, value: int, count: int = 1, *, now: float) -> None:
        """Record ``value`` (``count`` times) at time ``now`` (seconds)."""
        self._current(now).record(value, count)

    def snapshot(self, *, now: float) -> LogHistogram:
        """A new histogram merging the slices still inside the window at ``now``."""
        oldest = math.floor(now / self.slice_seconds) - self.slices + 1
        merged = self._new()
        for number, hist in self._parts:
            if number >= oldest:
                merged.merge(hist)
        return merged
