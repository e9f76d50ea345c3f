"""The spans of a pipeline run: receive, one per node per batch, send; imports OpenTelemetry.

Loaded only while tracing is on (:mod:`~haive_plugin_tracing.control`).

**Which items a span covers.** The unit is the batch, and a batch may hold items of several
traces (a WebSocket server's batch has messages of many clients). Each buffer between two
steps keeps *marks*: ``(position of the last item, span context)`` for each run of items
that came from one span, appended by the step that puts them and taken by the step that
takes them (so a node's batch knows which spans its items came from, even when buffers split
or merge batches). A node batch gets one span per distinct sampled trace among its items,
child of the span those items came from, so each item's trace goes on unbroken; beyond
``max_traces_per_batch`` traces, the rest are linked from the first span (the batch-receive
pattern of OpenTelemetry's messaging conventions). Outputs inherit the span of the input at
the same index when a node returns as many items as it took (a map), else the first span's.
Items of unsampled traces carry no mark context and cost one merged mark per run.

**Where the context comes from.** A source that reads headers (Redis entry fields, Kafka,
NATS and HTTP headers, WebSocket message fields) hands each item's ``traceparent`` to
:meth:`SpanInstrumentation.source_batch`: its items' receive span is a child of that
context. Items without one start a new trace, sampled at the configured ratio. A sink gets,
through :func:`haive.dataflow.io.trace_headers.outgoing_trace_headers`, the ``traceparent``
of its send span for each item, and writes it with the item.
"""

from __future__ import annotations

import random
import threading
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, cast

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import (
    INVALID_SPAN,
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from haive.dataflow.runtime.backpressure import BoundedBuffer
from haive.dataflow.runtime.graph import INPUT, OUTPUT, BatchTap, GraphRun
from haive.dataflow.runtime.instrumentation import OutgoingHeaders, RunInstrumentation

if TYPE_CHECKING:
    from .control import Tracing, TracingConfig

_PROPAGATOR = TraceContextTextMapPropagator()

#: What a sink write with nothing sampled is wrapped in: no span, no headers.
_NOTHING_TO_SEND: AbstractContextManager[OutgoingHeaders] = nullcontext(None)

#: Segments of a batch: ``(count, span context or None)``, in item order.
Segments = list[tuple[int, SpanContext | None]]


_presampled = threading.local()


class RootRatioSampler(Sampler):
    """OpenTelemetry's ratio sampler for new traces, except the ones a pipeline run already
    drew at the same ratio.

    A source batch with no incoming context starts a new trace. Making a span only to have
    it dropped by the sampler costs microseconds per batch, so the instrumentation draws
    first (``random() < ratio``) and makes a span only for the batches drawn; this sampler
    then records those, and decides every other new trace (spans of your own on this
    provider) by trace id at the ratio, as ``TraceIdRatioBased`` does. Used as the root of a
    ``ParentBased`` sampler: spans with a parent follow it.

    Example::

        >>> RootRatioSampler(0.25).get_description()
        'HaiveRootRatio{0.25}'
    """

    def __init__(self, ratio: float) -> None:
        self.ratio = ratio
        self._by_trace_id = TraceIdRatioBased(ratio)

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        if getattr(_presampled, "drawn", False):
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, trace_state)
        return self._by_trace_id.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"HaiveRootRatio{{{self.ratio}}}"


def build_provider(config: TracingConfig, exporter: Any, simple_export: bool) -> TracerProvider:
    """A tracer provider with the parent-based ratio sampler (:class:`RootRatioSampler` for
    new traces) and one span processor."""
    provider = TracerProvider(
        resource=Resource.create({"service.name": config.service_name}),
        sampler=ParentBased(RootRatioSampler(config.sample_ratio)),
    )
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    chosen = cast(SpanExporter, exporter)
    processor = SimpleSpanProcessor(chosen) if simple_export else BatchSpanProcessor(chosen)
    provider.add_span_processor(processor)
    return provider


def context_of(headers: Mapping[str, str]) -> SpanContext | None:
    """The remote span context in W3C trace headers, or ``None`` when they hold none valid.

    Example::

        >>> ctx = context_of({"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
        >>> f"{ctx.trace_id:032x}", ctx.is_remote
        ('0af7651916cd43dd8448eb211c80319c', True)
    """
    span_context = trace.get_current_span(_PROPAGATOR.extract(headers)).get_span_context()
    return span_context if span_context.is_valid else None


def headers_of(span_context: SpanContext) -> dict[str, str]:
    """The W3C trace headers (``traceparent``, ``tracestate`` when set) of ``span_context``."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(NonRecordingSpan(span_context)))
    return carrier


class Marks:
    """Which span the items in one buffer came from: the runs of items of sampled spans,
    as ``(first position, end position, span context)``; items in no run are unsampled.

    Unsampled items cost a counter increment (no mark), so a run sampling 1 % keeps almost
    no marks. Bounded by the buffer it describes (each mark covers at least one item in it).

    Example::

        >>> marks = Marks()
        >>> marks.put(3, None); marks.put(2, "a"); marks.take(4)
        [(3, None), (1, 'a')]
        >>> marks.take(1)
        [(1, 'a')]
        >>> marks.put(5, None); marks.take(5) is None
        True
    """

    __slots__ = ("_marks", "consumed", "produced")

    def __init__(self) -> None:
        self._marks: deque[tuple[int, int, Any]] = deque()
        self.produced = 0
        self.consumed = 0

    def put(self, count: int, span_context: Any) -> None:
        if count <= 0:
            return
        start = self.produced
        self.produced = start + count
        if span_context is None:
            return
        marks = self._marks
        if marks and marks[-1][2] is span_context and marks[-1][1] == start:
            marks[-1] = (marks[-1][0], start + count, span_context)  # one run: merge
        else:
            marks.append((start, start + count, span_context))

    def put_segments(self, segments: Segments) -> None:
        for count, span_context in segments:
            self.put(count, span_context)

    def take(self, count: int) -> Segments | None:
        """The segments of the next ``count`` items, or ``None`` when none is sampled."""
        position = self.consumed
        end = self.consumed = position + count
        marks = self._marks
        if not marks or marks[0][0] >= end:
            return None  # the common case at a low ratio: nothing sampled in this batch
        segments: Segments = []
        while marks and position < end:
            mark_start, mark_end, span_context = marks[0]
            if mark_start >= end:
                break
            if mark_start > position:
                segments.append((mark_start - position, None))
                position = mark_start
            upto = min(mark_end, end)
            if upto > position:
                segments.append((upto - position, span_context))
                position = upto
            if mark_end <= end:
                marks.popleft()
            else:
                break
        if position < end:
            segments.append((end - position, None))
        return segments


#: A span context as a dict key (SpanContext holds an unhashable TraceState).
Key = tuple[int, int] | None


def _key(span_context: SpanContext | None) -> Key:
    return None if span_context is None else (span_context.trace_id, span_context.span_id)


def _sampled(segments: Segments) -> list[SpanContext]:
    """The distinct span contexts among ``segments``, in first-seen order."""
    seen: list[SpanContext] = []
    for _, span_context in segments:
        if span_context is not None and span_context not in seen:
            seen.append(span_context)
    return seen


class SpanInstrumentation(RunInstrumentation):
    """Spans of one :class:`~haive.dataflow.pipelines.streaming_pipeline.StreamingPipeline`
    run (see the module doc); made by :meth:`~haive_plugin_tracing.control.Tracing.instrumentation`.

    Example: see :class:`~haive_plugin_tracing.control.Tracing`.
    """

    def __init__(self, tracing: Tracing, pipeline_name: str) -> None:
        self.tracer = tracing.tracer
        self.max_traces = tracing.config.max_traces_per_batch
        #: The ratio new traces are drawn at before a span is made (None: a provider of
        #: the user's own decides, through its sampler, for every span).
        self.root_ratio = tracing.root_ratio
        self.pipeline_name = pipeline_name
        self.entry: list[Marks] = []
        self.output = Marks()
        self._by_buffer: dict[int, Marks] = {}

    # -- spans ------------------------------------------------------------------------
    def _start_spans(
        self,
        name: str,
        kind: SpanKind,
        parents: Sequence[SpanContext | None],
        attributes: dict[str, Any],
        *,
        drawn: bool = False,
    ) -> dict[Key, Span]:
        """One span per parent (``None``: a new trace), the ones past ``max_traces`` linked
        from the last span started instead. ``drawn``: a new trace was already drawn at the
        ratio (by the caller), so it is recorded without a second draw."""
        spans: dict[Key, Span] = {}
        extra = list(parents[self.max_traces :])
        for index, parent in enumerate(parents[: self.max_traces]):
            links = (
                [Link(p) for p in extra if p is not None]
                if extra and index == min(len(parents), self.max_traces) - 1
                else None
            )
            if parent is not None:
                context = trace.set_span_in_context(NonRecordingSpan(parent))
                span = self.tracer.start_span(
                    name, context=context, kind=kind, attributes=attributes, links=links
                )
            elif self.root_ratio is None:
                span = self.tracer.start_span(
                    name, context=Context(), kind=kind, attributes=attributes, links=links
                )
            elif drawn or random.random() < self.root_ratio:
                _presampled.drawn = True
                try:
                    span = self.tracer.start_span(
                        name, context=Context(), kind=kind, attributes=attributes, links=links
                    )
                finally:
                    _presampled.drawn = False
            else:
                span = INVALID_SPAN  # not drawn: no span made (and nothing to end)
            spans[_key(parent)] = span
        if extra:
            last = spans[_key(parents[self.max_traces - 1])]
            for parent in extra:
                spans[_key(parent)] = last
        return spans

    # -- source -------------------------------------------------------------------------
    def instrument(self, graph: GraphRun) -> None:
        for name in graph.order:
            self._by_buffer[id(graph.inboxes[name])] = Marks()
        self._by_buffer[id(graph.output)] = self.output
        self.entry = [self._marks_of(graph, t) for t in graph.graph.successors(INPUT)]
        # Taps, not a wrapped runner: chained nodes stay chained (one task) while traced.
        for name in graph.order:
            outs = [self._marks_of(graph, t) for t in graph.graph.successors(name)]
            graph.taps[name] = _TracedStep(self, name, graph.inboxes[name], outs)

    def _marks_of(self, graph: GraphRun, name: str) -> Marks:
        buffer = graph.output if name == OUTPUT else graph.inboxes[name]
        return self._by_buffer[id(buffer)]

    def source_batch(
        self, batch: list[Any], headers: Sequence[Mapping[str, str] | None] | None
    ) -> None:
        if headers is None and self.root_ratio is not None and random.random() >= self.root_ratio:
            for marks in self.entry:  # a new trace not drawn: no span, no mark
                marks.produced += len(batch)
            return
        attributes = {
            "haive.pipeline": self.pipeline_name,
            "messaging.operation.type": "receive",
            "messaging.batch.message_count": len(batch),
        }
        name = f"{self.pipeline_name} receive"
        if headers is None:
            spans = self._start_spans(
                name, SpanKind.CONSUMER, [None], attributes, drawn=self.root_ratio is not None
            )
            span_context = _recorded(spans[None])
            for span in spans.values():
                span.end()
            segments: Segments = [(len(batch), span_context)]
        else:
            segments = self._receive_with_headers(name, attributes, headers)
        for marks in self.entry:
            marks.put_segments(segments)

    def _receive_with_headers(
        self, name: str, attributes: dict[str, Any], headers: Sequence[Mapping[str, str] | None]
    ) -> Segments:
        # Parse each distinct traceparent once; runs of items with one parent become one
        # segment. ``None`` (no or invalid headers) is a new trace for those items.
        parsed: dict[str, SpanContext | None] = {}
        runs: list[tuple[int, SpanContext | None]] = []
        for item_headers in headers:
            parent: SpanContext | None = None
            if item_headers:
                traceparent = item_headers.get("traceparent")
                if traceparent is not None:
                    key = traceparent + "|" + item_headers.get("tracestate", "")
                    if key not in parsed:
                        parsed[key] = context_of(item_headers)
                    parent = parsed[key]
            if runs and runs[-1][1] is parent:
                runs[-1] = (runs[-1][0] + 1, parent)
            else:
                runs.append((1, parent))
        parents: list[SpanContext | None] = []
        for _, parent in runs:
            if parent not in parents:
                parents.append(parent)
        spans = self._start_spans(name, SpanKind.CONSUMER, parents, attributes)
        recorded = {key: _recorded(span) for key, span in spans.items()}
        for span in {id(s): s for s in spans.values()}.values():
            span.end()
        return [(count, recorded[_key(parent)]) for count, parent in runs]

    # -- nodes --------------------------------------------------------------------------
    # -- sink ---------------------------------------------------------------------------
    def sink_batch(
        self, sink_name: str, batch: list[Any]
    ) -> AbstractContextManager[OutgoingHeaders]:
        segments = self.output.take(len(batch))
        if segments is None:
            return _NOTHING_TO_SEND  # nothing sampled: no span, no headers
        return self._send(sink_name, batch, segments)

    @contextmanager
    def _send(self, sink_name: str, batch: list[Any], segments: Segments) -> Iterator[OutgoingHeaders]:
        parents = _sampled(segments)
        attributes = {
            "haive.pipeline": self.pipeline_name,
            "haive.sink": sink_name,
            "messaging.operation.type": "send",
            "messaging.batch.message_count": len(batch),
        }
        spans = self._start_spans(
            f"{self.pipeline_name} send {sink_name}", SpanKind.PRODUCER, list(parents), attributes
        )
        header_of = {key: headers_of(span.get_span_context()) for key, span in spans.items()}
        outgoing: list[Mapping[str, str] | None] = []
        for count, parent in segments:
            outgoing.extend([header_of[_key(parent)] if parent is not None else None] * count)
        try:
            yield outgoing
        except BaseException as exc:
            for span in {id(s): s for s in spans.values()}.values():
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise
        finally:
            for span in {id(s): s for s in spans.values()}.values():
                span.end()


def _recorded(span: Span) -> SpanContext | None:
    """The span's context when it is sampled (what downstream spans continue), else None."""
    span_context = span.get_span_context()
    return span_context if span_context.trace_flags.sampled else None


class _TracedStep(BatchTap):
    """A node's batches as tracing sees them: each batch taken ends the spans of the
    previous one and starts those of its own; each batch emitted is marked in the inputs
    of the node's successors (``outs``)."""

    def __init__(
        self, owner: SpanInstrumentation, name: str, inbox: BoundedBuffer[Any], outs: list[Marks]
    ) -> None:
        self._owner = owner
        self._marks = owner._by_buffer[id(inbox)]
        self._outs = outs
        self._span_name = f"{owner.pipeline_name} process {name}"
        self._attributes = {"haive.pipeline": owner.pipeline_name, "haive.node": name}
        self._spans: dict[Key, Span] = {}
        #: The current batch's segments, with each parent replaced by its node span.
        self._current: Segments | None = None
        self._taken = 0
        self._emitted_positionally = False

    def close(self) -> None:
        self.end()

    def end(self) -> None:
        if self._spans:
            for span in {id(s): s for s in self._spans.values()}.values():
                span.end()
            self._spans = {}
        self._current = None

    def taken(self, batch: list[Any]) -> None:
        if self._current is not None:
            self.end()
        segments = self._marks.take(len(batch))
        if segments is None:
            return  # nothing sampled: no span (``_current`` stays None)
        parents = _sampled(segments)
        self._taken = len(batch)
        self._emitted_positionally = False
        if parents:
            attributes = dict(self._attributes, **{"haive.batch.size": len(batch)})
            self._spans = self._owner._start_spans(
                self._span_name, SpanKind.INTERNAL, list(parents), attributes
            )
            own = {key: span.get_span_context() for key, span in self._spans.items()}
            self._current = [(n, own[_key(p)] if p is not None else None) for n, p in segments]

    def emitting(self, batch: list[Any]) -> None:
        count = len(batch)
        current = self._current
        outs = self._outs
        if current is None:
            for marks in outs:
                marks.produced += count  # unsampled items: no mark
        elif count == self._taken and not self._emitted_positionally:
            self._emitted_positionally = True
            for marks in outs:
                marks.put_segments(current)
        else:
            first = next(p for _, p in current if p is not None)
            for marks in outs:
                marks.put(count, first)
