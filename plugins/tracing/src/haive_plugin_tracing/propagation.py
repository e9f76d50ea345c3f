"""Trace context for code outside pipelines: a client that starts a trace, a consumer that
continues one. Imports the OpenTelemetry API (the caller is using OpenTelemetry anyway).

Example: a client sends its current span's context with a WebSocket message::

    >>> from opentelemetry.sdk.trace import TracerProvider
    >>> tracer = TracerProvider().get_tracer("client")
    >>> with tracer.start_as_current_span("send reading") as span:
    ...     message = inject_trace_headers({"type": "reading", "value": 3})
    >>> message["traceparent"].split("-")[1] == f"{span.get_span_context().trace_id:032x}"
    True
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

M = TypeVar("M", bound=MutableMapping[str, Any])

_PROPAGATOR = TraceContextTextMapPropagator()


def current_trace_headers() -> dict[str, str]:
    """The W3C headers (``traceparent``, ``tracestate``) of the current span; empty when
    there is no valid current span."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier


def inject_trace_headers(message: M) -> M:
    """Add the current span's ``traceparent``/``tracestate`` to ``message`` (a WebSocket
    message, a dict of headers) and return it."""
    message.update(current_trace_headers())
    return message


def context_from_headers(headers: Mapping[str, str]) -> otel_context.Context:
    """An OpenTelemetry context whose parent is the span in ``headers`` (what a consumer
    passes as ``context=`` to ``start_span`` to continue the trace)."""
    return _PROPAGATOR.extract(headers)


def span_of(headers: Mapping[str, str]) -> trace.SpanContext | None:
    """The span context in ``headers``, or ``None`` when they hold no valid one."""
    span_context = trace.get_current_span(context_from_headers(headers)).get_span_context()
    return span_context if span_context.is_valid else None
