"""The live dashboard: a web page updated over a WebSocket, with ``/metrics`` and ``/healthz``.

One port serves everything, through the ``websockets`` trio server: its ``process_request``
hook answers plain HTTP GETs (the page, ``/metrics``, ``/healthz``, ``/api/snapshot``) and
lets WebSocket upgrades to ``/ws`` through. There is no second HTTP stack to run, secure or
keep in sync, and the WebSocket pushes need the ``websockets`` connection anyway; a
full ASGI app would only pay off with many pages or POST endpoints, which this does not have.

The page is self-contained (HTML, CSS and canvas-drawn charts in one file, no CDN), reconnects
by itself and never reloads: every update is a JSON frame pushed to each browser.
"""

from __future__ import annotations

import functools
import http
import importlib.resources
import itertools
import math
import time
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any, ClassVar

import attrs
import orjson
import trio
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.trio.server import Server, ServerConnection, serve

from haive.dataflow.errors import ConfigError
from haive.dataflow.runtime.units import Duration

from .alerts import AlertEvent, AlertManager
from .backpressure import BackpressureSnapshot
from .collector import MetricsCollector, MetricsSnapshot
from .error_rate import ErrorRateSnapshot
from .latency import LatencySnapshot
from .throughput import ThroughputSnapshot
from .windows import as_seconds

_KINDS: dict[str, type[Any]] = {
    "throughput": ThroughputSnapshot,
    "latency": LatencySnapshot,
    "error_rate": ErrorRateSnapshot,
    "backpressure": BackpressureSnapshot,
}

#: What a line chart of a metric plots when no field is named.
_DEFAULT_SERIES: dict[type[Any], tuple[str, ...]] = {
    ThroughputSnapshot: ("input_per_second", "per_second"),
    LatencySnapshot: ("p50", "p95", "p99"),
    ErrorRateSnapshot: ("current",),
    BackpressureSnapshot: ("max_pressure",),
}


def _as_ms(value: Any) -> Any:
    """A widget's ``refresh_interval`` is in milliseconds (the product description's unit
    for widgets); a ``timedelta`` is converted to them."""
    return value.total_seconds() * 1000.0 if isinstance(value, timedelta) else value


def _positive_ms(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(
            f"{type(instance).__name__}.{attribute.name} must be > 0 ms, got {value!r}"
        )


def resolve_metric(snapshot: MetricsSnapshot, path: str) -> tuple[Any, list[str]]:
    """The snapshot value a widget's ``metric`` names, and the remaining attribute path.

    ``"latency"`` is a metric's name (or, failing that, a kind: the first latency metric);
    ``"latency.p95"`` also names a field.

    Example::

        >>> snap = MetricsSnapshot(time=0.0, values={"tp": ThroughputSnapshot(per_second=3.0)})
        >>> value, rest = resolve_metric(snap, "throughput.per_second")
        >>> value.per_second, rest
        (3.0, ['per_second'])
    """
    head, *rest = path.split(".")
    value = snapshot.values.get(head)
    if value is None and head in _KINDS:
        value = snapshot.first(_KINDS[head])
    return value, rest


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


@attrs.define
class Widget:
    """Base of dashboard widgets: which ``metric`` to show, a ``title`` and how often.

    Unlike every other duration of the API, a widget's ``refresh_interval`` is in
    **milliseconds**, as the product description writes it (``refresh_interval=1000`` is one
    second); a :class:`~datetime.timedelta` is converted.
    """

    KIND: ClassVar[str] = ""
    metric: str
    title: str = ""
    refresh_interval: float = attrs.field(default=1000.0, converter=_as_ms, validator=_positive_ms)

    def spec(self) -> dict[str, Any]:
        return {"kind": self.KIND, "metric": self.metric, "title": self.title or self.metric}

    def data(self, snapshot: MetricsSnapshot) -> Any:
        raise NotImplementedError


@attrs.define
class LineChart(Widget):
    """A line chart of a metric over time (the last ``history`` points).

    ``metric`` is a metric name or kind, optionally with a field: ``"throughput"`` plots
    input (read from the source) and output (delivered) events/s over the last second, ``"latency"`` p50/p95/p99, ``"latency.p99"`` only p99,
    ``"error_rate"`` the failed share. A point is added at most every ``refresh_interval`` ms.

    Example::

        >>> chart = LineChart(metric="throughput", title="Stream Throughput", refresh_interval=1000)
        >>> tp = ThroughputSnapshot(input_per_second=700.0, per_second=7.0)
        >>> chart.series(MetricsSnapshot(time=0.0, values={"throughput": tp}))
        {'input_per_second': 700.0, 'per_second': 7.0}
    """

    KIND: ClassVar[str] = "line"
    history: int = 300

    def series(self, snapshot: MetricsSnapshot) -> dict[str, float | None]:
        value, rest = resolve_metric(snapshot, self.metric)
        if value is None:
            return {}
        if rest:
            target: Any = value
            for part in rest:
                target = getattr(target, part, None)
            return {rest[-1]: _number(target)}
        fields = _DEFAULT_SERIES.get(type(value))
        if fields is None:
            return {self.metric: _number(value)}
        return {name: _number(getattr(value, name, None)) for name in fields}

    def data(self, snapshot: MetricsSnapshot) -> dict[str, float | None]:
        return self.series(snapshot)


@attrs.define
class Histogram(Widget):
    """A bar chart of a latency metric's distribution over its window, in ``buckets`` (ms).

    Bars are ``<= b0``, ``b0-b1``, ..., ``> b_last``.

    Example::

        >>> h = Histogram(metric="latency", title="Latency", buckets=[10, 50, 100])
        >>> h.labels()
        ['<=10', '10-50', '50-100', '>100']
    """

    KIND: ClassVar[str] = "histogram"
    buckets: Sequence[float] = attrs.field(default=(1, 5, 10, 50, 100, 500, 1000, 5000))

    def __attrs_post_init__(self) -> None:
        bounds = list(self.buckets)
        if (
            not bounds
            or any(_number(b) is None or b < 0 for b in bounds)
            or bounds != sorted(set(bounds))
        ):
            raise ConfigError(
                f"Histogram {self.title or self.metric!r}: buckets must be increasing, distinct "
                f"non-negative numbers of ms, got {self.buckets!r}"
            )
        self.buckets = tuple(float(b) for b in bounds)

    def labels(self) -> list[str]:
        b = [f"{x:g}" for x in self.buckets]
        return [f"<={b[0]}", *(f"{lo}-{hi}" for lo, hi in itertools.pairwise(b)), f">{b[-1]}"]

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "labels": self.labels(), "unit": "ms"}

    def data(self, snapshot: MetricsSnapshot) -> list[int]:
        value, _ = resolve_metric(snapshot, self.metric)
        if not isinstance(value, LatencySnapshot):
            return [0] * (len(self.buckets) + 1)
        return value.distribution(self.buckets)


def default_widgets() -> dict[str, Widget]:
    """The widgets a dashboard shows when none were added.

    Example::

        >>> sorted(default_widgets())
        ['error_rate_chart', 'latency_chart', 'latency_histogram', 'throughput_chart']
    """
    return {
        "throughput_chart": LineChart(metric="throughput", title="Throughput (events/s)"),
        "latency_chart": LineChart(metric="latency", title="Latency percentiles (ms)"),
        "latency_histogram": Histogram(metric="latency", title="Latency distribution (ms)"),
        "error_rate_chart": LineChart(metric="error_rate", title="Error rate"),
    }


def figures(snapshot: MetricsSnapshot) -> dict[str, Any]:
    """The headline figures of a snapshot (what the page's cards and ``haive top`` show).

    Example::

        >>> figures(MetricsSnapshot(time=0.0, values={"t": ThroughputSnapshot(per_second=2.0)}))["throughput"]["per_second"]
        2.0
    """
    out: dict[str, Any] = {}
    tp = snapshot.first(ThroughputSnapshot)
    if tp is not None:
        out["throughput"] = {
            "per_second": tp.per_second,
            "per_minute": tp.per_minute,
            "current": tp.current,
            "total": tp.total,
            "input_per_second": tp.input_per_second,
        }
    lat = snapshot.first(LatencySnapshot)
    if lat is not None:
        out["latency"] = {
            "p50": lat.p50,
            "p95": lat.p95,
            "p99": lat.p99,
            "mean": lat.mean,
            "max": lat.max,
            "count": lat.count,
            "nodes": {k: attrs.asdict(v) for k, v in lat.nodes.items()},
        }
    err = snapshot.first(ErrorRateSnapshot)
    if err is not None:
        out["error_rate"] = {
            "current": err.current,
            "threshold": err.threshold,
            "errors": err.errors,
            "total": err.total,
            "exceeded": err.exceeded,
        }
    bp = snapshot.first(BackpressureSnapshot)
    if bp is not None:
        out["queues"] = [
            {
                "name": e.name,
                "depth": e.depth,
                "capacity": e.capacity,
                "pressure": e.pressure,
                "dropped": e.dropped,
                "blocked_fraction": e.blocked_fraction,
            }
            for e in bp.edges.values()
        ]
        out["dropped"] = bp.dropped
    out["pipelines"] = [
        {
            "name": s.pipeline,
            "running": s.running,
            "read": s.read,
            "processed": s.processed,
            "failed": s.failed,
            "elapsed": s.elapsed,
        }
        for s in snapshot.pipelines.values()
    ]
    extra = {
        name: value.to_dict()
        for name, value in snapshot.values.items()
        if hasattr(value, "to_dict") and not isinstance(value, tuple(_KINDS.values()))
    }
    if extra:
        out["extra"] = extra
    if snapshot.gauges:
        out["gauges"] = dict(snapshot.gauges)
    return out


def _page() -> bytes:
    return importlib.resources.files(__package__).joinpath("static/dashboard.html").read_bytes()


def _response(status: http.HTTPStatus, body: bytes, content_type: str) -> Response:
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            ("Connection", "close"),
        ]
    )
    return Response(status.value, status.phrase, headers, body)


class Dashboard:
    """A live web dashboard of a metrics collector, its alerts and custom widgets.

    Add widgets with :meth:`add_widget`, feed it with :meth:`update` (as in the seed) or
    :meth:`attach` a collector and let :meth:`serve` refresh it, and start the server with
    ``url = await nursery.start(dashboard.serve)``. A dashboard is also an alert notifier:
    ``AlertManager(notifiers=[dashboard])`` (or :meth:`attach` ``alerts=``) pushes alerts to
    the page the moment they fire or resolve. Its own ``refresh_interval`` (how often it
    reads an attached collector) is in seconds, like every duration outside widgets: a
    number, a :class:`~datetime.timedelta` or ``"500ms"``.

    Example::

        >>> dashboard = Dashboard("streaming-analytics")
        >>> dashboard.add_widget("throughput_chart", LineChart(
        ...     metric="throughput", title="Stream Throughput", refresh_interval=1000))
        >>> dashboard.add_widget("latency_histogram", Histogram(
        ...     metric="latency", title="Processing Latency Distribution",
        ...     buckets=[10, 50, 100, 500, 1000, 5000]))
        >>> async def demo():
        ...     await dashboard.update(MetricsSnapshot(time=0.0, values={
        ...         "throughput": ThroughputSnapshot(per_second=42.0)}))
        ...     return dashboard.frame()["widgets"]["throughput_chart"]["points"][-1][1]
        >>> trio.run(demo)
        {'input_per_second': 0.0, 'per_second': 42.0}
    """

    PLUGIN_NAME: ClassVar[str] = "dashboard"

    def __init__(
        self,
        name: str = "haive",
        *,
        metrics: MetricsCollector | None = None,
        alerts: AlertManager | None = None,
        refresh_interval: Duration = 1.0,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"Dashboard needs a name, got {name!r}")
        self.name = name
        self.refresh_interval = as_seconds(refresh_interval, "Dashboard refresh_interval")
        self.widgets: dict[str, Widget] = {}
        self.metrics: MetricsCollector | None = None
        self.alerts: AlertManager | None = None
        self._points: dict[str, deque[tuple[float, dict[str, float | None]]]] = {}
        self._widget_data: dict[str, Any] = {}
        self._figures: dict[str, Any] = {}
        self._snapshot: MetricsSnapshot | None = None
        self._version = 0
        self._changed = trio.Event()
        self._server: Server | None = None
        self.address: tuple[str, int] | None = None
        self.clients = 0
        self.updates = 0
        self._started = time.time()
        self.attach(metrics=metrics, alerts=alerts)

    # -- configuration -------------------------------------------------------------------
    def add_widget(self, widget_id: str, widget: Widget) -> None:
        """Show ``widget`` under ``widget_id`` (unique)."""
        if not isinstance(widget, Widget):
            raise ConfigError(f"add_widget expects a LineChart or Histogram, got {widget!r}")
        if widget_id in self.widgets:
            raise ConfigError(f"Dashboard {self.name!r} already has a widget {widget_id!r}")
        self.widgets[widget_id] = widget

    def attach(
        self, *, metrics: MetricsCollector | None = None, alerts: AlertManager | None = None
    ) -> None:
        """Read figures from ``metrics`` (for ``/metrics`` and self-refresh) and show ``alerts``."""
        if metrics is not None:
            self.metrics = metrics
        if alerts is not None and alerts is not self.alerts:
            self.alerts = alerts
            if self not in alerts.notifiers:
                alerts.add_notifier(self)

    def _widgets(self) -> dict[str, Widget]:
        if not self.widgets:
            self.widgets.update(default_widgets())
        return self.widgets

    # -- updates -------------------------------------------------------------------------
    async def update(self, snapshot: MetricsSnapshot | None = None) -> None:
        """Show ``snapshot`` (default: a fresh one from the attached collector) on every page."""
        if snapshot is None:
            if self.metrics is None:
                raise ConfigError(
                    f"Dashboard {self.name!r}.update() needs a snapshot or an attached MetricsCollector"
                )
            snapshot = self.metrics.get_current()
        if not isinstance(snapshot, MetricsSnapshot):
            raise ConfigError(
                f"Dashboard.update expects a MetricsSnapshot, got {type(snapshot).__name__}"
            )
        self._snapshot = snapshot
        wall = time.time()
        for widget_id, widget in self._widgets().items():
            if isinstance(widget, LineChart):
                points = self._points.get(widget_id)
                if points is None:
                    points = self._points[widget_id] = deque(maxlen=widget.history)
                if not points or (wall - points[-1][0]) * 1000 >= widget.refresh_interval * 0.95:
                    points.append((wall, widget.data(snapshot)))
            else:
                self._widget_data[widget_id] = widget.data(snapshot)
        self._figures = figures(snapshot)
        self.updates += 1
        self._publish()
        await trio.lowlevel.checkpoint()

    async def notify(self, event: AlertEvent) -> None:
        """Alert notifier protocol: show the change on every page now."""
        self._publish()
        await trio.lowlevel.checkpoint()

    def _publish(self) -> None:
        self._version += 1
        changed, self._changed = self._changed, trio.Event()
        changed.set()

    def frame(self, *, points: int = 20) -> dict[str, Any]:
        """The JSON-ready update frame browsers receive (the last ``points`` chart points)."""
        widgets: dict[str, Any] = {}
        for widget_id, widget in self._widgets().items():
            if isinstance(widget, LineChart):
                tail = list(self._points.get(widget_id, ()))[-points:]
                widgets[widget_id] = {"points": [[t * 1000.0, v] for t, v in tail]}
            else:
                widgets[widget_id] = {"values": self._widget_data.get(widget_id)}
        return {
            "type": "update",
            "version": self._version,
            "time": time.time() * 1000.0,
            "figures": self._figures,
            "widgets": widgets,
            "alerts": self.alerts.active_list() if self.alerts is not None else [],
            "recent_alerts": [e.to_dict() for e in list(self.alerts.history)[-10:]]
            if self.alerts
            else [],
        }

    def init_frame(self) -> dict[str, Any]:
        """The first frame a browser receives: widget layout and full chart history."""
        frame = self.frame(points=10_000)
        frame["type"] = "init"
        frame["name"] = self.name
        frame["layout"] = [{"id": wid, **w.spec()} for wid, w in self._widgets().items()]
        return frame

    # -- serving -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """``http://host:port/`` once :meth:`serve` has started."""
        if self.address is None:
            raise ConfigError(f"Dashboard {self.name!r} is not serving yet (start serve() first)")
        host, port = self.address
        return f"http://{host}:{port}/"

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://", 1) + "ws"

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "dashboard": self.name,
            "clients": self.clients,
            "updates": self.updates,
            "uptime_seconds": time.time() - self._started,
            "active_alerts": len(self.alerts.active) if self.alerts else 0,
        }

    def metrics_text(self) -> bytes:
        """What ``/metrics`` answers: Prometheus text of the collector (or last snapshot)."""
        from .prometheus import render  # prometheus_client is loaded when first scraped

        if self.metrics is not None:
            snapshot = self.metrics.get_current()
        elif self._snapshot is not None:
            snapshot = self._snapshot
        else:
            snapshot = MetricsSnapshot(time=0.0)
        return render(snapshot, self.alerts)

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
        if path == "/ws":
            if upgrade:
                return None
            return _response(
                http.HTTPStatus.UPGRADE_REQUIRED, b"connect with a WebSocket\n", "text/plain"
            )
        if path in ("/", "/index.html"):
            return _response(http.HTTPStatus.OK, _page(), "text/html; charset=utf-8")
        if path == "/metrics":
            from .prometheus import CONTENT_TYPE

            return _response(http.HTTPStatus.OK, self.metrics_text(), CONTENT_TYPE)
        if path in ("/healthz", "/health"):
            return _response(http.HTTPStatus.OK, orjson.dumps(self.health()), "application/json")
        if path == "/api/snapshot":
            return _response(
                http.HTTPStatus.OK, orjson.dumps(self.init_frame()), "application/json"
            )
        return _response(http.HTTPStatus.NOT_FOUND, f"no page {path}\n".encode(), "text/plain")

    async def _client(self, websocket: ServerConnection) -> None:
        self.clients += 1
        try:
            await websocket.send(orjson.dumps(self.init_frame()).decode())
            seen = self._version
            while True:
                if seen == self._version:
                    await self._changed.wait()
                seen = self._version
                await websocket.send(orjson.dumps(self.frame()).decode())
        except ConnectionClosed:
            return
        finally:
            self.clients -= 1

    async def _refresh(self) -> None:
        while True:
            await self.update()
            await trio.sleep(self.refresh_interval)

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve the page, ``/ws``, ``/metrics``, ``/healthz`` until cancelled.

        Use ``url = await nursery.start(dashboard.serve)``; with a collector attached the
        dashboard also refreshes itself every ``refresh_interval`` seconds.
        """
        async with trio.open_nursery() as nursery:
            server: Server = await nursery.start(
                functools.partial(
                    serve,
                    self._client,
                    port,
                    host=host,
                    process_request=self._process_request,
                    compression=None,
                )
            )
            self._server = server
            sockname = server.listeners[0].socket.getsockname()
            self.address = (sockname[0], sockname[1])
            if self.metrics is not None:
                nursery.start_soon(self._refresh)
            task_status.started(self.url)
            try:
                await trio.sleep_forever()
            finally:
                self.address = None
                self._server = None


def frame_as_text(frame: Mapping[str, Any]) -> str:
    """Short one-line summary of a frame (logs, ``haive run``)."""
    fig = frame.get("figures", {})
    tp = fig.get("throughput", {}).get("per_second", 0.0)
    p99 = fig.get("latency", {}).get("p99", 0.0)
    err = fig.get("error_rate", {}).get("current", 0.0)
    return (
        f"{tp:,.0f} ev/s  p99 {p99:.2f} ms  errors {err:.2%}  alerts {len(frame.get('alerts', []))}"
    )
