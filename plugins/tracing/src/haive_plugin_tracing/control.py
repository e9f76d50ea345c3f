"""Turning tracing on and off; this module never imports OpenTelemetry itself.

Tracing is off until :func:`enable_tracing` is called, or until a process starts with
``HAIVE_TRACING=1`` in its environment (how a ``haive worker`` is traced). While it is off
its instrumentation factory answers ``None`` to every pipeline run, so runs do no tracing work and
``opentelemetry`` is never imported. :class:`Tracing` is the handle of the tracing that is
on; :meth:`Tracing.shutdown` (or leaving its ``with`` block) flushes the exporter and turns
tracing off again.
"""

from __future__ import annotations

import os
from types import TracebackType
from typing import TYPE_CHECKING, Any

import attrs

from haive.dataflow.errors import ConfigError
from haive.dataflow.runtime.validation import FRACTION, NON_EMPTY_STR, POSITIVE_INT

if TYPE_CHECKING:
    from haive.dataflow.runtime.instrumentation import RunInstrumentation

#: The environment variable that turns tracing on at start-up ("1", "true", "on").
ENV_SWITCH = "HAIVE_TRACING"
#: OpenTelemetry's standard variable for the sampler's argument: the ratio, read when
#: ``HAIVE_TRACING`` turns tracing on (1.0 when unset).
ENV_RATIO = "OTEL_TRACES_SAMPLER_ARG"


@attrs.frozen
class TracingConfig:
    """How runs are traced.

    ``sample_ratio`` is the share of new traces recorded (a parent-based ratio sampler:
    an item arriving with a sampled or unsampled ``traceparent`` follows its parent's
    decision); ``max_traces_per_batch`` is how many traces one node batch gets a span in
    before the rest are only linked from the first (a bound on spans per batch).

    Example::

        >>> TracingConfig(sample_ratio=0.01).sample_ratio
        0.01
        >>> TracingConfig(sample_ratio=2)
        Traceback (most recent call last):
        ...
        haive.dataflow.errors.ConfigError: TracingConfig(sample_ratio=2): sample_ratio must be a number >= 0 and <= 1, got 2
    """

    sample_ratio: float = attrs.field(default=1.0, validator=FRACTION)
    service_name: str = attrs.field(default="haive-dataflow", validator=NON_EMPTY_STR)
    max_traces_per_batch: int = attrs.field(default=16, validator=POSITIVE_INT)


class Tracing:
    """The tracing that is on: a tracer provider, its sampler and exporter.

    Made by :func:`enable_tracing`; a context manager that turns tracing off on exit.

    Example: spans of a pipeline run kept in memory::

        >>> import trio
        >>> from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        >>> from haive.dataflow import StreamingPipeline
        >>> from haive.dataflow.builtins.sources import IterableSource
        >>> exporter = InMemorySpanExporter()
        >>> pipeline = StreamingPipeline("doc")
        >>> pipeline.set_source(IterableSource(range(3)))
        >>> def double(x):
        ...     return x * 2
        >>> pipeline.add_processor(double)
        >>> with enable_tracing(exporter=exporter, simple_export=True):
        ...     report = trio.run(pipeline.execute)
        >>> sorted({span.name for span in exporter.get_finished_spans()})
        ['doc process double_0', 'doc receive']
        >>> active_tracing() is None
        True
    """

    def __init__(
        self,
        config: TracingConfig,
        *,
        exporter: Any = None,
        tracer_provider: Any = None,
        simple_export: bool = False,
    ) -> None:
        # Imported here: only turning tracing on loads OpenTelemetry.
        from .spans import build_provider

        self.config = config
        self._owns_provider = tracer_provider is None
        self.provider = (
            build_provider(config, exporter, simple_export)
            if tracer_provider is None
            else tracer_provider
        )
        self.tracer = self.provider.get_tracer("haive.dataflow")
        #: New traces are drawn at this ratio before a span is made (the provider made here
        #: has the matching sampler); None with a provider of the user's own.
        self.root_ratio: float | None = config.sample_ratio if self._owns_provider else None

    def instrumentation(self, pipeline: Any) -> RunInstrumentation:
        """The instrumentation of one run of ``pipeline`` (a StreamingPipeline)."""
        from .spans import SpanInstrumentation

        return SpanInstrumentation(self, str(getattr(pipeline, "name", "pipeline")))

    def force_flush(self) -> None:
        """Export every finished span now."""
        flush = getattr(self.provider, "force_flush", None)
        if flush is not None:
            flush()

    def shutdown(self) -> None:
        """Flush, stop the provider (when this handle made it) and turn tracing off."""
        global _active
        if _active is self:
            _active = None
        self.force_flush()
        if self._owns_provider:
            self.provider.shutdown()

    def __enter__(self) -> Tracing:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()


_active: Tracing | None = None
_env_checked = False


def enable_tracing(
    sample_ratio: float | None = None,
    *,
    service_name: str = "haive-dataflow",
    max_traces_per_batch: int = 16,
    exporter: Any = None,
    tracer_provider: Any = None,
    simple_export: bool = False,
) -> Tracing:
    """Turn tracing on for every pipeline run that starts from now on; return its handle.

    ``sample_ratio`` (default: ``OTEL_TRACES_SAMPLER_ARG``, else 1.0) is the share of new
    traces recorded. Spans go to ``exporter`` (default: the standard OTLP exporter,
    configured by the ``OTEL_EXPORTER_OTLP_*`` variables), batched in the background unless
    ``simple_export`` (each span exported when it ends: tests, examples). A
    ``tracer_provider`` of your own (one already set up with its sampler and exporters)
    replaces all of that. Enabling twice is an error: shut the first down.

    Example::

        >>> from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        >>> tracing = enable_tracing(0.5, exporter=InMemorySpanExporter())
        >>> active_tracing() is tracing, tracing.config.sample_ratio
        (True, 0.5)
        >>> tracing.shutdown()
    """
    global _active
    if _active is not None:
        raise ConfigError(
            "enable_tracing: tracing is already on; call shutdown() on its handle first"
        )
    if sample_ratio is None:
        sample_ratio = _env_ratio()
    config = TracingConfig(
        sample_ratio=sample_ratio,
        service_name=service_name,
        max_traces_per_batch=max_traces_per_batch,
    )
    if exporter is not None and tracer_provider is not None:
        raise ConfigError(
            "enable_tracing: give an exporter or a tracer_provider (with its own exporters), "
            "not both"
        )
    _active = Tracing(
        config, exporter=exporter, tracer_provider=tracer_provider, simple_export=simple_export
    )
    return _active


def _env_ratio() -> float:
    raw = os.environ.get(ENV_RATIO)
    if raw is None or not raw.strip():
        return 1.0
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(
            f"{ENV_RATIO}={raw!r}: the sampling ratio must be a number between 0 and 1"
        ) from None


def active_tracing() -> Tracing | None:
    """The tracing that is on, or ``None``. The first call turns it on when the environment
    has ``HAIVE_TRACING=1`` (``true``/``on``)."""
    global _env_checked
    if _active is None and not _env_checked:
        _env_checked = True
        if os.environ.get(ENV_SWITCH, "").strip().lower() in ("1", "true", "on", "yes"):
            enable_tracing()
    return _active


def pipeline_instrumentation(pipeline: Any) -> RunInstrumentation | None:
    """The instrumentation factory the core calls once per pipeline run (declared in the
    ``haive.dataflow.instrumentation`` entry-point group): spans while tracing is on,
    ``None`` (and no OpenTelemetry import) while it is off.

    Example::

        >>> pipeline_instrumentation(object()) is None  # tracing is off
        True
    """
    tracing = active_tracing()
    if tracing is None:
        return None
    return tracing.instrumentation(pipeline)
