"""The HDR-style histogram: precision against exact percentiles, merging, windows."""

from __future__ import annotations

import math
import random

import pytest
from haive_plugin_observability.hdr import LogHistogram, RollingHistogram

from haive.dataflow.errors import ConfigError


def exact(values: list[int], p: float) -> int:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p * len(ordered) / 100 - 1e-9)) - 1]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_percentiles_within_one_percent_of_exact(seed: int) -> None:
    rng = random.Random(seed)
    values = [int(rng.lognormvariate(7, 2)) for _ in range(20_000)]
    hist = LogHistogram()
    hist.record_many(values)
    for p in (1, 10, 50, 90, 95, 99, 99.9, 100):
        want = exact(values, p)
        got = hist.percentile(p)
        assert abs(got - want) <= max(1, want * 0.01), (p, got, want)
    assert hist.count == len(values)
    assert hist.min == min(values) and hist.max == max(values)
    assert hist.mean == pytest.approx(sum(values) / len(values))
    assert hist.percentiles([99, 50]) == [hist.percentile(99), hist.percentile(50)]


def test_small_values_are_exact_and_empty_is_zero() -> None:
    hist = LogHistogram()
    assert hist.percentile(50) == 0
    for v in (0, 1, 2, 3, 200):
        hist.record(v)
    assert [hist.percentile(p) for p in (20, 40, 60, 80, 100)] == [0, 1, 2, 3, 200]


def test_merge_adds_counts_and_extremes() -> None:
    a, b = LogHistogram(), LogHistogram()
    a.record_many(range(1, 101))
    b.record_many(range(1001, 1101))
    a.merge(b)
    assert a.count == 200 and a.min == 1 and a.max == 1100
    assert a.percentile(50) == pytest.approx(100, rel=0.01)
    with pytest.raises(ConfigError):
        a.merge(LogHistogram(significant_figures=3))


def test_count_at_or_below_is_cumulative() -> None:
    hist = LogHistogram()
    hist.record_many([5, 10, 10, 50, 120, 5000])
    assert hist.count_at_or_below([4, 10, 100, 1000, 10_000]) == [0, 3, 4, 5, 6]


def test_values_above_range_are_clamped_and_counted() -> None:
    hist = LogHistogram(highest=1000)
    hist.record(5000, count=3)
    assert hist.clamped == 3 and hist.max == 1000 and hist.count == 3


def test_bad_input_is_rejected_clearly() -> None:
    with pytest.raises(ConfigError, match="significant_figures"):
        LogHistogram(significant_figures=9)
    hist = LogHistogram()
    with pytest.raises(ValueError, match="non-negative"):
        hist.record(-1)
    with pytest.raises(ValueError, match=r"0\.\.100"):
        hist.percentile(101)
    assert hist.count == 0


def test_rolling_histogram_forgets_old_slices() -> None:
    rolling = RollingHistogram(window=10.0, slices=5)
    for second in range(20):
        rolling.record(second + 1, now=float(second))
    snap = rolling.snapshot(now=19.0)
    # Slices of 2 s: the window at 19 s keeps seconds 10..19.
    assert snap.count == 10
    assert snap.min == 11 and snap.max == 20
    assert rolling.snapshot(now=100.0).count == 0
    assert len(rolling._parts) <= 5
