"""Where fired and resolved alerts go: the log, a webhook, any stream sink, a callback.

Notifier classes are registered through ``haive_register_alert_notifiers`` so
``AlertManager(notifiers=["log"])`` finds them by name; other plugins add their own
(Slack, PagerDuty...) the same way.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import orjson
import trio

from haive.dataflow.errors import ConfigError, HaiveError
from haive.dataflow.io.sinks import StreamSink
from haive.dataflow.runtime.retry import NO_RETRY, RetryPolicy

from .alerts import AlertEvent


class NotifierError(HaiveError):
    """A notifier could not deliver an alert event (the manager logs and counts it)."""


class AlertNotifier:
    """Base of alert notifiers: ``notify(event)`` delivers one :class:`~.alerts.AlertEvent`.

    Example::

        >>> class Collect(AlertNotifier):
        ...     PLUGIN_NAME = "collect"
        ...     def __init__(self):
        ...         self.seen = []
        ...     async def notify(self, event):
        ...         self.seen.append((event.status, event.rule))
        >>> from haive_plugin_observability.alerts import Alert
        >>> n = Collect()
        >>> trio.run(n.notify, AlertEvent("firing", "r", Alert("info", "hi"), since=0.0, at=0.0))
        >>> n.seen
        [('firing', 'r')]
    """

    PLUGIN_NAME: ClassVar[str] = ""

    async def notify(self, event: AlertEvent) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement notify(event)")

    async def aclose(self) -> None:
        """Release resources (called by :meth:`AlertManager.aclose`)."""


_LEVELS = {
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


def describe(event: AlertEvent) -> str:
    """One line for people: status, rule, severity, message and suggested action.

    Example::

        >>> from haive_plugin_observability.alerts import Alert
        >>> describe(AlertEvent("firing", "high_latency", Alert("warning", "p99 1.2 s", "Scale up"), 0.0, 0.0))
        'FIRING high_latency [warning]: p99 1.2 s (suggested action: Scale up)'
    """
    text = f"{event.status.upper()} {event.rule} [{event.alert.severity}]: {event.alert.message}"
    if event.status == "resolved":
        return f"{text} (after {event.duration:.1f} s)"
    if event.alert.suggested_action:
        text += f" (suggested action: {event.alert.suggested_action})"
    return text


class LogNotifier(AlertNotifier):
    """Writes events to the ``logger`` (default ``haive.alerts``) at the alert's severity;
    resolutions at INFO.

    Example::

        >>> LogNotifier().logger.name
        'haive.alerts'
    """

    PLUGIN_NAME = "log"

    def __init__(self, logger: str | logging.Logger = "haive.alerts") -> None:
        self.logger = logging.getLogger(logger) if isinstance(logger, str) else logger

    async def notify(self, event: AlertEvent) -> None:
        level = logging.INFO if event.status == "resolved" else _LEVELS[event.alert.severity]
        self.logger.log(level, "%s", describe(event))
        await trio.lowlevel.checkpoint()


class WebhookNotifier(AlertNotifier):
    """POSTs each event as JSON (:meth:`AlertEvent.to_dict`) to ``url``.

    A response status of 400 or more, or a connection error, is retried per ``retry``
    (default: no retry) and then raised as :class:`NotifierError`.

    Example::

        >>> WebhookNotifier("http://127.0.0.1:9/alerts").url
        'http://127.0.0.1:9/alerts'
        >>> WebhookNotifier("ftp://example")
        Traceback (most recent call last):
        ...
        haive.dataflow.errors.ConfigError: WebhookNotifier: url must start with http:// or https://, got 'ftp://example'
    """

    PLUGIN_NAME = "webhook"

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError(
                f"WebhookNotifier: url must start with http:// or https://, got {url!r}"
            )
        self.url = url
        self.headers = {"content-type": "application/json", **(headers or {})}
        self.retry = retry or NO_RETRY
        self.delivered = 0

    async def notify(self, event: AlertEvent) -> None:
        import httpx  # here, not at module level: plugin discovery stays cheap

        body = orjson.dumps(event.to_dict())
        error: Exception | None = None
        for attempt in range(1, self.retry.attempts + 1):
            if attempt > 1:
                await trio.sleep(self.retry.delay(attempt - 1))
            try:
                async with httpx.AsyncClient() as client:
                    response = await client.post(self.url, content=body, headers=self.headers)
            except httpx.HTTPError as exc:
                error = exc
                continue
            if response.status_code < 400:
                self.delivered += 1
                return
            error = NotifierError(f"webhook {self.url} answered HTTP {response.status_code}")
        raise NotifierError(f"webhook {self.url}: {error}") from error


class SinkNotifier(AlertNotifier):
    """Writes each event (as a dict) to a :class:`~haive.dataflow.io.sinks.StreamSink`.

    The sink is opened at the first event and closed by :meth:`aclose`.

    Example::

        >>> from haive.dataflow.builtins.sinks import MemorySink
        >>> from haive_plugin_observability.alerts import Alert
        >>> sink = MemorySink()
        >>> notifier = SinkNotifier(sink)
        >>> trio.run(notifier.notify, AlertEvent("firing", "r", Alert("info", "hi"), 0.0, 0.0))
        >>> sink.items[0]["rule"]
        'r'
    """

    PLUGIN_NAME = "sink"

    def __init__(self, sink: StreamSink) -> None:
        if not isinstance(sink, StreamSink):
            raise ConfigError(f"SinkNotifier expects a StreamSink, got {sink!r}")
        self.sink = sink
        self._opened = False

    async def notify(self, event: AlertEvent) -> None:
        if not self._opened:
            await self.sink.open()
            self._opened = True
        await self.sink.write_batch([event.to_dict()])

    async def aclose(self) -> None:
        if self._opened:
            self._opened = False
            await self.sink.aclose()


class CallbackNotifier(AlertNotifier):
    """Calls ``fn(event)`` (sync or async) for each event.

    Example::

        >>> from haive_plugin_observability.alerts import Alert
        >>> seen = []
        >>> trio.run(CallbackNotifier(seen.append).notify, AlertEvent("firing", "r", Alert("info", "hi"), 0.0, 0.0))
        >>> seen[0].rule
        'r'
    """

    PLUGIN_NAME = "callback"

    def __init__(self, fn: Callable[[AlertEvent], Any]) -> None:
        if not callable(fn):
            raise ConfigError(f"CallbackNotifier expects a callable, got {fn!r}")
        self.fn = fn

    async def notify(self, event: AlertEvent) -> None:
        result = self.fn(event)
        if inspect.isawaitable(result):
            await result
        else:
            await trio.lowlevel.checkpoint()


BUILTIN_NOTIFIERS: tuple[type[AlertNotifier], ...] = (
    LogNotifier,
    WebhookNotifier,
    SinkNotifier,
    CallbackNotifier,
)
