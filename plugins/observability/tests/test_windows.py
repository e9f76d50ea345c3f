"""Sliding windows over cumulative counters."""

from __future__ import annotations

import pytest
from haive_plugin_observability.windows import CounterWindow, as_seconds

from haive.dataflow.errors import ConfigError


def test_sampled_counters_give_rates_over_the_window() -> None:
    window = CounterWindow(10.0, width=2, resolution=1.0)
    for second in range(31):
        window.update(float(second), (second * 100, second * 5))
    assert window.delta(30.0) == (1000, 50)
    assert window.rate(30.0) == (100.0, 5.0)
    # Marks are bounded by window / resolution whatever the update rate.
    for tick in range(10_000):
        window.update(30.0 + tick * 0.001, (3000 + tick, 150))
    assert len(window._marks) <= 12


def test_ramp_up_uses_the_time_since_the_first_update() -> None:
    window = CounterWindow(10.0, width=1)
    window.update(100.0, (0,))
    window.update(102.0, (50,))
    assert window.rate(102.0) == (25.0,)
    assert window.span(102.0) == 2.0


def test_events_recorded_now_count_in_a_window_ending_now() -> None:
    window = CounterWindow(1.0, width=1, resolution=0.05)
    window.advance(5.0, (10,))
    assert window.delta(5.0) == (10,)
    window.advance(5.5, (20,))
    assert window.delta(5.5) == (20,)
    # Once the first burst is more than a window old only the second one counts.
    assert window.delta(6.2) == (10,)
    assert window.delta(7.0) == (0,)


def test_durations_are_parsed_and_checked() -> None:
    assert as_seconds("500ms", "w") == 0.5
    with pytest.raises(ConfigError, match="longer than 0"):
        as_seconds(0, "window")
    with pytest.raises(ConfigError):
        CounterWindow(0)


def test_rates_decay_to_zero_once_nothing_happens() -> None:
    events = CounterWindow(1.0, width=1)
    events.advance(5.0, (10,))
    assert events.delta(5.9) == (10,)
    assert events.delta(100.0) == (0,) and events.rate(100.0) == (0.0,)
    samples = CounterWindow(1.0, width=1)
    samples.update(1.0, (0,))
    samples.update(2.0, (500,))
    assert samples.rate(2.0) == (500.0,)
    assert samples.rate(50.0) == (0.0,)
