"""Latency: :class:`LatencyMetric` (percentiles over a sliding window, in an HDR-style
histogram), its :class:`LatencySnapshot` and per-node :class:`NodeLatencySnapshot`, and the
Prometheus histogram bounds for latency."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from haive.dataflow.errors import ConfigError
from haive.dataflow.runtime.units import Duration

from .event_fields import latency_of
from .hdr import LogHistogram, RollingHistogram
from .metric_base import Metric
from .sampling import RunSample
from .windows import as_seconds

#: Upper bounds (seconds) of the Prometheus latency histogram buckets.
PROMETHEUS_LATENCY_BOUNDS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


def _pname(p: float) -> str:
    text = f"{p:g}".replace(".", "_")
    return f"p{text}"


@attrs.frozen
class NodeLatencySnapshot:
    """Latency estimate of one pipeline node (milliseconds), see :mod:`.sampling`.

    Example::

        >>> NodeLatencySnapshot(p50=1.0, p95=2.0, p99=3.0).p99
        3.0
    """

    p50: float = 0.0
    p95: float = 0.0
    p99: float = 0.0
    mean: float = 0.0
    count: int = 0


@attrs.frozen
class LatencySnapshot:
    """Latency percentiles over the metric's window, in milliseconds.

    ``percentiles`` maps ``"p50"``, ``"p99_9"``... to values; those names also work as
    attributes. ``histogram`` is the window's :class:`~.hdr.LogHistogram` (microseconds),
    ``cumulative`` the whole run's, which the Prometheus exposition uses.

    Example::

        >>> snap = LatencySnapshot(percentiles={"p50": 1.0, "p99_9": 7.5})
        >>> snap.p99_9
        7.5
    """

    percentiles: Mapping[str, float] = attrs.field(factory=dict)
    mean: float = 0.0
    min: float = 0.0
    max: float = 0.0
    count: int = 0
    total_count: int = 0
    window: float = 60.0
    nodes: Mapping[str, NodeLatencySnapshot] = attrs.field(factory=dict)
    histogram: LogHistogram = attrs.field(factory=LogHistogram, eq=False, repr=False)
    cumulative: LogHistogram = attrs.field(factory=LogHistogram, eq=False, repr=False)

    def __getattr__(self, name: str) -> float:
        if name.startswith("p") and not name.startswith("__"):
            percentiles = object.__getattribute__(self, "percentiles")
            if name in percentiles:
                return float(percentiles[name])
            try:
                p = float(name[1:].replace("_", "."))
            except ValueError:
                pass
            else:
                hist: LogHistogram = object.__getattribute__(self, "histogram")
                return hist.percentile(p) / 1000.0
        raise AttributeError(name)

    @property
    def p50(self) -> float:
        return self.__getattr__("p50")

    @property
    def p95(self) -> float:
        return self.__getattr__("p95")

    @property
    def p99(self) -> float:
        return self.__getattr__("p99")

    @property
    def avg(self) -> float:
        return self.mean

    def distribution(self, bounds_ms: Sequence[float]) -> list[int]:
        """Counts of window latencies in ``(-inf, b0], (b0, b1], ..., (b_last, inf)`` (ms)."""
        cumulative = self.histogram.count_at_or_below([b * 1000.0 for b in bounds_ms])
        counts = [cumulative[0]]
        counts += [cumulative[i] - cumulative[i - 1] for i in range(1, len(cumulative))]
        counts.append(self.histogram.count - (cumulative[-1] if cumulative else 0))
        return counts


class LatencyMetric(Metric):
    """Latency percentiles (ms) over a sliding window, kept in an HDR-style histogram.

    ``percentiles`` are the ones :meth:`snapshot` reports (any others can be asked for with
    :meth:`percentile` or as ``p99_9`` attributes). From a pipeline it records end-to-end
    latency and per-node estimates (see :mod:`haive_plugin_observability.sampling`); from
    :meth:`MetricsCollector.record` the latency an event reports (:func:`latency_of`).

    Example::

        >>> import trio, trio.testing
        >>> from haive_plugin_observability import MetricsCollector
        >>> async def demo():
        ...     metrics = MetricsCollector({"latency": LatencyMetric(percentiles=[50, 95, 99])})
        ...     for ms in range(1, 101):
        ...         await metrics.record({"latency_ms": ms})
        ...     lat = metrics.latency
        ...     return round(lat.p50), round(lat.p95), round(lat.p99), lat.count
        >>> trio.run(demo, clock=trio.testing.MockClock(autojump_threshold=0))
        (50, 95, 99, 100)
    """

    kind = "latency"

    def __init__(
        self,
        percentiles: Iterable[float] = (50, 95, 99),
        *,
        window: Duration = "1m",
        significant_figures: int = 2,
    ) -> None:
        chosen = list(percentiles)
        for p in chosen:
            if isinstance(p, bool) or not isinstance(p, int | float) or not 0 < p <= 100:
                raise ConfigError(
                    f"LatencyMetric: percentiles must be numbers in (0, 100], got {p!r}"
                )
        if not chosen:
            raise ConfigError("LatencyMetric: give at least one percentile")
        self.percentiles_wanted = chosen
        self.window = as_seconds(window, "LatencyMetric window")
        self._sf = significant_figures
        self._rolling = RollingHistogram(self.window, significant_figures=significant_figures)
        self._all = LogHistogram(significant_figures)
        self._nodes: dict[str, RollingHistogram] = {}
        # The merged window is cached until something is recorded or a slice expires.
        self._version = 0
        self._cache: tuple[tuple[int, int], LogHistogram] | None = None

    def record_seconds(self, seconds: float, count: int = 1, *, now: float | None = None) -> None:
        """Record a latency of ``seconds`` (``count`` times)."""
        if seconds < 0 or math.isnan(seconds):
            raise ConfigError(f"LatencyMetric: latency must be >= 0 s, got {seconds!r}")
        micros = int(seconds * 1e6 + 0.5)
        self._rolling.record(micros, count, now=self.now() if now is None else now)
        self._all.record(micros, count)
        self._version += 1

    def observe(self, event: Any, now: float) -> None:
        seconds = latency_of(event)
        if seconds is not None:
            self.record_seconds(seconds, now=now)

    def observe_sample(self, sample: RunSample, now: float) -> None:
        for seconds, count in sample.latencies:
            micros = int(seconds * 1e6 + 0.5)
            self._rolling.record(micros, count, now=now)
            self._all.record(micros, count)
            self._version += 1
        for node in sample.nodes:
            if node.latency is None or node.delta_in <= 0:
                continue
            key = f"{sample.pipeline}/{node.name}"
            hist = self._nodes.get(key)
            if hist is None:
                hist = self._nodes[key] = RollingHistogram(
                    self.window, significant_figures=self._sf
                )
            hist.record(int(node.latency * 1e6 + 0.5), node.delta_in, now=now)

    def _window(self, now: float | None = None) -> LogHistogram:
        when = self.fresh_now() if now is None else now
        key = (math.floor(when / self._rolling.slice_seconds), self._version)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        merged = self._rolling.snapshot(now=when)
        self._cache = (key, merged)
        return merged

    def percentile(self, p: float) -> float:
        """The ``p``-th percentile over the window, in milliseconds."""
        return self._window().percentile(p) / 1000.0

    def __getattr__(self, name: str) -> float:
        if name.startswith("p") and len(name) > 1 and name[1].isdigit():
            try:
                p = float(name[1:].replace("_", "."))
            except ValueError:
                pass
            else:
                return self.percentile(p)
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    @property
    def p50(self) -> float:
        return self.percentile(50)

    @property
    def p95(self) -> float:
        return self.percentile(95)

    @property
    def p99(self) -> float:
        return self.percentile(99)

    @property
    def mean(self) -> float:
        """Mean latency over the window (ms)."""
        return self._window().mean / 1000.0

    avg = mean

    @property
    def max(self) -> float:
        return self._window().max / 1000.0

    @property
    def count(self) -> int:
        """Latencies recorded within the window."""
        return self._window().count

    @property
    def total_count(self) -> int:
        """Latencies recorded since the start."""
        return self._all.count

    def snapshot(self, now: float) -> LatencySnapshot:
        window = self._window(now)
        values = window.percentiles(self.percentiles_wanted)
        percentiles = {
            _pname(p): v / 1000.0 for p, v in zip(self.percentiles_wanted, values, strict=True)
        }
        for p in (50, 95, 99):
            percentiles.setdefault(_pname(p), window.percentile(p) / 1000.0)
        cumulative = LogHistogram(self._sf)
        cumulative.merge(self._all)
        nodes: dict[str, NodeLatencySnapshot] = {}
        for key, rolling in self._nodes.items():
            hist = rolling.snapshot(now=now)
            p50, p95, p99 = hist.percentiles([50, 95, 99])
            nodes[key] = NodeLatencySnapshot(
                p50=p50 / 1000.0, p95=p95 / 1000.0, p99=p99 / 1000.0,
                mean=hist.mean / 1000.0, count=hist.count,
            )  # fmt: skip
        return LatencySnapshot(
            percentiles=percentiles,
            mean=window.mean / 1000.0,
            min=window.min / 1000.0,
            max=window.max / 1000.0,
            count=window.count,
            total_count=self._all.count,
            window=self.window,
            nodes=nodes,
            histogram=window,
            cumulative=cumulative,
        )
