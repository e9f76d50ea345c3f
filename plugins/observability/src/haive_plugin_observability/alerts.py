"""Alert rules over metrics: ``AlertManager``, ``@alerts.rule(...)`` and reusable rule classes.

A rule looks at metrics and returns an :class:`Alert` while its condition holds, None
otherwise. The manager deduplicates: an alert is *fired* once when its rule starts returning
one (and again if its severity changes), stays *active* while the rule keeps returning one,
and is *resolved* when the rule returns None. Fired and resolved :class:`AlertEvent` s go to
every notifier (log, webhook, a stream sink, the dashboard...).

Rules come from three places: ``@alerts.rule("name")`` functions (sync or async), rule
classes (:class:`AlertRule` subclasses) added with :meth:`AlertManager.add_rule`, and rule
classes other plugins register through the ``haive_register_alert_rules`` hook, enabled by
name with :meth:`AlertManager.use`.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, ClassVar, Literal

import attrs
import trio

from haive.dataflow.errors import ConfigError
from haive.dataflow.plugins import get_registry
from haive.dataflow.runtime.units import Duration, parse_duration

from .backpressure import BackpressureSnapshot
from .collector import MetricsCollector, MetricsSnapshot
from .error_rate import ErrorRateSnapshot
from .latency import LatencySnapshot

log = logging.getLogger("haive.alerts")

SEVERITIES: tuple[str, ...] = ("info", "warning", "error", "critical")
Severity = Literal["info", "warning", "error", "critical"]


def check_severity(value: object, where: str = "Alert.severity") -> None:
    """Raise ConfigError unless ``value`` is one of :data:`SEVERITIES`."""
    if value not in SEVERITIES:
        raise ConfigError(f"{where} must be one of {', '.join(SEVERITIES)}, got {value!r}")


def _severity(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    check_severity(value)


def _text(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"Alert.{attribute.name} must be a non-empty string, got {value!r}")


@attrs.frozen(kw_only=False)
class Alert:
    """What a rule returns while its condition holds.

    Example::

        >>> Alert(severity="warning", message="High latency: 1200ms",
        ...       suggested_action="Scale up processing nodes").severity
        'warning'
        >>> Alert("loud", "x")
        Traceback (most recent call last):
        ...
        haive.dataflow.errors.ConfigError: Alert.severity must be one of info, warning, error, critical, got 'loud'
    """

    severity: str = attrs.field(validator=_severity)
    message: str = attrs.field(validator=_text)
    suggested_action: str | None = None
    labels: Mapping[str, str] = attrs.field(factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "message": self.message,
            "suggested_action": self.suggested_action,
            "labels": dict(self.labels),
        }


@attrs.frozen
class AlertEvent:
    """An alert fired or resolved, as delivered to notifiers.

    ``since`` and ``at`` are trio times (for durations); ``wall_time`` is seconds since the
    epoch (for people and other systems).

    Example::

        >>> event = AlertEvent("firing", "high_latency", Alert("warning", "slow"), since=1.0, at=1.0)
        >>> event.to_dict()["status"], event.to_dict()["alert"]["message"]
        ('firing', 'slow')
    """

    status: Literal["firing", "resolved"]
    rule: str
    alert: Alert
    since: float
    at: float
    wall_time: float = attrs.field(factory=time.time)

    @property
    def duration(self) -> float:
        return self.at - self.since

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "rule": self.rule,
            "alert": self.alert.to_dict(),
            "since": self.since,
            "at": self.at,
            "duration": self.duration,
            "wall_time": self.wall_time,
        }


@attrs.define
class ActiveAlert:
    """An alert whose condition still holds.

    Example::

        >>> ActiveAlert("error_spike", Alert("critical", "5% errors"), since=3.0, last_seen=4.0).evaluations
        1
    """

    rule: str
    alert: Alert
    since: float
    last_seen: float
    evaluations: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            **self.alert.to_dict(),
            "since": self.since,
            "last_seen": self.last_seen,
            "evaluations": self.evaluations,
        }


RuleFunction = Callable[[Any], "Alert | Awaitable[Alert | None] | None"]


class AlertRule:
    """Base of reusable rule classes (the kind plugins register via ``haive_register_alert_rules``).

    Subclasses set ``PLUGIN_NAME``, take their thresholds as keyword arguments and implement
    :meth:`evaluate` (sync or ``async``), which receives a
    :class:`~haive_plugin_observability.metrics.MetricsSnapshot`.

    Example::

        >>> class TooQuiet(AlertRule):
        ...     PLUGIN_NAME = "too_quiet"
        ...     def __init__(self, minimum=1.0):
        ...         self.minimum = minimum
        ...     def evaluate(self, metrics):
        ...         if metrics.throughput.current < self.minimum:
        ...             return Alert("info", "no traffic")
        ...         return None
        >>> from haive_plugin_observability.metrics import ThroughputSnapshot
        >>> TooQuiet().evaluate(MetricsSnapshot(time=0.0, values={"throughput": ThroughputSnapshot()}))
        Alert(severity='info', message='no traffic', suggested_action=None, labels={})
    """

    PLUGIN_NAME: ClassVar[str] = ""

    def evaluate(self, metrics: MetricsSnapshot) -> Alert | Awaitable[Alert | None] | None:
        raise NotImplementedError(f"{type(self).__name__} must implement evaluate(metrics)")


def _find(metrics: MetricsSnapshot, kind: type[Any]) -> Any:
    return metrics.first(kind)


class HighLatencyRule(AlertRule):
    """Fires while a latency percentile (ms) is above ``threshold_ms``.

    Example::

        >>> snap = MetricsSnapshot(time=0.0, values={"latency": LatencySnapshot(percentiles={"p99": 1500.0})})
        >>> HighLatencyRule(threshold_ms=1000).evaluate(snap).message
        'High latency detected: p99 1500.0 ms (threshold 1000 ms)'
    """

    PLUGIN_NAME = "high_latency"

    def __init__(
        self, threshold_ms: float = 1000.0, percentile: float = 99, severity: str = "warning"
    ) -> None:
        self.threshold_ms = threshold_ms
        self.percentile = percentile
        self.severity = severity
        check_severity(severity)

    def evaluate(self, metrics: MetricsSnapshot) -> Alert | None:
        latency = _find(metrics, LatencySnapshot)
        if latency is None:
            return None
        name = "p" + f"{self.percentile:g}".replace(".", "_")
        value = float(getattr(latency, name))
        if value <= self.threshold_ms:
            return None
        return Alert(
            self.severity,
            f"High latency detected: {name} {value:.1f} ms (threshold {self.threshold_ms:g} ms)",
            "Scale up processing nodes or raise their concurrency",
        )


class ErrorSpikeRule(AlertRule):
    """Fires while the error rate is above ``threshold`` (a fraction).

    Example::

        >>> snap = MetricsSnapshot(time=0.0, values={"errors": ErrorRateSnapshot(current=0.08)})
        >>> ErrorSpikeRule(threshold=0.05).evaluate(snap).message
        'Error rate spike: 8.00%'
    """

    PLUGIN_NAME = "error_spike"

    def __init__(self, threshold: float = 0.05, severity: str = "critical") -> None:
        self.threshold = threshold
        self.severity = severity
        check_severity(severity)

    def evaluate(self, metrics: MetricsSnapshot) -> Alert | None:
        errors = _find(metrics, ErrorRateSnapshot)
        if errors is None or errors.current <= self.threshold:
            return None
        return Alert(
            self.severity,
            f"Error rate spike: {errors.current:.2%}",
            "Investigate error logs immediately",
        )


class QueueSaturationRule(AlertRule):
    """Fires while some edge is fuller than ``max_pressure`` (0..1) or producers are blocked
    more than ``max_blocked_fraction`` of the time.

    Example::

        >>> from haive_plugin_observability.metrics import EdgeSnapshot
        >>> edge = EdgeSnapshot(name="p/parse.in", depth=95, capacity=100)
        >>> snap = MetricsSnapshot(time=0.0, values={"bp": BackpressureSnapshot(
        ...     edges={edge.name: edge}, max_pressure=0.95)})
        >>> QueueSaturationRule().evaluate(snap).message
        'Queue p/parse.in is 95% full'
    """

    PLUGIN_NAME = "queue_saturation"

    def __init__(
        self,
        max_pressure: float = 0.9,
        max_blocked_fraction: float = 0.5,
        severity: str = "warning",
    ) -> None:
        self.max_pressure = max_pressure
        self.max_blocked_fraction = max_blocked_fraction
        self.severity = severity
        check_severity(severity)

    def evaluate(self, metrics: MetricsSnapshot) -> Alert | None:
        bp = _find(metrics, BackpressureSnapshot)
        if bp is None or not bp.edges:
            return None
        fullest = max(bp.edges.values(), key=lambda e: e.pressure)
        if fullest.pressure > self.max_pressure:
            return Alert(
                self.severity,
                f"Queue {fullest.name} is {fullest.pressure:.0%} full",
                "The stage after this queue is the bottleneck: speed it up or add concurrency",
            )
        blocked = max(bp.edges.values(), key=lambda e: e.blocked_fraction)
        if blocked.blocked_fraction > self.max_blocked_fraction:
            return Alert(
                self.severity,
                f"Producers into {blocked.name} blocked {blocked.blocked_fraction:.0%} of the time",
                "The stage after this queue is the bottleneck: speed it up or add concurrency",
            )
        return None


class DroppingItemsRule(AlertRule):
    """Fires while any edge drops more than ``max_drops_per_second`` items per second.

    Example::

        >>> snap = MetricsSnapshot(time=0.0, values={"bp": BackpressureSnapshot(drops_per_second=12.0)})
        >>> DroppingItemsRule().evaluate(snap).message
        'Dropping 12.0 items/s under backpressure'
    """

    PLUGIN_NAME = "dropping_items"

    def __init__(self, max_drops_per_second: float = 0.0, severity: str = "warning") -> None:
        self.max_drops_per_second = max_drops_per_second
        self.severity = severity
        check_severity(severity)

    def evaluate(self, metrics: MetricsSnapshot) -> Alert | None:
        bp = _find(metrics, BackpressureSnapshot)
        if bp is None or bp.drops_per_second <= self.max_drops_per_second:
            return None
        return Alert(
            self.severity,
            f"Dropping {bp.drops_per_second:.1f} items/s under backpressure",
            "Add capacity downstream or switch the edge to the block strategy",
        )


BUILTIN_RULES: tuple[type[AlertRule], ...] = (
    HighLatencyRule,
    ErrorSpikeRule,
    QueueSaturationRule,
    DroppingItemsRule,
)


@attrs.define
class _Rule:
    name: str
    evaluate: Callable[[Any], Any]
    wants_snapshot: bool
    is_async: bool


class AlertManager:
    """Evaluates alert rules, deduplicates their alerts and delivers fired/resolved events.

    ``notifiers`` are :class:`~.notifiers.AlertNotifier` instances, names of registered
    notifiers (``"log"``) or plain callables (sync or async) taking an :class:`AlertEvent`.
    Each delivery is bounded by ``notify_timeout`` seconds; a failing notifier is logged and
    counted in :attr:`notifier_failures`, never stops evaluation.

    Example: the seed's rules, evaluated twice while the error rate is high, then once after
    it cleared::

        >>> alerts = AlertManager()
        >>> @alerts.rule("error_spike")
        ... async def check_errors(metrics):
        ...     if metrics.error_rate.current > 0.05:
        ...         return Alert(severity="critical",
        ...                      message=f"Error rate spike: {metrics.error_rate.current:.2%}",
        ...                      suggested_action="Investigate error logs immediately")
        ...     return None
        >>> def snap(rate):
        ...     return MetricsSnapshot(time=0.0, values={"error_rate": ErrorRateSnapshot(current=rate)})
        >>> async def demo():
        ...     first = await alerts.evaluate(snap(0.2))
        ...     again = await alerts.evaluate(snap(0.3))
        ...     active = list(alerts.active)
        ...     await alerts.evaluate(snap(0.0))
        ...     return [a.message for a in first], again, active, list(alerts.active)
        >>> trio.run(demo)
        (['Error rate spike: 20.00%'], [], ['error_spike'], [])
    """

    def __init__(
        self,
        notifiers: Iterable[Any] = (),
        *,
        rules: Iterable[str] = (),
        notify_timeout: Duration = 5.0,
        history: int = 200,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._rules: dict[str, _Rule] = {}
        self._notifiers: list[Any] = []
        self.notify_timeout = parse_duration(notify_timeout, what="AlertManager notify_timeout")
        self._clock = clock or trio.current_time
        self.active: dict[str, ActiveAlert] = {}
        self.history: deque[AlertEvent] = deque(maxlen=history)
        self.rule_errors: dict[str, int] = {}
        self.notifier_failures: dict[str, int] = {}
        self.evaluations = 0
        for notifier in notifiers:
            self.add_notifier(notifier)
        for name in rules:
            self.use(name)

    # -- rules ---------------------------------------------------------------------------
    def rule(self, name: str) -> Callable[[RuleFunction], RuleFunction]:
        """Decorator registering ``fn(metrics) -> Alert | None`` (sync or async) as rule ``name``.

        The function receives what :meth:`evaluate` was given (a collector or a snapshot).
        """

        def register(fn: RuleFunction) -> RuleFunction:
            self._add(name, fn, wants_snapshot=False)
            return fn

        return register

    def add_rule(
        self, rule: AlertRule | type[AlertRule] | RuleFunction, name: str | None = None
    ) -> None:
        """Add a rule object or class (evaluated on a snapshot) or a function (see :meth:`rule`)."""
        if isinstance(rule, type) and issubclass(rule, AlertRule):
            rule = rule()
        if isinstance(rule, AlertRule):
            self._add(
                name or rule.PLUGIN_NAME or type(rule).__name__, rule.evaluate, wants_snapshot=True
            )
        elif callable(rule):
            self._add(name or str(getattr(rule, "__name__", "rule")), rule, wants_snapshot=False)
        else:
            raise ConfigError(f"add_rule expects an AlertRule or a callable, got {rule!r}")

    def use(self, rule_name: str, *, name: str | None = None, **params: Any) -> None:
        """Enable a registered rule class by its name (``haive_register_alert_rules``).

        Example::

            >>> alerts = AlertManager()
            >>> alerts.use("high_latency", threshold_ms=250)
            >>> alerts.rules
            ['high_latency']
        """
        cls = get_registry().get("alert_rule", rule_name)
        try:
            instance = cls(**params)
        except TypeError as exc:
            raise ConfigError(f"alert rule {rule_name!r}: {exc}") from exc
        self.add_rule(instance, name=name or rule_name)

    def _add(self, name: str, fn: Callable[[Any], Any], *, wants_snapshot: bool) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"an alert rule needs a non-empty name, got {name!r}")
        if not callable(fn):
            raise ConfigError(f"alert rule {name!r} must be callable, got {fn!r}")
        if name in self._rules:
            raise ConfigError(f"alert rule {name!r} is defined twice")
        is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004
        )
        self._rules[name] = _Rule(name, fn, wants_snapshot, is_async)

    def remove_rule(self, name: str) -> None:
        """Forget rule ``name`` (an alert it had active stays until :meth:`evaluate` resolves it)."""
        self._rules.pop(name)

    @property
    def rules(self) -> list[str]:
        return list(self._rules)

    # -- notifiers -----------------------------------------------------------------------
    def add_notifier(self, notifier: Any) -> None:
        """Deliver events to ``notifier`` too (a notifier, a registered name, or a callable)."""
        from .notifiers import CallbackNotifier

        if isinstance(notifier, str):
            cls = get_registry().get("alert_notifier", notifier)
            try:
                notifier = cls()
            except TypeError as exc:
                raise ConfigError(
                    f"alert notifier {notifier!r} needs settings ({exc}); pass an instance, "
                    f"e.g. {cls.__name__}(...)"
                ) from exc
        elif not callable(getattr(notifier, "notify", None)):
            if not callable(notifier):
                raise ConfigError(
                    f"a notifier needs an async notify(event) method or must be callable, got {notifier!r}"
                )
            notifier = CallbackNotifier(notifier)
        self._notifiers.append(notifier)

    @property
    def notifiers(self) -> list[Any]:
        return list(self._notifiers)

    # -- evaluation ----------------------------------------------------------------------
    async def _run_rule(
        self, rule: _Rule, given: Any, snapshot: Callable[[], MetricsSnapshot]
    ) -> Any:
        arg = snapshot() if rule.wants_snapshot else given
        result = rule.evaluate(arg)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def evaluate(self, metrics: MetricsCollector | MetricsSnapshot | Any) -> list[Alert]:
        """Run every rule once; return the alerts that fired *now* (not those still active).

        Deduplication: a rule that keeps returning an alert of the same severity fires once;
        when it returns None its alert is resolved. Events are delivered to the notifiers
        before this returns.
        """
        now = self._clock()
        self.evaluations += 1
        cache: list[MetricsSnapshot] = []

        def snapshot() -> MetricsSnapshot:
            if not cache:
                cache.append(
                    metrics.get_current() if isinstance(metrics, MetricsCollector) else metrics
                )
            return cache[0]

        fired: list[Alert] = []
        events: list[AlertEvent] = []
        for rule in list(self._rules.values()):
            try:
                result = await self._run_rule(rule, metrics, snapshot)
            except Exception as exc:
                self.rule_errors[rule.name] = self.rule_errors.get(rule.name, 0) + 1
                log.error("alert rule %r failed: %s: %s", rule.name, type(exc).__name__, exc)
                continue
            if result is not None and not isinstance(result, Alert):
                self.rule_errors[rule.name] = self.rule_errors.get(rule.name, 0) + 1
                log.error("alert rule %r returned %r; expected an Alert or None", rule.name, result)
                continue
            current = self.active.get(rule.name)
            if result is None:
                if current is not None:
                    del self.active[rule.name]
                    events.append(
                        AlertEvent("resolved", rule.name, current.alert, current.since, now)
                    )
                continue
            if current is None or current.alert.severity != result.severity:
                self.active[rule.name] = ActiveAlert(rule.name, result, now, now)
                fired.append(result)
                events.append(AlertEvent("firing", rule.name, result, now, now))
            else:
                current.alert = result
                current.last_seen = now
                current.evaluations += 1
        # Alerts of rules removed since they fired are resolved too.
        for name in [n for n in self.active if n not in self._rules]:
            gone = self.active.pop(name)
            events.append(AlertEvent("resolved", name, gone.alert, gone.since, now))
        if events:
            self.history.extend(events)
            await self.deliver(events)
        return fired

    async def deliver(self, events: list[AlertEvent]) -> None:
        """Send ``events`` to every notifier concurrently, each bounded by ``notify_timeout``."""

        async def to(notifier: Any) -> None:
            label = getattr(notifier, "PLUGIN_NAME", "") or type(notifier).__name__
            for event in events:
                try:
                    with trio.fail_after(self.notify_timeout):
                        await notifier.notify(event)
                except Exception as exc:
                    self.notifier_failures[label] = self.notifier_failures.get(label, 0) + 1
                    log.error(
                        "alert notifier %s failed on %s %s: %s: %s",
                        label, event.status, event.rule, type(exc).__name__, exc,
                    )  # fmt: skip

        async with trio.open_nursery() as nursery:
            for notifier in self._notifiers:
                nursery.start_soon(to, notifier)

    async def run(
        self,
        metrics: MetricsCollector,
        *,
        interval: Duration = 1.0,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Evaluate against ``metrics`` every ``interval`` seconds (a number, a ``timedelta``
        or ``"500ms"``) until cancelled."""
        interval = parse_duration(interval, what="AlertManager.run interval")
        task_status.started()
        while True:
            await self.evaluate(metrics)
            await trio.sleep(interval)

    async def aclose(self) -> None:
        """Close notifiers that hold resources (stream sinks)."""
        for notifier in self._notifiers:
            close = getattr(notifier, "aclose", None)
            if close is not None:
                with trio.CancelScope(shield=True):
                    await close()

    def active_list(self) -> list[dict[str, Any]]:
        """Active alerts as JSON-friendly dicts, most severe first."""
        order = {s: i for i, s in enumerate(reversed(SEVERITIES))}
        return [
            a.to_dict()
            for a in sorted(self.active.values(), key=lambda a: (order[a.alert.severity], a.since))
        ]
