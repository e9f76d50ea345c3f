"""The collector: :class:`MetricsCollector` holds named metrics, feeds them from pipeline
monitoring and recorded events, and returns a :class:`MetricsSnapshot` (with its
JSON-friendly form, ``to_dict``); :func:`default_metrics` are the ones it gets when none
are given. Overview: :mod:`haive_plugin_observability.metrics`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import attrs
import trio

from haive.dataflow.errors import ConfigError
from haive.dataflow.runtime.units import Duration

from .backpressure import BackpressureMetric, BackpressureSnapshot, EdgeSnapshot
from .error_rate import ErrorRateMetric, ErrorRateSnapshot
from .hdr import LogHistogram
from .latency import LatencyMetric, LatencySnapshot
from .metric_base import Clock, Metric, _default_clock
from .sampling import EdgeSample, RunSample, RunTracker
from .throughput import ThroughputMetric, ThroughputSnapshot
from .windows import as_seconds


def _plain(value: Any) -> Any:
    """JSON-friendly form of snapshots (attrs records, mappings, histograms)."""
    if isinstance(value, LogHistogram):
        return [[low / 1000.0, high / 1000.0, n] for low, high, n in value.buckets()]
    if attrs.has(type(value)):
        out = {f.name: _plain(getattr(value, f.name)) for f in attrs.fields(type(value))}
        if isinstance(value, LatencySnapshot):
            out.pop("cumulative")
            out["histogram"] = _coarse(value.histogram)
        if isinstance(value, EdgeSnapshot | EdgeSample):
            out["pressure"] = value.pressure
        if isinstance(value, ErrorRateSnapshot):
            out["exceeded"] = value.exceeded
        if isinstance(value, RunSample):
            out.pop("latencies")
        return out
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _coarse(hist: LogHistogram, ratio: float = 1.1) -> list[list[float]]:
    """``[low_ms, high_ms, count]`` bins, adjacent counters merged while within ``ratio``."""
    bins: list[list[float]] = []
    for low, high, n in hist.buckets():
        if bins and high <= bins[-1][0] * 1000.0 * ratio:
            bins[-1][1] = high / 1000.0
            bins[-1][2] += n
        else:
            bins.append([low / 1000.0, high / 1000.0, n])
    return bins


@attrs.frozen
class MetricsSnapshot:
    """Every metric of a collector at one moment; metrics are attributes by their names.

    ``pipelines`` has the latest :class:`~.sampling.RunSample` of each monitored pipeline
    (cumulative node counters, edges); ``gauges`` extra live figures (WebSocket connections,
    room sizes) from :meth:`MetricsCollector.add_gauges`.

    Example::

        >>> snap = MetricsSnapshot(time=1.0, values={"throughput": ThroughputSnapshot(current=5.0)})
        >>> snap.throughput.current, snap["throughput"].current, snap.to_dict()["time"]
        (5.0, 5.0, 1.0)
    """

    time: float
    values: Mapping[str, Any] = attrs.field(factory=dict)
    pipelines: Mapping[str, RunSample] = attrs.field(factory=dict)
    gauges: Mapping[str, float] = attrs.field(factory=dict)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        values = object.__getattribute__(self, "values")
        try:
            return values[name]
        except KeyError:
            raise AttributeError(
                f"this snapshot has no metric {name!r}; metrics: {', '.join(values) or '(none)'}"
            ) from None

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def first(self, kind: type[Any]) -> Any:
        """The first metric value of snapshot type ``kind`` (e.g. :class:`LatencySnapshot`)."""
        for value in self.values.values():
            if isinstance(value, kind):
                return value
        return None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (what the dashboard sends to browsers)."""
        return {
            "time": self.time,
            "metrics": {name: _plain(value) for name, value in self.values.items()},
            "kinds": {name: _kind_of(value) for name, value in self.values.items()},
            "pipelines": {name: _plain(sample) for name, sample in self.pipelines.items()},
            "gauges": dict(self.gauges),
        }


def _kind_of(value: Any) -> str:
    for kind, cls in (
        ("throughput", ThroughputSnapshot),
        ("latency", LatencySnapshot),
        ("error_rate", ErrorRateSnapshot),
        ("backpressure", BackpressureSnapshot),
    ):
        if isinstance(value, cls):
            return kind
    return "custom"


def default_metrics() -> dict[str, Metric]:
    """The metrics a collector gets when none are given.

    Example::

        >>> sorted(default_metrics())
        ['backpressure', 'error_rate', 'latency', 'throughput']
    """
    return {
        "throughput": ThroughputMetric(window="1m"),
        "latency": LatencyMetric(percentiles=[50, 95, 99]),
        "error_rate": ErrorRateMetric(threshold=0.01),
        "backpressure": BackpressureMetric(),
    }


class MetricsCollector:
    """Named metrics fed by pipeline monitoring and/or recorded events.

    Use it as a pipeline monitor (``pipeline.add_monitor(metrics)``): every ``interval``
    seconds it samples the run's counters, edges and flow marks (nothing per item). Or
    ``await metrics.record(event)`` per event as in the seed. Metrics are attributes by their
    names; :meth:`get_current` returns a :class:`MetricsSnapshot`.

    Example: the seed's collector watching a pipeline::

        >>> import trio
        >>> from haive.dataflow import StreamingPipeline
        >>> from haive.dataflow.builtins.sources import IterableSource
        >>> metrics = MetricsCollector({
        ...     "throughput": ThroughputMetric(window="1m"),
        ...     "latency": LatencyMetric(percentiles=[50, 95, 99]),
        ...     "error_rate": ErrorRateMetric(threshold=0.01),
        ...     "backpressure": BackpressureMetric(),
        ... })
        >>> pipeline = StreamingPipeline("doc", on_error="skip")
        >>> pipeline.set_source(IterableSource(range(1000)))
        >>> pipeline.add_processor(lambda x: 100 // (x % 50))
        >>> pipeline.add_monitor(metrics)
        >>> async def main():
        ...     await pipeline.execute()
        ...     snap = metrics.get_current()
        ...     return snap.throughput.total, snap.error_rate.errors, snap.latency.count > 0
        >>> trio.run(main)
        (980, 20, True)
    """

    def __init__(
        self,
        metrics: Mapping[str, Metric] | None = None,
        *,
        interval: Duration = 0.25,
        clock: Clock | None = None,
    ) -> None:
        chosen = default_metrics() if metrics is None else metrics
        if not isinstance(chosen, Mapping):
            raise ConfigError(
                f"MetricsCollector expects a mapping of name -> metric, got {type(chosen).__name__}"
            )
        self.interval = as_seconds(interval, "MetricsCollector interval")
        self._clock: Clock = clock or _default_clock
        self._metrics: dict[str, Metric] = {}
        for name, metric in chosen.items():
            self._check(name, metric)
            metric.bind(name, self._clock, self.sample)
            self._metrics[name] = metric
        self._trackers: dict[int, RunTracker] = {}
        self._pipelines: dict[str, RunSample] = {}
        self._gauges: dict[str, Callable[[], Mapping[str, float]]] = {}

    def _check(self, name: object, metric: object) -> None:
        if not isinstance(name, str) or not name.isidentifier() or name in dir(type(self)):
            raise ConfigError(
                f"MetricsCollector: metric name {name!r} must be an identifier and not one "
                "of the collector's own attributes"
            )
        if not isinstance(metric, Metric):
            raise ConfigError(
                f"MetricsCollector: {name!r} must be a Metric (ThroughputMetric(), "
                f"LatencyMetric(), ...), got {metric!r}"
            )

    # -- access --------------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        metrics = self.__dict__.get("_metrics", {})
        try:
            return metrics[name]
        except KeyError:
            raise AttributeError(
                f"MetricsCollector has no metric {name!r}; metrics: {', '.join(metrics) or '(none)'}"
            ) from None

    def __getitem__(self, name: str) -> Metric:
        return self._metrics[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._metrics)

    @property
    def metrics(self) -> Mapping[str, Metric]:
        return dict(self._metrics)

    def first(self, kind: type[Metric]) -> Any:
        """The first metric of class ``kind``, or None."""
        for metric in self._metrics.values():
            if isinstance(metric, kind):
                return metric
        return None

    @property
    def avg_latency(self) -> float:
        """Mean latency (ms) of the first :class:`LatencyMetric` (the seed's ``avg_latency``)."""
        latency = self.first(LatencyMetric)
        return latency.mean if latency is not None else 0.0

    def now(self) -> float:
        return self._clock()

    # -- recording -----------------------------------------------------------------------
    def record_nowait(self, event: Any) -> None:
        """Record one event in every metric (synchronous form of :meth:`record`)."""
        now = self._clock()
        for metric in self._metrics.values():
            metric.observe(event, now)

    async def record(self, event: Any) -> None:
        """Record one event (a Result, Event, dict with ``latency_ms``/``error``...)."""
        self.record_nowait(event)
        await trio.lowlevel.checkpoint()

    async def record_many(self, events: Iterable[Any]) -> None:
        """Record several events with one clock reading."""
        now = self._clock()
        for event in events:
            for metric in self._metrics.values():
                metric.observe(event, now)
        await trio.lowlevel.checkpoint()

    def add_metric(self, name: str, metric: Metric) -> None:
        """Add a metric after construction (same rules as the constructor's mapping)."""
        if name in self._metrics:
            raise ConfigError(f"MetricsCollector already has a metric {name!r}")
        self._check(name, metric)
        metric.bind(name, self._clock, self.sample)
        self._metrics[name] = metric

    def watch_websocket(self, server: Any, name: str = "websocket") -> None:
        """Report connections, message rates and room sizes of a WebSocket server.

        ``server`` is a :class:`haive_plugin_websocket.WebSocketManager` (or anything with
        its ``stats`` and ``rooms``); see :class:`~.websocket.WebSocketMetric`.
        """
        from .websocket import WebSocketMetric

        self.add_metric(name, WebSocketMetric(server))

    def add_gauges(self, name: str, read: Callable[[], Mapping[str, float]]) -> None:
        """Add live figures read at every snapshot, as ``"<name>.<key>"`` gauges."""
        if not callable(read):
            raise ConfigError(f"add_gauges({name!r}) expects a callable returning a mapping")
        self._gauges[name] = read

    # -- pipeline monitoring -------------------------------------------------------------
    async def monitor(self, run: Any) -> None:
        """Sample ``run`` every ``interval`` seconds until it ends (the monitor protocol)."""
        tracker = RunTracker(run, now=self._clock())
        self._trackers[id(tracker)] = tracker
        try:
            while True:
                self._sample(tracker, running=True)
                await trio.sleep(self.interval)
        finally:
            # Synchronous, so it also runs when the monitor is cancelled at the run's end.
            self._sample(tracker, running=False)
            del self._trackers[id(tracker)]

    def _sample(self, tracker: RunTracker, *, running: bool) -> None:
        now = self._clock()
        sample = tracker.sample(now=now, running=running)
        self._pipelines[sample.pipeline] = sample
        for metric in self._metrics.values():
            metric.observe_sample(sample, now)

    def sample(self) -> None:
        """Sample every monitored run and watched buffer now."""
        for tracker in list(self._trackers.values()):
            self._sample(tracker, running=True)
        now = self._clock()
        for metric in self._metrics.values():
            metric.poll(now)

    def get_current(self) -> MetricsSnapshot:
        """Sample now and return every metric's snapshot."""
        self.sample()
        now = self._clock()
        gauges: dict[str, float] = {}
        for prefix, read in self._gauges.items():
            for key, value in read().items():
                gauges[f"{prefix}.{key}"] = float(value)
        return MetricsSnapshot(
            time=now,
            values={name: metric.snapshot(now) for name, metric in self._metrics.items()},
            pipelines=dict(self._pipelines),
            gauges=gauges,
        )


class StreamMetrics(MetricsCollector):
    """The product description's ``StreamMetrics``: a :class:`MetricsCollector` with the
    default metrics (throughput, latency, error rate, backpressure), used as a pipeline
    monitor.

    ``throughput`` is a :class:`ThroughputMetric` that reads as a number (events per second
    over the last minute: ``float(metrics.throughput)``, ``f"{metrics.throughput:.0f}"``);
    ``avg_latency`` is the mean end-to-end latency in milliseconds.

    Example: the seed's monitoring loop::

        >>> import trio
        >>> from haive.dataflow import StreamingPipeline
        >>> from haive.dataflow.builtins.sources import IterableSource
        >>> metrics = StreamMetrics()
        >>> pipeline = StreamingPipeline("documents")
        >>> pipeline.set_source(IterableSource(range(500)))
        >>> pipeline.add_processor(lambda n: n * 2)
        >>> pipeline.add_monitor(metrics)
        >>> async def main():
        ...     async with pipeline.run() as stream:
        ...         processed = sum([1 async for result in stream if result.success])
        ...     return processed, metrics.throughput.total, float(metrics.throughput) > 0
        >>> trio.run(main)
        (500, 500, True)
    """

    def __init__(self, *, interval: float | str = 0.25, clock: Clock | None = None) -> None:
        super().__init__(None, interval=interval, clock=clock)
