"""The observability plugin takes ``datetime.timedelta`` wherever it takes a duration."""

from __future__ import annotations

from datetime import timedelta

import pytest
import trio
from haive_plugin_observability import (
    AlertManager,
    Dashboard,
    LatencyMetric,
    LineChart,
    MetricsCollector,
    ThroughputMetric,
)

from haive.dataflow.errors import ConfigError


async def test_windows_and_intervals_take_timedelta(autojump_clock):
    metrics = MetricsCollector(
        {"throughput": ThroughputMetric(window=timedelta(seconds=10))},
        interval=timedelta(milliseconds=250),
    )
    assert metrics.interval == 0.25
    for _ in range(20):
        await metrics.record({"n": 1})
        await trio.sleep(0.5)
    assert metrics.throughput.window == 10.0
    assert round(metrics.throughput.current) == 2  # 20 events over the last 10 s
    assert LatencyMetric(window=timedelta(minutes=1)).window == 60.0
    assert Dashboard("d", refresh_interval=timedelta(milliseconds=500)).refresh_interval == 0.5
    assert AlertManager(notify_timeout=timedelta(seconds=2)).notify_timeout == 2.0


def test_widget_refresh_interval_is_milliseconds_and_takes_timedelta():
    assert LineChart(metric="throughput", refresh_interval=1000).refresh_interval == 1000
    assert (
        LineChart(metric="throughput", refresh_interval=timedelta(seconds=2)).refresh_interval
        == 2000
    )


def test_bad_durations_name_the_parameter():
    with pytest.raises(
        ConfigError, match="Dashboard refresh_interval: a duration cannot be negative"
    ):
        Dashboard("d", refresh_interval=timedelta(seconds=-1))
    with pytest.raises(ConfigError, match="ThroughputMetric window: must be longer than 0 s"):
        ThroughputMetric(window=timedelta(0))
