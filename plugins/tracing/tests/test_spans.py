"""Spans of a traced pipeline run, trace continuity per item, sampling, and "off"."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import pytest
import trio
from haive_plugin_tracing.spans import context_of

from haive.dataflow import StreamingPipeline, StreamSink
from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.builtins.sources import IterableSource
from haive.dataflow.errors import HaiveError
from haive.dataflow.io.sources import DataSource
from haive.dataflow.io.trace_headers import TraceHeaderLog, outgoing_trace_headers
from haive.dataflow.runtime.config import StreamConfig

TRACE_A = "0af7651916cd43dd8448eb211c80319c"
TRACE_B = "4bf92f3577b34da6a3ce929d0e0e4736"


def traceparent(trace_id: str, span_id: str = "b7ad6b7169203331", flags: str = "01") -> str:
    return f"00-{trace_id}-{span_id}-{flags}"


class HeaderSource(DataSource):
    """Yields ``(value, headers)`` pairs' values in the given batches, keeping the headers."""

    def __init__(self, batches: list[list[tuple[Any, Mapping[str, str] | None]]]) -> None:
        self._batches = batches
        self._log = TraceHeaderLog()

    def want_trace_headers(self) -> bool:
        self._log.want()
        return True

    def take_trace_headers(self) -> Sequence[Mapping[str, str] | None] | None:
        return self._log.take()

    async def batches(self, chunk_size: int) -> AsyncIterator[list[Any]]:
        for batch in self._batches:
            if self._log.wanted:
                self._log.record([headers for _, headers in batch])
            yield [value for value, _ in batch]


class HeaderSink(StreamSink):
    """Keeps each item with the trace headers the pipeline gave it."""

    def __init__(self, fail: bool = False) -> None:
        self.written: list[tuple[Any, Mapping[str, str] | None]] = []
        self.fail = fail

    async def write_batch(self, items: list[Any]) -> None:
        if self.fail:
            raise HaiveError("the sink is down")
        headers = outgoing_trace_headers()
        for index, item in enumerate(items):
            self.written.append((item, None if headers is None else headers[index]))


def pipeline_of(source: DataSource, sink: StreamSink, *, chunk_size: int = 100) -> StreamingPipeline:
    pipeline = StreamingPipeline("traced", config=StreamConfig(chunk_size=chunk_size))
    pipeline.set_source(source)

    def double(x: int) -> int:
        return x * 2

    def inc(x: int) -> int:
        return x + 1

    pipeline.add_processor(double)
    pipeline.add_processor(inc)
    pipeline.set_sink(sink)
    return pipeline


def test_one_trace_follows_items_from_their_headers_to_the_sink(traced):
    _, exporter = traced()
    headers = {"traceparent": traceparent(TRACE_A), "tracestate": "vendor=1"}
    sink = HeaderSink()
    trio.run(pipeline_of(HeaderSource([[(1, headers), (2, headers)], [(3, headers)]]), sink).execute)

    spans = exporter.get_finished_spans()
    assert {f"{s.context.trace_id:032x}" for s in spans} == {TRACE_A}
    names = sorted(s.name for s in spans)
    assert names.count("traced receive") == 2
    assert names.count("traced process double_0") >= 1
    assert names.count("traced process inc_1") >= 1
    assert names.count("traced send sink:HeaderSink") >= 1
    by_id = {s.context.span_id: s for s in spans}
    # Each node span is a child of the span its items came from: receive -> double -> inc -> send.
    for span in spans:
        if span.name == "traced receive":
            assert span.parent is not None and f"{span.parent.span_id:016x}" == "b7ad6b7169203331"
            assert span.parent.is_remote
        else:
            assert span.parent is not None and span.parent.span_id in by_id
    chain = {
        "traced process double_0": "traced receive",
        "traced process inc_1": "traced process double_0",
        "traced send sink:HeaderSink": "traced process inc_1",
    }
    for span in spans:
        if span.name in chain:
            assert by_id[span.parent.span_id].name == chain[span.name]  # type: ignore[union-attr]
    # The sink sends each item with its send span's context (and the incoming tracestate).
    assert [item for item, _ in sink.written] == [3, 5, 7]
    send_ids = {s.context.span_id for s in spans if s.name.startswith("traced send")}
    for _, sent in sink.written:
        assert sent is not None and sent["tracestate"] == "vendor=1"
        context = context_of(sent)
        assert context is not None and f"{context.trace_id:032x}" == TRACE_A
        assert context.span_id in send_ids


def test_items_of_several_traces_in_one_batch_each_keep_their_trace(traced):
    _, exporter = traced()
    a = {"traceparent": traceparent(TRACE_A)}
    b = {"traceparent": traceparent(TRACE_B)}
    sink = HeaderSink()
    batch = [(1, a), (2, b), (3, a), (4, None)]
    trio.run(pipeline_of(HeaderSource([batch]), sink).execute)

    sent_traces = [
        None if sent is None else f"{context_of(sent).trace_id:032x}"  # type: ignore[union-attr]
        for _, sent in sink.written
    ]
    assert sent_traces[:3] == [TRACE_A, TRACE_B, TRACE_A]
    # The item without a traceparent started a trace of its own (sampled at ratio 1).
    assert sent_traces[3] not in (None, TRACE_A, TRACE_B)
    spans = exporter.get_finished_spans()
    for name in ("traced receive", "traced process double_0", "traced send sink:HeaderSink"):
        assert len([s for s in spans if s.name == name]) == 3, name


def test_traces_beyond_the_cap_are_linked_from_one_span(traced):
    _, exporter = traced(max_traces_per_batch=2)
    ids = [f"{i + 1:032x}" for i in range(5)]
    sink = HeaderSink()
    batch = [(i, {"traceparent": traceparent(t)}) for i, t in enumerate(ids)]
    trio.run(pipeline_of(HeaderSource([batch]), sink).execute)
    receives = [s for s in exporter.get_finished_spans() if s.name == "traced receive"]
    assert len(receives) == 2
    linked = {f"{link.context.trace_id:032x}" for s in receives for link in s.links}
    assert linked == set(ids[2:])


def test_an_unsampled_parent_is_honoured(traced):
    _, exporter = traced(1.0)
    unsampled = {"traceparent": traceparent(TRACE_A, flags="00")}
    sink = HeaderSink()
    trio.run(pipeline_of(HeaderSource([[(1, unsampled), (2, unsampled)]]), sink).execute)
    assert exporter.get_finished_spans() == ()
    assert sink.written == [(3, None), (5, None)]


@pytest.mark.parametrize("ratio", [0.0, 0.25, 1.0])
def test_the_sampling_ratio_is_honoured_for_new_traces(traced, ratio):
    _, exporter = traced(ratio)
    batches = 2000
    sink = HeaderSink()
    trio.run(pipeline_of(IterableSource(range(batches * 2)), sink, chunk_size=2).execute)
    receives = [s for s in exporter.get_finished_spans() if s.name == "traced receive"]
    # Trace ids are random: a binomial count, 2000 x 0.25 = 500 +- 19.4 (1 sd); 5 sd bounds.
    low, high = {0.0: (0, 0), 0.25: (403, 597), 1.0: (batches, batches)}[ratio]
    assert low <= len(receives) <= high
    sent = [headers for _, headers in sink.written if headers is not None]
    assert len(sent) == 2 * len(receives)  # exactly the sampled batches' items carry a context


def test_a_failing_write_marks_its_span_as_an_error(traced):
    _, exporter = traced()
    pipeline = pipeline_of(IterableSource(range(3)), HeaderSink(fail=True))
    with pytest.raises(HaiveError, match="the sink is down"):
        trio.run(pipeline.execute)
    (send,) = [s for s in exporter.get_finished_spans() if s.name.startswith("traced send")]
    assert not send.status.is_ok
    assert "the sink is down" in (send.status.description or "")


def test_spans_of_a_filtering_node_cover_what_it_kept(traced):
    _, exporter = traced()
    pipeline = StreamingPipeline("filtered")
    pipeline.set_source(IterableSource(range(10)))
    pipeline.add_processor(lambda x: x)  # a map
    from haive.dataflow.runtime.nodes import FilterNode

    pipeline.add_node(FilterNode(name="even", filter_fn=lambda x: x % 2 == 0))
    sink = MemorySink()
    pipeline.set_sink(sink)
    trio.run(pipeline.execute)
    assert sink.items == [0, 2, 4, 6, 8]
    spans = exporter.get_finished_spans()
    assert len({s.context.trace_id for s in spans}) == 1
    assert sorted({s.name for s in spans}) == [
        "filtered process <lambda>_0",
        "filtered process even",
        "filtered receive",
        "filtered send sink:MemorySink",
    ]


OFF_SCRIPT = textwrap.dedent(
    """
    import sys, trio
    from haive.dataflow import StreamingPipeline
    from haive.dataflow.builtins.sinks import MemorySink
    from haive.dataflow.builtins.sources import IterableSource
    from haive.dataflow.plugins import get_registry

    names = [name for name, _ in get_registry().plugin_manager.list_name_plugin()]
    assert "tracing" in names, names  # the plugin is installed and loaded...
    pipeline = StreamingPipeline("off")
    pipeline.set_source(IterableSource(range(100)))
    pipeline.add_processor(lambda x: x + 1)
    sink = MemorySink()
    pipeline.set_sink(sink)
    trio.run(pipeline.execute)
    assert len(sink.items) == 100
    from haive_plugin_tracing import active_tracing
    assert active_tracing() is None
    # ...and while tracing is off it imported no OpenTelemetry: neither its span module
    # nor the SDK's tracing (redis-py 8, when installed beside OpenTelemetry, imports the
    # API for its own observability: without the redis plugin nothing at all is loaded).
    loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
    assert "haive_plugin_tracing.spans" not in sys.modules
    assert "opentelemetry.sdk.trace" not in loaded, loaded
    if "redis" in sys.argv[1:]:
        assert not loaded, loaded
    print("off-ok")
    """
)


@pytest.mark.parametrize("disabled", ["", "redis"])
def test_off_by_default_no_spans_and_no_opentelemetry_import(disabled):
    env = {k: v for k, v in os.environ.items() if k != "HAIVE_TRACING"}
    env["HAIVE_DISABLE_PLUGINS"] = disabled
    done = subprocess.run(
        [sys.executable, "-c", OFF_SCRIPT, disabled],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "off-ok" in done.stdout


ENV_SCRIPT = textwrap.dedent(
    """
    from haive_plugin_tracing import active_tracing
    tracing = active_tracing()
    print(tracing.config.sample_ratio)
    tracing.shutdown()
    """
)


def test_the_environment_turns_tracing_on_with_its_ratio():
    env = dict(os.environ, HAIVE_TRACING="1", OTEL_TRACES_SAMPLER_ARG="0.05")
    done = subprocess.run(
        [sys.executable, "-c", ENV_SCRIPT], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0.05"


def test_enabling_twice_or_a_bad_ratio_is_refused(traced):
    from haive_plugin_tracing import enable_tracing

    from haive.dataflow.errors import ConfigError

    traced()
    with pytest.raises(ConfigError, match="already on"):
        enable_tracing()


def test_a_bad_ratio_names_the_parameter():
    from haive_plugin_tracing import enable_tracing

    from haive.dataflow.errors import ConfigError

    with pytest.raises(ConfigError, match=r"sample_ratio=1.5\): sample_ratio must be a number"):
        enable_tracing(1.5)


def test_spans_of_your_own_on_the_provider_follow_the_ratio(traced):
    tracing, exporter = traced(0.0)
    tracer = tracing.provider.get_tracer("mine")
    with tracer.start_as_current_span("not sampled at ratio 0") as span:
        assert not span.get_span_context().trace_flags.sampled
    assert exporter.get_finished_spans() == ()


def test_a_tracer_provider_of_your_own_decides_with_its_sampler():
    from haive_plugin_tracing import enable_tracing
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON

    for sampler, expected in ((ALWAYS_ON, 3), (ALWAYS_OFF, 0)):
        exporter = InMemorySpanExporter()
        provider = TracerProvider(sampler=sampler)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracing = enable_tracing(0.5, tracer_provider=provider)
        try:
            assert tracing.root_ratio is None
            sink = HeaderSink()
            trio.run(pipeline_of(IterableSource(range(3)), sink).execute)
        finally:
            tracing.shutdown()
        receives = [s for s in exporter.get_finished_spans() if s.name == "traced receive"]
        assert len(receives) == (1 if expected else 0)
        assert len([h for _, h in sink.written if h is not None]) == expected
        provider.shutdown()
