"""Bridges: an observable as a pipeline source, a pipeline's output as an observable."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from haive.dataflow import NodeError, StreamingPipeline
from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.builtins.sources import IterableSource
from haive.dataflow.errors import ConfigError
from haive.dataflow.reactive import Observable, ObservableSource, ReactiveStream


def doubling_pipeline(source) -> tuple[StreamingPipeline, MemorySink]:
    pipeline = StreamingPipeline("double")
    pipeline.set_source(source)
    pipeline.add_processor(lambda n: n * 2)
    sink = MemorySink()
    pipeline.set_sink(sink)
    return pipeline, sink


async def test_cold_observable_as_a_pipeline_source():
    pipeline, sink = doubling_pipeline(
        ObservableSource(Observable.of(1, 2, 3).filter(lambda n: n != 2))
    )
    report = await pipeline.execute()
    assert sink.items == [2, 6]
    assert report.processed == 2


async def test_hot_stream_as_a_pipeline_source():
    stream = ReactiveStream[int]()
    pipeline, sink = doubling_pipeline(ObservableSource(stream.map(lambda n: n + 1)))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pipeline.execute)
        await trio.testing.wait_all_tasks_blocked()
        assert stream.subscriber_count == 1  # attached when the pipeline opened its source
        await stream.emit_batch([1, 2, 3])
        await stream.complete()
    assert sink.items == [4, 6, 8]


async def test_observable_with_tasks_needs_a_nursery(autojump_clock):
    ticks = Observable.interval(1).take(4).buffer_time(2.5)
    with pytest.raises(ConfigError, match="nursery="):
        ObservableSource(ticks)
    async with trio.open_nursery() as nursery:
        pipeline = StreamingPipeline("sums")
        pipeline.set_source(ObservableSource(ticks, nursery=nursery))
        pipeline.add_processor(sum)
        sink = MemorySink()
        pipeline.set_sink(sink)
        await pipeline.execute()
    assert sink.items == [1, 5]


async def test_large_batches_are_cut_to_the_pipelines_chunk_size():
    source = ObservableSource(Observable.from_iterable(range(10), chunk_size=10))
    await source.open()
    batches = [b async for b in source.batches(4)]
    await source.aclose()
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


async def test_an_observable_error_stops_the_pipeline_naming_the_source():
    failing = Observable.of(1, 2).concat(Observable.throw(ValueError("feed broke")))
    pipeline, sink = doubling_pipeline(ObservableSource(failing))
    with pytest.raises(NodeError, match=r"source:ObservableSource.*feed broke"):
        await pipeline.execute()
    assert sink.items in ([], [2], [2, 4])  # the failing pipeline stops wherever it was


async def test_pipeline_output_as_an_observable():
    pipeline = StreamingPipeline("invert")
    pipeline.set_source(IterableSource([1, 2, 0, 4]))
    pipeline.add_processor(lambda n: 8 // n)
    outputs = Observable.from_pipeline(pipeline)
    assert sorted(await outputs.to_list()) == [2, 4, 8]
    assert await outputs.reduce(lambda a, b: a + b).to_list() == [14]  # a fresh run per consumer
    results = await Observable.from_pipeline(pipeline, results=True).to_list()
    assert sorted(r.success for r in results) == [False, True, True, True]
    failed = next(r for r in results if not r.success)
    assert isinstance(failed.error, ZeroDivisionError) and failed.data == 0


async def test_round_trip_stream_to_pipeline_to_stream():
    stream = ReactiveStream[int]()
    pipeline = StreamingPipeline("square")
    pipeline.set_source(ObservableSource(stream))
    pipeline.add_processor(lambda n: n * n)
    totals = []
    async with (
        Observable.from_pipeline(pipeline).scan(lambda a, b: a + b).subscribe(totals.append) as sub
    ):
        await trio.testing.wait_all_tasks_blocked()
        await stream.emit_batch([1, 2, 3])
        await stream.complete()
        await sub.wait()
    assert totals == [1, 5, 14]


def test_bad_arguments():
    with pytest.raises(ConfigError, match="expects an Observable"):
        ObservableSource([1, 2])
    with pytest.raises(ConfigError, match="StreamingPipeline"):
        Observable.from_pipeline("pipeline")
