"""The instrumentation seam of StreamingPipeline runs (what a tracing plugin hooks into)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

import pytest
import trio

from haive.dataflow import StreamingPipeline, StreamSink
from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.errors import ConfigError, HaiveError
from haive.dataflow.io.sources import DataSource
from haive.dataflow.io.trace_headers import TraceHeaderLog, outgoing_trace_headers
from haive.dataflow.runtime.graph import GraphRun
from haive.dataflow.runtime.instrumentation import OutgoingHeaders, RunInstrumentation


class Recording(RunInstrumentation):
    def __init__(self) -> None:
        self.graphs: list[GraphRun] = []
        self.batches: list[tuple[list[Any], Any]] = []
        self.writes: list[tuple[str, list[Any]]] = []
        self.errors: list[BaseException] = []
        self.closed = 0

    def instrument(self, graph: GraphRun) -> None:
        self.graphs.append(graph)

    def source_batch(self, batch: list[Any], headers: Sequence[Mapping[str, str] | None] | None) -> None:
        self.batches.append((list(batch), None if headers is None else list(headers)))

    @contextlib.contextmanager
    def sink_batch(self, sink_name: str, batch: list[Any]) -> Iterator[OutgoingHeaders]:
        self.writes.append((sink_name, list(batch)))
        try:
            yield [{"traceparent": f"tp-{item}"} for item in batch]
        except BaseException as exc:
            self.errors.append(exc)
            raise

    def close(self) -> None:
        self.closed += 1


class Headed(DataSource):
    """Batches of (value, traceparent) pairs; counts what the pipeline asks of it."""

    def __init__(self, batches: list[list[tuple[int, str | None]]], *, wrong_length: bool = False) -> None:
        self._batches = batches
        self._log = TraceHeaderLog()
        self.wanted_before_open: bool | None = None
        self.wrong_length = wrong_length
        self.takes = 0

    def want_trace_headers(self) -> bool:
        self._log.want()
        return True

    def take_trace_headers(self) -> Sequence[Mapping[str, str] | None] | None:
        self.takes += 1
        return self._log.take()

    async def open(self) -> None:
        self.wanted_before_open = self._log.wanted

    async def batches(self, chunk_size: int) -> AsyncIterator[list[Any]]:
        for batch in self._batches:
            if self._log.wanted:
                headers = [None if tp is None else {"traceparent": tp} for _, tp in batch]
                self._log.record(headers[:-1] if self.wrong_length else headers)
            yield [value for value, _ in batch]
            yield []  # an acknowledgment request: no take for it


class HeaderSink(StreamSink):
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[Any] = []
        self.fail = fail

    async def write_batch(self, items: list[Any]) -> None:
        if self.fail:
            raise HaiveError("down")
        self.sent.append(outgoing_trace_headers())


def test_instrument_refuses_what_is_not_an_instrumentation():
    with pytest.raises(ConfigError, match="instrument expects a RunInstrumentation"):
        StreamingPipeline("p").instrument("tracing")  # type: ignore[arg-type]


def test_without_instrumentation_sources_keep_no_headers_and_sinks_send_none():
    source = Headed([[(1, "a"), (2, None)]])
    sink = HeaderSink()
    pipeline = StreamingPipeline("plain")
    pipeline.set_source(source)
    pipeline.set_sink(sink)
    trio.run(pipeline.execute)
    assert source.wanted_before_open is False and source.takes == 0
    assert sink.sent == [None]


def test_an_instrumented_run_gets_the_graph_batches_headers_and_writes():
    source = Headed([[(1, "a"), (2, None)], [(3, "c")]])
    sink = HeaderSink()
    recording = Recording()
    pipeline = StreamingPipeline("instrumented")
    pipeline.set_source(source)
    pipeline.add_processor(lambda x: x * 10)
    pipeline.set_sink(sink)
    pipeline.instrument(recording)
    trio.run(pipeline.execute)
    assert len(recording.graphs) == 1 and recording.closed == 1
    assert source.wanted_before_open is True
    assert source.takes == 2  # once per non-empty batch
    assert recording.batches == [
        ([1, 2], [{"traceparent": "a"}, None]),
        ([3], [{"traceparent": "c"}]),
    ]
    written = [item for _, batch in recording.writes for item in batch]
    assert written == [10, 20, 30]
    assert {name for name, _ in recording.writes} == {"sink:HeaderSink"}
    # What sink_batch yields is what the sink reads through outgoing_trace_headers().
    sent = [h["traceparent"] for headers in sink.sent for h in headers]
    assert sent == ["tp-10", "tp-20", "tp-30"]


def test_headers_not_matching_the_batch_are_not_used():
    source = Headed([[(1, "a"), (2, "b")]], wrong_length=True)
    recording = Recording()
    pipeline = StreamingPipeline("mismatch")
    pipeline.set_source(source)
    pipeline.set_sink(MemorySink())
    pipeline.instrument(recording)
    trio.run(pipeline.execute)
    assert recording.batches == [([1, 2], None)]


def test_a_failing_write_passes_through_the_instrumentation():
    recording = Recording()
    pipeline = StreamingPipeline("failing")
    pipeline.set_source(Headed([[(1, "a")]]))
    pipeline.set_sink(HeaderSink(fail=True))
    pipeline.instrument(recording)
    with pytest.raises(HaiveError, match="down"):
        trio.run(pipeline.execute)
    assert len(recording.errors) == 1 and recording.closed == 1


def test_the_installed_factories_are_asked_once_per_run(monkeypatch):
    from haive.dataflow.runtime import instrumentation as instrumentation_module

    asked: list[Any] = []
    recording = Recording()

    def declines(pipeline: Any) -> None:
        asked.append(("declines", pipeline))

    def instruments(pipeline: Any) -> RunInstrumentation:
        asked.append(("instruments", pipeline))
        return recording

    monkeypatch.setattr(instrumentation_module, "_factories", [declines, instruments])
    pipeline = StreamingPipeline("factories")
    pipeline.set_source(Headed([[(1, None)]]))
    pipeline.set_sink(MemorySink())
    trio.run(pipeline.execute)
    trio.run(pipeline.execute)
    assert asked == [("declines", pipeline), ("instruments", pipeline)] * 2
    assert len(recording.graphs) == 2 and recording.closed == 2


def test_factories_come_from_metadata_without_building_the_registry():
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        import sys, trio
        from haive.dataflow import StreamingPipeline
        from haive.dataflow.builtins.sinks import MemorySink
        from haive.dataflow.io.sources import DataSource
        from haive.dataflow.plugins import registry
        from haive.dataflow.runtime.instrumentation import (
            ENTRY_POINT_GROUP, instrumentation_factories,
        )

        class Two(DataSource):
            async def batches(self, chunk_size):
                yield [1, 2]

        pipeline = StreamingPipeline("light")
        pipeline.set_source(Two())
        pipeline.set_sink(MemorySink())
        trio.run(pipeline.execute)
        assert registry._registry is None, "a run built the plugin registry"
        print(len(instrumentation_factories()))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.strip()) >= 0
