"""The seed's metrics API: ``MetricsCollector`` and the metrics it holds.

Two ways feed a collector, and both can be used at once:

* ``pipeline.add_monitor(metrics)``: the collector samples the running pipeline's counters
  on its own schedule (``interval``, default 0.25 s) — no hook runs per item;
* ``await metrics.record(event)``: the seed's per-event API for streams the collector does
  not run itself (results, events, dicts with ``latency_ms``...).

Every metric answers at once (``metrics.latency.p99``, ``metrics.error_rate.current``) and
``metrics.get_current()`` returns an immutable :class:`MetricsSnapshot` with the same
attribute shape, which alert rules, the dashboard and the Prometheus endpoint consume.
Time is trio's clock, so every window is testable under ``trio.testing.MockClock``.
"""

from __future__ import annotations

import abc
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import attrs
import trio

from haive.dataflow.errors import ConfigError
from haive.dataflow.results import Result

from .hdr import LogHistogram, RollingHistogram
from .sampling import EdgeSample, RunSample, RunTracker
from .windows import CounterWindow, as_seconds

Clock = Callable[[], float]

#: Upper bounds (seconds) of the Prometheus latency histogram buckets.
PROMETHEUS_LATENCY_BOUNDS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


# -- reading events ---------------------------------------------------------------------


def _field(event: Any, name: str) -> Any:
    if isinstance(event, Mapping):
        return event.get(name)
    return getattr(event, name, None)


def latency_of(event: Any, *, wall_now: float | None = None) -> float | None:
    """The latency an event reports, in seconds, or None.

    Looks for ``latency_ms`` (milliseconds) or ``latency`` / ``latency_s`` (seconds) as a key
    or attribute, then in ``metadata``; failing that, an event with an epoch ``timestamp``
    (:class:`haive.dataflow.Event`) is as old as the wall clock says.

    Example::

        >>> latency_of({"latency_ms": 250}), latency_of({"latency": 0.5}), latency_of(3)
        (0.25, 0.5, None)
    """
    if isinstance(event, bool | int | float | str | bytes) or event is None:
        return None
    for source in (event, _field(event, "metadata")):
        if source is None:
            continue
        value = _field(source, "latency_ms")
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value) / 1000.0
        for name in ("latency_s", "latency"):
            value = _field(source, name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
    stamp = _field(event, "timestamp")
    if isinstance(stamp, int | float) and not isinstance(stamp, bool) and stamp > 1e9:
        return max(0.0, (time.time() if wall_now is None else wall_now) - float(stamp))
    return None


def is_error(event: Any) -> bool:
    """Whether an event stands for a failure.

    A failed :class:`~haive.dataflow.results.Result`, an exception, or anything with
    ``success`` false, a truthy ``error`` or ``status == "error"``.

    Example::

        >>> is_error(Result.failed(1, ValueError())), is_error({"status": "error"}), is_error({"x": 1})
        (True, True, False)
    """
    if isinstance(event, Result):
        return not event.success
    if isinstance(event, BaseException):
        return True
    if isinstance(event, bool | int | float | str | bytes) or event is None:
        return False
    if _field(event, "success") is False:
        return True
    if _field(event, "error"):
        return True
    return bool(_field(event, "status") == "error")


def _default_clock() -> float:
    return trio.current_time()


# -- the metric protocol ----------------------------------------------------------------


class Metric(abc.ABC):
    """Base of everything a :class:`MetricsCollector` holds.

    A metric learns from events (:meth:`observe`), from pipeline samples
    (:meth:`observe_sample`) and answers with an immutable :meth:`snapshot`. Subclass it for
    custom metrics; unknown event shapes should be ignored, not raise.

    Example::

        >>> class Bytes(Metric):
        ...     kind = "bytes"
        ...     def __init__(self):
        ...         self.total = 0
        ...     def observe(self, event, now):
        ...         self.total += len(event.get("payload", b""))
        ...     def snapshot(self, now):
        ...         return self.total
        >>> collector = MetricsCollector({"bytes": Bytes()}, clock=lambda: 0.0)
        >>> collector.record_nowait({"payload": b"abc"})
        >>> collector.get_current().bytes
        3
    """

    kind: ClassVar[str] = "custom"
    name: str = ""
    _clock: Clock = staticmethod(_default_clock)

    _refresh: Callable[[], None] | None = None

    def bind(self, name: str, clock: Clock, refresh: Callable[[], None] | None = None) -> None:
        """Called by the collector: this metric's name, the clock it shares, and how to make
        it sample the pipelines it monitors now (so reading a figure is always current)."""
        self.name = name
        self._clock = clock
        self._refresh = refresh

    def now(self) -> float:
        return self._clock()

    def fresh_now(self) -> float:
        """Sample what the collector monitors, then return the time (for live properties)."""
        if self._refresh is not None:
            self._refresh()
        return self._clock()

    def observe(self, event: Any, now: float) -> None:
        """Learn from one recorded event."""

    def observe_sample(self, sample: RunSample, now: float) -> None:
        """Learn from one sample of a running pipeline."""

    def poll(self, now: float) -> None:
        """Sample whatever this metric watches by itself (called on every collector sample)."""

    @abc.abstractmethod
    def snapshot(self, now: float) -> Any:
        """An immutable view of the metric at ``now``."""


class _AsNumber:
    """For metrics with one headline figure, ``current``: ``float(metric)`` and
    ``f"{metric:.1f}"`` use it."""

    if TYPE_CHECKING:

        @property
        def current(self) -> float: ...

    def __float__(self) -> float:
        return self.current

    def __format__(self, spec: str) -> str:
        return format(self.current, spec)


# -- throughput -------------------------------------------------------------------------


@attrs.frozen
class ThroughputSnapshot:
    """Throughput at one moment (events per second).

    Example::

        >>> ThroughputSnapshot(current=10.0, per_second=12.0, per_minute=9.0, total=600).total
        600
    """

    current: float = 0.0
    per_second: float = 0.0
    per_minute: float = 0.0
    total: int = 0
    window: float = 60.0
    input_per_second: float = 0.0
    nodes: Mapping[str, float] = attrs.field(factory=dict)


class ThroughputMetric(_AsNumber, Metric):
    """Events per second over sliding 1 s and 1 min windows (and ``window``, for ``current``).

    From a pipeline it counts items the sink accepted (and, as ``input_per_second``, items
    read from the source, plus each node's output rate); from :meth:`MetricsCollector.record`
    one per event.

    Example::

        >>> import trio, trio.testing
        >>> async def demo():
        ...     metrics = MetricsCollector({"throughput": ThroughputMetric(window="1m")})
        ...     for _ in range(50):
        ...         for _ in range(20):
        ...             await metrics.record({"n": 1})
        ...         await trio.sleep(0.1)
        ...     t = metrics.throughput
        ...     return t.total, round(t.per_second), round(t.current)
        >>> trio.run(demo, clock=trio.testing.MockClock(autojump_threshold=0))
        (1000, 200, 200)
    """

    kind = "throughput"

    def __init__(self, window: float | str = "1m") -> None:
        self.window = as_seconds(window, "ThroughputMetric window")
        self._total = 0
        self._read = 0
        self._second = CounterWindow(1.0, width=2, resolution=0.05)
        self._minute = CounterWindow(60.0, width=2, resolution=1.0)
        if self.window == 1.0:
            self._main = self._second
        elif self.window == 60.0:
            self._main = self._minute
        else:
            self._main = CounterWindow(self.window, width=2)
        self._node_totals: dict[str, int] = {}
        self._nodes: dict[str, CounterWindow] = {}

    def add(
        self, delivered: int, now: float, *, read: int | None = None, sampled: bool = False
    ) -> None:
        """Count ``delivered`` events (and ``read`` source items, default the same) at ``now``.

        ``sampled`` says the counts are a sample of what happened up to ``now`` (the monitor)
        rather than events happening at ``now`` (:meth:`MetricsCollector.record`).
        """
        self._total += delivered
        self._read += delivered if read is None else read
        values = (self._total, self._read)
        windows = [self._second, self._minute]
        if self._main is not self._second and self._main is not self._minute:
            windows.append(self._main)
        for window in windows:
            if sampled:
                window.update(now, values)
            else:
                window.advance(now, values)

    def observe(self, event: Any, now: float) -> None:
        self.add(1, now)

    def observe_sample(self, sample: RunSample, now: float) -> None:
        self.add(sample.delta_processed, now, read=sample.delta_read, sampled=True)
        for node in sample.nodes:
            key = f"{sample.pipeline}/{node.name}"
            total = self._node_totals.get(key, 0) + node.delta_out
            self._node_totals[key] = total
            window = self._nodes.get(key)
            if window is None:
                window = self._nodes[key] = CounterWindow(1.0, width=1, resolution=0.05)
            window.update(now, (total,))

    @property
    def current(self) -> float:
        """Events per second over this metric's ``window``."""
        return self._main.rate(self.fresh_now())[0]

    @property
    def per_second(self) -> float:
        """Events per second over the last second."""
        return self._second.rate(self.fresh_now())[0]

    @property
    def per_minute(self) -> float:
        """Events per second averaged over the last minute."""
        return self._minute.rate(self.fresh_now())[0]

    @property
    def total(self) -> int:
        return self._total

    def snapshot(self, now: float) -> ThroughputSnapshot:
        return ThroughputSnapshot(
            current=self._main.rate(now)[0],
            per_second=self._second.rate(now)[0],
            per_minute=self._minute.rate(now)[0],
            total=self._total,
            window=self.window,
            input_per_second=self._second.rate(now)[1],
            nodes={key: w.rate(now)[0] for key, w in self._nodes.items()},
        )


# -- latency ----------------------------------------------------------------------------


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
        window: float | str = "1m",
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


# -- error rate -------------------------------------------------------------------------


@attrs.frozen
class ErrorRateSnapshot:
    """Share of failed items over the window, and totals.

    Example::

        >>> ErrorRateSnapshot(current=0.02, threshold=0.01).exceeded
        True
    """

    current: float = 0.0
    threshold: float = 0.01
    errors: int = 0
    total: int = 0
    window: float = 60.0
    nodes: Mapping[str, int] = attrs.field(factory=dict)

    @property
    def exceeded(self) -> bool:
        return self.current > self.threshold


class ErrorRateMetric(_AsNumber, Metric):
    """Share of items that fail, over a sliding window; ``exceeded`` past ``threshold``.

    From a pipeline each node's own share (errors / items it took in, over the window) is
    measured, and the pipeline's is the chance an item fails in any node,
    ``1 - prod(1 - node_share)``: a slow node downstream does not dilute its errors by items
    still queued before it. Several pipelines (and recorded events) are averaged, weighted by
    the items each read in the window. Node counters move per batch, so a node working
    through a large batch counts all of it as taken before its errors show: keep
    ``chunk_size`` modest for slow nodes. From :meth:`MetricsCollector.record`: events for
    which :func:`is_error` holds, over all events.

    Example::

        >>> import trio, trio.testing
        >>> async def demo():
        ...     metrics = MetricsCollector({"error_rate": ErrorRateMetric(threshold=0.01)})
        ...     for i in range(100):
        ...         await metrics.record({"success": i % 25 != 0})
        ...     return metrics.error_rate.current, metrics.error_rate.exceeded
        >>> trio.run(demo, clock=trio.testing.MockClock(autojump_threshold=0))
        (0.04, True)
    """

    kind = "error_rate"

    def __init__(self, threshold: float = 0.01, *, window: float | str = "1m") -> None:
        if (
            isinstance(threshold, bool)
            or not isinstance(threshold, int | float)
            or not 0 <= threshold <= 1
        ):
            raise ConfigError(
                f"ErrorRateMetric: threshold must be a fraction in [0, 1], got {threshold!r}"
            )
        self.threshold = float(threshold)
        self.window = as_seconds(window, "ErrorRateMetric window")
        self._attempts = 0
        self._errors = 0
        self._events = CounterWindow(self.window, width=2)
        self._event_totals = (0, 0)
        #: pipeline -> (items read so far, window of it)
        self._reads: dict[str, tuple[int, CounterWindow]] = {}
        #: pipeline -> node -> window of the node's (items_in, errors)
        self._node_windows: dict[str, dict[str, CounterWindow]] = {}
        self._nodes: dict[str, int] = {}

    def add(self, attempts: int, errors: int, now: float) -> None:
        """Count ``attempts`` recorded events of which ``errors`` failed, at ``now``."""
        self._attempts += attempts
        self._errors += errors
        attempts_total, errors_total = self._event_totals
        self._event_totals = (attempts_total + attempts, errors_total + errors)
        self._events.advance(now, self._event_totals)

    def observe(self, event: Any, now: float) -> None:
        self.add(1, 1 if is_error(event) else 0, now)

    def observe_sample(self, sample: RunSample, now: float) -> None:
        self._attempts += max(sample.delta_read, 0)
        self._errors += max(sample.delta_errors, 0)
        read, window = self._reads.get(sample.pipeline, (0, None))
        if window is None:
            window = CounterWindow(self.window, width=1)
        read += max(sample.delta_read, 0)
        window.update(now, (read,))
        self._reads[sample.pipeline] = (read, window)
        nodes = self._node_windows.setdefault(sample.pipeline, {})
        for node in sample.nodes:
            node_window = nodes.get(node.name)
            if node_window is None:
                node_window = nodes[node.name] = CounterWindow(self.window, width=2)
            node_window.update(now, (node.items_in, node.errors))
            if node.errors:
                self._nodes[f"{sample.pipeline}/{node.name}"] = node.errors

    def _rate(self, now: float) -> float:
        weighted = 0.0
        weights = 0.0
        attempts, errors = self._events.delta(now)
        if attempts > 0:
            weighted += errors
            weights += attempts
        for pipeline, nodes in self._node_windows.items():
            survive = 1.0
            busiest = 0.0
            for node_window in nodes.values():
                items_in, node_errors = node_window.delta(now)
                busiest = max(busiest, items_in)
                if items_in > 0 and node_errors > 0:
                    survive *= 1.0 - min(1.0, node_errors / items_in)
            weight = self._reads[pipeline][1].delta(now)[0] if pipeline in self._reads else 0
            weight = weight or busiest
            if weight > 0:
                weighted += (1.0 - survive) * weight
                weights += weight
        return min(1.0, weighted / weights) if weights > 0 else 0.0

    @property
    def current(self) -> float:
        """Failed share over the window (0..1)."""
        return self._rate(self.fresh_now())

    @property
    def exceeded(self) -> bool:
        return self.current > self.threshold

    @property
    def errors(self) -> int:
        return self._errors

    @property
    def total(self) -> int:
        return self._attempts

    def snapshot(self, now: float) -> ErrorRateSnapshot:
        return ErrorRateSnapshot(
            current=self._rate(now),
            threshold=self.threshold,
            errors=self._errors,
            total=self._attempts,
            window=self.window,
            nodes=dict(self._nodes),
        )


# -- backpressure -----------------------------------------------------------------------


@attrs.frozen
class EdgeSnapshot:
    """One edge buffer: depth now, drops and blocked time (totals and over the window).

    Example::

        >>> EdgeSnapshot(name="p/parse.in", depth=8, capacity=10).pressure
        0.8
    """

    name: str
    depth: int = 0
    capacity: int = 1
    strategy: str = "block"
    dropped: int = 0
    drops_per_second: float = 0.0
    blocked_count: int = 0
    blocked_seconds: float = 0.0
    blocked_fraction: float = 0.0
    max_depth: int = 0
    items_in: int = 0
    items_out: int = 0

    @property
    def pressure(self) -> float:
        return self.depth / self.capacity if self.capacity else 0.0


@attrs.frozen
class BackpressureSnapshot:
    """Every watched edge and totals.

    ``blocked_fraction`` is the largest share of the window any producer spent blocked on a
    full edge; ``max_pressure`` the fullest edge now.

    Example::

        >>> BackpressureSnapshot(dropped=3).dropped
        3
    """

    edges: Mapping[str, EdgeSnapshot] = attrs.field(factory=dict)
    dropped: int = 0
    drops_per_second: float = 0.0
    blocked_seconds: float = 0.0
    blocked_fraction: float = 0.0
    max_pressure: float = 0.0


class _EdgeState:
    __slots__ = ("latest", "window")

    def __init__(self, latest: EdgeSample, window: float) -> None:
        self.latest = latest
        self.window = CounterWindow(window, width=2)


class BackpressureMetric(Metric):
    """Queue depth, drops and blocked time of every edge of monitored pipelines.

    Edges of a monitored pipeline are named ``"<pipeline>/<node>.in"`` (the input of a node)
    and ``"<pipeline>/output"`` (the sink's input). Other buffers — a
    :class:`~haive.dataflow.BackpressureManager`'s, or any
    :class:`~haive.dataflow.BoundedBuffer` — are added with :meth:`watch`.

    Example::

        >>> import trio, trio.testing
        >>> from haive.dataflow import BoundedBuffer
        >>> async def demo():
        ...     bp = BackpressureMetric()
        ...     metrics = MetricsCollector({"backpressure": bp})
        ...     buf = BoundedBuffer(10, "drop_newest", name="ingest")
        ...     bp.watch(buf)
        ...     buf.put_nowait_batch(range(15))
        ...     snap = metrics.get_current().backpressure
        ...     return snap.dropped, snap.max_pressure, snap.edges["ingest"].depth
        >>> trio.run(demo, clock=trio.testing.MockClock(autojump_threshold=0))
        (5, 1.0, 10)
    """

    kind = "backpressure"

    def __init__(self, *, window: float | str = "1m") -> None:
        self.window = as_seconds(window, "BackpressureMetric window")
        self._edges: dict[str, _EdgeState] = {}
        self._watched: list[tuple[str, Any]] = []
        self._managers: list[Any] = []

    def watch(self, buffer: Any, name: str | None = None) -> None:
        """Include a :class:`~haive.dataflow.BoundedBuffer` made outside a pipeline."""
        if not hasattr(buffer, "stats") or not hasattr(buffer, "capacity"):
            raise ConfigError(f"BackpressureMetric.watch expects a BoundedBuffer, got {buffer!r}")
        self._watched.append((name or buffer.name, buffer))

    def watch_manager(self, manager: Any) -> None:
        """Include every buffer a :class:`~haive.dataflow.BackpressureManager` tracks, now and later."""
        if not hasattr(manager, "buffers"):
            raise ConfigError(f"watch_manager expects a BackpressureManager, got {manager!r}")
        self._managers.append(manager)

    def _update(self, key: str, edge: EdgeSample, now: float) -> None:
        state = self._edges.get(key)
        if state is None:
            state = self._edges[key] = _EdgeState(edge, self.window)
        state.latest = edge
        state.window.update(now, (edge.dropped, edge.blocked_seconds))

    def observe_sample(self, sample: RunSample, now: float) -> None:
        for edge in sample.edges:
            self._update(f"{sample.pipeline}/{edge.name}", edge, now)

    def poll(self, now: float) -> None:
        for name, buffer in self._watched:
            self._update(name, EdgeSample.of(buffer, name), now)
        for manager in self._managers:
            for name, buffer in manager.buffers.items():
                self._update(name, EdgeSample.of(buffer, name), now)

    def _edge(self, key: str, state: _EdgeState, now: float) -> EdgeSnapshot:
        edge = state.latest
        d_dropped, d_blocked = state.window.delta(now)
        span = state.window.span(now)
        return EdgeSnapshot(
            name=key,
            depth=edge.depth,
            capacity=edge.capacity,
            strategy=edge.strategy,
            dropped=edge.dropped,
            drops_per_second=d_dropped / span if span > 0 else 0.0,
            blocked_count=edge.blocked_count,
            blocked_seconds=edge.blocked_seconds,
            blocked_fraction=min(1.0, d_blocked / span) if span > 0 else 0.0,
            max_depth=edge.max_depth,
            items_in=edge.items_in,
            items_out=edge.items_out,
        )

    def snapshot(self, now: float) -> BackpressureSnapshot:
        edges = {key: self._edge(key, state, now) for key, state in self._edges.items()}
        values = list(edges.values())
        return BackpressureSnapshot(
            edges=edges,
            dropped=sum(e.dropped for e in values),
            drops_per_second=sum(e.drops_per_second for e in values),
            blocked_seconds=sum(e.blocked_seconds for e in values),
            blocked_fraction=max((e.blocked_fraction for e in values), default=0.0),
            max_pressure=max((e.pressure for e in values), default=0.0),
        )

    @property
    def dropped(self) -> int:
        return self.snapshot(self.fresh_now()).dropped

    @property
    def blocked_fraction(self) -> float:
        return self.snapshot(self.fresh_now()).blocked_fraction

    @property
    def max_pressure(self) -> float:
        return self.snapshot(self.fresh_now()).max_pressure

    @property
    def edges(self) -> Mapping[str, EdgeSnapshot]:
        return self.snapshot(self.fresh_now()).edges


# -- the collector ----------------------------------------------------------------------


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
        interval: float | str = 0.25,
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
