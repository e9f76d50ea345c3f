"""``StreamAnalytics``: metrics, alerts and a dashboard wired together.

The seed creates ``StreamAnalytics()`` next to its collector, alert manager and dashboard;
this class is what ties them: attached to a pipeline as a monitor it samples the run, and
every ``interval`` it evaluates the alert rules on a fresh snapshot and pushes that snapshot
to the dashboard.
"""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from haive.dataflow.errors import ConfigError
from haive.dataflow.runtime.units import Duration

from .alerts import Alert, AlertManager
from .collector import MetricsCollector, MetricsSnapshot
from .dashboard import Dashboard
from .windows import as_seconds


class StreamAnalytics:
    """Samples pipelines into a :class:`MetricsCollector`, evaluates an :class:`AlertManager`
    and refreshes a :class:`Dashboard`, on one schedule.

    ``pipeline.add_monitor(analytics)`` (or :meth:`watch`) does it for the duration of a run;
    :meth:`run` does it until cancelled (for metrics fed by ``record``). Each round is
    :meth:`tick`, which returns the alerts that fired in it.

    Example::

        >>> import trio
        >>> from haive.dataflow import StreamingPipeline
        >>> from haive.dataflow.builtins.sources import IterableSource
        >>> analytics = StreamAnalytics(interval=0.05)
        >>> @analytics.alerts.rule("any_errors")
        ... def any_errors(metrics):
        ...     if metrics.error_rate.errors:
        ...         return Alert("warning", f"{metrics.error_rate.errors} errors")
        ...     return None
        >>> pipeline = StreamingPipeline("doc", on_error="skip")
        >>> pipeline.set_source(IterableSource(range(100)))
        >>> pipeline.add_processor(lambda x: 1 // (x % 10))
        >>> analytics.watch(pipeline)
        >>> report = trio.run(pipeline.execute)
        >>> analytics.alerts.active["any_errors"].alert.message
        '10 errors'
    """

    def __init__(
        self,
        metrics: MetricsCollector | None = None,
        alerts: AlertManager | None = None,
        dashboard: Dashboard | None = None,
        *,
        interval: Duration = 1.0,
    ) -> None:
        if metrics is not None and not isinstance(metrics, MetricsCollector):
            raise ConfigError(
                f"StreamAnalytics: metrics must be a MetricsCollector, got {metrics!r}"
            )
        if alerts is not None and not isinstance(alerts, AlertManager):
            raise ConfigError(f"StreamAnalytics: alerts must be an AlertManager, got {alerts!r}")
        if dashboard is not None and not isinstance(dashboard, Dashboard):
            raise ConfigError(f"StreamAnalytics: dashboard must be a Dashboard, got {dashboard!r}")
        self.metrics = metrics if metrics is not None else MetricsCollector()
        self.alerts = alerts if alerts is not None else AlertManager(notifiers=["log"])
        self.dashboard = dashboard
        self.interval = as_seconds(interval, "StreamAnalytics interval")
        if dashboard is not None:
            dashboard.attach(metrics=self.metrics, alerts=self.alerts)
        self.last: MetricsSnapshot | None = None
        self.ticks = 0
        self._loops = 0

    @classmethod
    def for_pipeline(
        cls,
        pipeline: Any,
        *,
        rules: tuple[str, ...] = (
            "high_latency",
            "error_spike",
            "queue_saturation",
            "dropping_items",
        ),
        dashboard: bool = True,
        interval: Duration = 1.0,
    ) -> StreamAnalytics:
        """Everything at once for one pipeline: default metrics, the registered ``rules``
        (logged), a dashboard named after the pipeline, all watching it. What a command
        line needs: ``url = await nursery.start(analytics.dashboard.serve)``.

        Example::

            >>> from haive.dataflow import StreamingPipeline
            >>> analytics = StreamAnalytics.for_pipeline(StreamingPipeline("orders"))
            >>> analytics.dashboard.name, analytics.alerts.rules[:2]
            ('orders', ['high_latency', 'error_spike'])
        """
        alerts = AlertManager(notifiers=["log"], rules=rules)
        board = Dashboard(pipeline.name) if dashboard else None
        analytics = cls(MetricsCollector(), alerts, board, interval=interval)
        analytics.watch(pipeline)
        return analytics

    def watch(self, pipeline: Any) -> None:
        """Monitor ``pipeline`` (a :class:`~haive.dataflow.StreamingPipeline`) on every run."""
        pipeline.add_monitor(self)

    async def tick(self) -> list[Alert]:
        """One round: snapshot, evaluate rules, update the dashboard; returns fired alerts."""
        snapshot = self.metrics.get_current()
        self.last = snapshot
        self.ticks += 1
        fired = await self.alerts.evaluate(snapshot)
        if self.dashboard is not None:
            await self.dashboard.update(snapshot)
        return fired

    async def _loop(self) -> None:
        # One evaluation loop however many runs are monitored at once.
        self._loops += 1
        try:
            if self._loops > 1:
                await trio.sleep_forever()
            while True:
                await trio.sleep(self.interval)
                await self.tick()
        finally:
            self._loops -= 1

    async def monitor(self, run: Any) -> None:
        """Pipeline monitor protocol: sample ``run`` and evaluate until it ends, then once more."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.metrics.monitor, run)
                nursery.start_soon(self._loop)
        finally:
            # The run is over (monitors are cancelled then): a last round reports its final
            # figures and resolves or fires alerts on them. Shielded, and bounded.
            with trio.CancelScope(shield=True), trio.move_on_after(self.alerts.notify_timeout + 1):
                await self.tick()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Tick every ``interval`` seconds until cancelled."""
        task_status.started()
        while True:
            await self.tick()
            await trio.sleep(self.interval)


@asynccontextmanager
async def dashboard_service(pipeline: Any) -> AsyncIterator[str | None]:
    """Metrics, logged alerts and a live dashboard for a pipeline that ``haive run`` or
    ``haive demo`` starts; yields the dashboard's address (``None`` for pipelines without
    monitors). ``HAIVE_DASHBOARD_PORT`` picks the port (default: any free one).

    Example::

        >>> import trio
        >>> from haive.dataflow import StreamingPipeline
        >>> async def main():
        ...     async with dashboard_service(StreamingPipeline("orders")) as url:
        ...         return url.startswith("http://127.0.0.1:")
        >>> trio.run(main)
        True
    """
    from haive.dataflow import StreamingPipeline

    if not isinstance(pipeline, StreamingPipeline):
        yield None
        return
    analytics = StreamAnalytics.for_pipeline(pipeline)
    assert analytics.dashboard is not None
    port = int(os.environ.get("HAIVE_DASHBOARD_PORT", "0"))
    async with trio.open_nursery() as nursery:
        url: str = await nursery.start(functools.partial(analytics.dashboard.serve, port=port))
        yield url
        nursery.cancel_scope.cancel()
