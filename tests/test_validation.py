"""Every public constructor and config class rejects bad settings when it is built.

One table: each row builds something with one bad value and names the parameter the error
must mention. The error must be a ValueError or TypeError (ConfigError is a ValueError),
raised at construction, and say ``<parameter>=<value>`` so the user sees which argument of
which call is wrong.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from haive.dataflow import (
    AggregateNode,
    BackpressureManager,
    BoundedBuffer,
    ConfigError,
    Event,
    EventPipeline,
    EventRouter,
    FilterNode,
    FlowController,
    JsonSerializer,
    MessagePackSerializer,
    ProcessPoolNode,
    ResultCache,
    RetryPolicy,
    RouterNode,
    StreamConfig,
    StreamingPipeline,
    StreamProcessor,
    TransformNode,
    UnknownPluginError,
)
from haive.dataflow.builtins.sinks import JsonLinesSink
from haive.dataflow.builtins.sources import IterableSource, JsonLinesSource, MemorySource
from haive.dataflow.errors import UnknownSettingError
from haive.dataflow.parallel import ParallelSettings, ProcessPool
from haive.dataflow.pipelines.chain import TransformationChain
from haive.dataflow.reactive import Observable, ObservableSource, Operators, ReactiveStream
from haive.dataflow.runtime.backpressure import SlidingWindowStrategy
from haive.dataflow.state import (
    SessionState,
    SessionWindow,
    SlidingWindow,
    SQLiteStateBackend,
    StatefulProcessor,
    StateStore,
    TumblingWindow,
    WindowedAggregateNode,
    WindowState,
)
from haive.dataflow.state.checkpoint import Checkpointer


def _identity(x: Any) -> Any:
    return x


class _Echo(StreamProcessor):
    def process(self, item: Any) -> Any:
        return item


class _Counter(StatefulProcessor[int]):
    def process(self, item: Any, state: Any) -> Any:
        return item


def _streaming() -> StreamingPipeline:
    pipeline = StreamingPipeline("p")
    pipeline.set_source(IterableSource([1]))
    return pipeline


def _buffer() -> BoundedBuffer[Any]:
    return BoundedBuffer(10)


NAN = math.nan

#: (row id, what to build, the parameter its error must name)
CASES: list[tuple[str, Callable[[], object], str]] = [
    # -- pipelines: the defects of issue 12 ------------------------------------------------
    ("EventPipeline chunk_size=0", lambda: EventPipeline(chunk_size=0), "chunk_size"),
    ("EventPipeline chunk_size<0", lambda: EventPipeline(chunk_size=-3), "chunk_size"),
    ("EventPipeline chunk_size float", lambda: EventPipeline(chunk_size=2.5), "chunk_size"),
    ("EventPipeline chunk_size bool", lambda: EventPipeline(chunk_size=True), "chunk_size"),
    ("EventPipeline buffer_size<0", lambda: EventPipeline(buffer_size=-1), "buffer_size"),
    ("EventPipeline buffer_size=0", lambda: EventPipeline(buffer_size=0), "buffer_size"),
    ("EventPipeline backpressure", lambda: EventPipeline(backpressure="bogus"), "backpressure"),
    ("EventPipeline backpressure type", lambda: EventPipeline(backpressure=3), "backpressure"),
    ("EventPipeline on_error", lambda: EventPipeline(on_error="ignore"), "on_error"),
    ("EventPipeline retry", lambda: EventPipeline(retry=3), "retry"),  # type: ignore[arg-type]
    ("EventPipeline name", lambda: EventPipeline(""), "name"),
    ("EventPipeline config", lambda: EventPipeline(config={"buffer_size": 1}), "config"),  # type: ignore[arg-type]
    ("EventPipeline config and buffer_size", lambda: EventPipeline(buffer_size=8, config=StreamConfig()), "buffer_size"),
    ("EventPipeline config and chunk_size", lambda: EventPipeline(chunk_size=8, config=StreamConfig()), "chunk_size"),
    ("StreamingPipeline backpressure", lambda: StreamingPipeline(backpressure="bogus"), "backpressure"),
    ("StreamingPipeline on_error", lambda: StreamingPipeline(on_error="drop"), "on_error"),
    ("StreamingPipeline retry", lambda: StreamingPipeline(retry="3x"), "retry"),  # type: ignore[arg-type]
    ("StreamingPipeline config", lambda: StreamingPipeline(config=1024), "config"),  # type: ignore[arg-type]
    ("enable_caching cache_size", lambda: _streaming().enable_caching(cache_size=0), "cache_size"),
    ("enable_caching ttl", lambda: _streaming().enable_caching(ttl="-5s"), "ttl"),
    ("enable_parallel parallelism", lambda: _streaming().enable_parallel_processing(0), "parallelism"),
    ("enable_parallel ordered", lambda: _streaming().enable_parallel_processing(2, "yes"), "ordered"),  # type: ignore[arg-type]
    ("enable_checkpointing every", lambda: _streaming().enable_checkpointing(StateStore(), every=0), "every"),
    ("Event type", lambda: Event(type=3), "type"),  # type: ignore[arg-type]
    ("Event timestamp text", lambda: Event(type="t", timestamp="now"), "timestamp"),  # type: ignore[arg-type]
    ("Event timestamp nan", lambda: Event(type="t", timestamp=NAN), "timestamp"),
    ("Event key", lambda: Event(type="t", key=5), "key"),  # type: ignore[arg-type]
    ("Event id", lambda: Event(type="t", id=""), "id"),
    ("Event data", lambda: Event(type="t", data=[1, 2]), "data"),  # type: ignore[arg-type]
    ("Event metadata", lambda: Event(type="t", metadata="m"), "metadata"),  # type: ignore[arg-type]
    # -- buffers and backpressure ---------------------------------------------------------
    ("BoundedBuffer buffer_size=0", lambda: BoundedBuffer(0), "buffer_size"),
    ("BoundedBuffer buffer_size str", lambda: BoundedBuffer("10"), "buffer_size"),  # type: ignore[arg-type]
    ("BoundedBuffer chunk_size=0", lambda: BoundedBuffer(10, chunk_size=0), "chunk_size"),
    ("BoundedBuffer strategy", lambda: BoundedBuffer(10, "bogus"), "strategy"),
    ("BoundedBuffer strategy type", lambda: BoundedBuffer(10, 1.5), "strategy"),
    ("BackpressureManager buffer_size", lambda: BackpressureManager().buffer("a", buffer_size=0), "buffer_size"),
    ("BackpressureManager strategy", lambda: BackpressureManager().buffer("a", strategy="nope"), "strategy"),
    ("BackpressureManager flow_controller", lambda: BackpressureManager().flow_controller("missing"), "name"),
    ("FlowController high", lambda: FlowController(_buffer(), high=1.5), "high"),
    ("FlowController low", lambda: FlowController(_buffer(), low=-0.1), "low"),
    ("FlowController low>high", lambda: FlowController(_buffer(), high=0.3, low=0.6), "low"),
    ("FlowController nan", lambda: FlowController(_buffer(), high=NAN), "high"),
    ("FlowController buffer", lambda: FlowController(None), "buffer"),  # type: ignore[arg-type]
    ("SlidingWindowStrategy window=0", lambda: SlidingWindowStrategy(window=0), "window"),
    ("SlidingWindowStrategy window<0", lambda: SlidingWindowStrategy(window=-1.0), "window"),
    ("MemorySource buffer_size", lambda: MemorySource(0), "buffer_size"),
    ("MemorySource backpressure", lambda: MemorySource(backpressure="bogus"), "backpressure"),
    # -- config ----------------------------------------------------------------------------
    ("StreamConfig buffer_size", lambda: StreamConfig(buffer_size=0), "buffer_size"),
    ("StreamConfig chunk_size", lambda: StreamConfig(chunk_size=-1), "chunk_size"),
    ("StreamConfig error_buffer_size", lambda: StreamConfig(error_buffer_size=0), "error_buffer_size"),
    ("StreamConfig worker_threads", lambda: StreamConfig(worker_threads=0), "worker_threads"),
    ("StreamConfig io_threads", lambda: StreamConfig(io_threads=0), "io_threads"),
    ("StreamConfig gc_interval", lambda: StreamConfig(gc_interval=-1), "gc_interval"),
    ("StreamConfig max_memory_usage small", lambda: StreamConfig(max_memory_usage="1KB"), "max_memory_usage"),
    ("StreamConfig max_memory_usage text", lambda: StreamConfig(max_memory_usage="lots"), "max_memory_usage"),
    ("RetryPolicy attempts", lambda: RetryPolicy(attempts=0), "attempts"),
    ("RetryPolicy backoff", lambda: RetryPolicy(backoff=-1), "backoff"),
    ("RetryPolicy backoff nan", lambda: RetryPolicy(backoff=NAN), "backoff"),
    ("RetryPolicy multiplier", lambda: RetryPolicy(multiplier=-2), "multiplier"),
    ("RetryPolicy max_backoff", lambda: RetryPolicy(max_backoff=-1), "max_backoff"),
    ("RetryPolicy jitter", lambda: RetryPolicy(jitter=1.5), "jitter"),
    # -- nodes -----------------------------------------------------------------------------
    ("FilterNode name", lambda: FilterNode(name="", filter_fn=bool), "name"),
    ("FilterNode filter_fn", lambda: FilterNode(name="f", filter_fn=None), "filter_fn"),  # type: ignore[arg-type]
    ("FilterNode on_error", lambda: FilterNode(name="f", filter_fn=bool, on_error="x"), "on_error"),
    ("FilterNode retry", lambda: FilterNode(name="f", filter_fn=bool, retry=2), "retry"),  # type: ignore[arg-type]
    ("TransformNode concurrency=0", lambda: TransformNode(name="t", transform_fn=_identity, concurrency=0), "concurrency"),
    ("TransformNode concurrency bool", lambda: TransformNode(name="t", transform_fn=_identity, concurrency=True), "concurrency"),
    ("TransformNode executor", lambda: TransformNode(name="t", transform_fn=_identity, executor="gpu"), "executor"),
    ("TransformNode ordered", lambda: TransformNode(name="t", transform_fn=_identity, ordered="no"), "ordered"),  # type: ignore[arg-type]
    ("TransformNode transform_fn", lambda: TransformNode(name="t", transform_fn=1), "transform_fn"),  # type: ignore[arg-type]
    ("AggregateNode window_size", lambda: AggregateNode(name="a", window_size=0, aggregate_fn=sum), "window_size"),
    ("AggregateNode aggregate_fn", lambda: AggregateNode(name="a", window_size=2, aggregate_fn=None), "aggregate_fn"),  # type: ignore[arg-type]
    ("AggregateNode emit_partial", lambda: AggregateNode(name="a", window_size=2, aggregate_fn=sum, emit_partial="no"), "emit_partial"),  # type: ignore[arg-type]
    ("StreamProcessor on_error", lambda: _Echo(on_error="bogus"), "on_error"),
    ("StreamProcessor retry", lambda: _Echo(retry=5), "retry"),  # type: ignore[arg-type]
    ("ProcessPoolNode concurrency", lambda: ProcessPoolNode(name="p", transform_fn=abs, concurrency=0), "concurrency"),
    ("TransformationChain emit", lambda: TransformationChain("c", emit="all"), "emit"),  # type: ignore[arg-type]
    ("TransformationChain on_error", lambda: TransformationChain("c", on_error="x"), "on_error"),
    ("TransformationChain name", lambda: TransformationChain(""), "name"),
    ("EventRouter mode", lambda: EventRouter(mode="any"), "mode"),  # type: ignore[arg-type]
    ("RouterNode on_error", lambda: RouterNode("r", EventRouter(), on_error="x"), "on_error"),
    # -- caching and parallelism ------------------------------------------------------------
    ("ResultCache max_bytes=0", lambda: ResultCache(0), "max_bytes"),
    ("ResultCache max_bytes text", lambda: ResultCache("big"), "max_bytes"),
    ("ResultCache ttl<0", lambda: ResultCache(ttl=-1), "ttl"),
    ("ResultCache ttl=0", lambda: ResultCache(ttl=0), "ttl"),
    ("ParallelSettings parallelism", lambda: ParallelSettings(parallelism=-1), "parallelism"),
    ("ProcessPool workers", lambda: ProcessPool(abs, 0), "workers"),
    ("ProcessPool max_restarts", lambda: ProcessPool(abs, 1, max_restarts=-1), "max_restarts"),
    # -- state, windows, checkpoints ---------------------------------------------------------
    ("StateStore default_ttl", lambda: StateStore(default_ttl=-5), "default_ttl"),
    ("StateStore on_corrupt", lambda: StateStore(on_corrupt="ignore"), "on_corrupt"),
    ("SQLiteStateBackend synchronous", lambda: SQLiteStateBackend(synchronous="SOMETIMES"), "synchronous"),
    ("SQLiteStateBackend busy_timeout", lambda: SQLiteStateBackend(busy_timeout=-1), "busy_timeout"),
    ("SessionState timeout", lambda: SessionState(timeout=0), "timeout"),
    ("WindowState window_size", lambda: WindowState(window_size="-1s"), "window_size"),
    ("WindowState max_items", lambda: WindowState(max_items=0), "max_items"),
    ("StatefulProcessor ttl", lambda: _Counter(ttl=-1), "ttl"),
    ("StatefulProcessor on_error", lambda: _Counter(on_error="x"), "on_error"),
    ("TumblingWindow size=0", lambda: TumblingWindow(0), "size"),
    ("TumblingWindow size text", lambda: TumblingWindow("soon"), "size"),
    ("TumblingWindow count", lambda: TumblingWindow(count=0), "count"),
    ("TumblingWindow offset", lambda: TumblingWindow("1s", offset=NAN), "offset"),
    ("SlidingWindow every=0", lambda: SlidingWindow("10s", every=0), "every"),
    ("SlidingWindow size<0", lambda: SlidingWindow(-10, every=1), "size"),
    ("SlidingWindow count every", lambda: SlidingWindow(count=10, every=0), "every"),
    ("SlidingWindow count", lambda: SlidingWindow(count=-1, every=1), "count"),
    ("SessionWindow gap=0", lambda: SessionWindow(0), "gap"),
    ("SessionWindow gap<0", lambda: SessionWindow("-1s"), "gap"),
    ("WindowedAggregateNode lateness", lambda: WindowedAggregateNode(name="w", window=TumblingWindow("1s"), allowed_lateness=-1), "allowed_lateness"),
    ("WindowedAggregateNode time", lambda: WindowedAggregateNode(name="w", window=TumblingWindow("1s"), time="wall"), "time"),  # type: ignore[arg-type]
    ("WindowedAggregateNode window", lambda: WindowedAggregateNode(name="w", window="1s"), "window"),  # type: ignore[arg-type]
    ("Checkpointer interval", lambda: Checkpointer(StateStore(), name="c", interval=0), "interval"),
    ("Checkpointer every", lambda: Checkpointer(StateStore(), name="c", every=-1), "every"),
    ("Checkpointer name", lambda: Checkpointer(StateStore(), name=""), "name"),
    ("Checkpointer neither", lambda: Checkpointer(StateStore(), name="c", interval=None), "interval"),
    # -- serializers --------------------------------------------------------------------------
    ("JsonSerializer max_size", lambda: JsonSerializer(max_size=0), "max_size"),
    ("MessagePackSerializer max_size", lambda: MessagePackSerializer(max_size=-1), "max_size"),
    ("JsonLinesSource on_invalid", lambda: JsonLinesSource("x.jsonl", on_invalid="warn"), "on_invalid"),
    ("JsonLinesSink mode", lambda: JsonLinesSink("x.jsonl", mode="w"), "mode"),
    # -- reactive operators taking counts and durations --------------------------------------
    ("take(-1)", lambda: Observable.of(1).take(-1), "count"),
    ("skip(-1)", lambda: Observable.of(1).skip(-1), "count"),
    ("buffer(0)", lambda: Observable.of(1).buffer(0), "count"),
    ("window(0)", lambda: Observable.of(1).window(0), "count"),
    ("throttle(0)", lambda: Observable.of(1).throttle(0), "period"),
    ("debounce(-1)", lambda: Observable.of(1).debounce(-1), "period"),
    ("sample(0)", lambda: Observable.of(1).sample(0), "period"),
    ("buffer_time(0)", lambda: Observable.of(1).buffer_time(0), "period"),
    ("buffer_time max_count", lambda: Observable.of(1).buffer_time(1, max_count=0), "max_count"),
    ("window_time(-1)", lambda: Observable.of(1).window_time(-1), "period"),
    ("delay(nan)", lambda: Observable.of(1).delay(NAN), "period"),
    ("timeout(0)", lambda: Observable.of(1).timeout(0), "period"),
    ("flat_map max_concurrent", lambda: Observable.of(1).flat_map(_identity, max_concurrent=0), "max_concurrent"),
    ("retry(-1)", lambda: Observable.of(1).retry(-1), "retries"),
    ("interval(0)", lambda: Observable.interval(0), "period"),
    ("timer(-1)", lambda: Observable.timer(-1), "due"),
    ("from_iterable chunk_size", lambda: Observable.from_iterable([1], chunk_size=0), "chunk_size"),
    ("Operators.take(-1)", lambda: Operators.take(-1), "count"),
    ("Operators.buffer(0)", lambda: Operators.buffer(0), "count"),
    ("Operators.debounce(-1)", lambda: Operators.debounce(-1), "period"),
    ("subscribe buffer_size", lambda: Observable.of(1).subscribe(print, buffer_size=0), "buffer_size"),
    ("subscribe backpressure", lambda: Observable.of(1).subscribe(print, backpressure="bogus"), "backpressure"),
    ("iterate buffer_size", lambda: Observable.of(1).iterate(buffer_size=-1), "buffer_size"),
    ("ObservableSource buffer_size", lambda: ObservableSource(ReactiveStream(), buffer_size=0), "buffer_size"),
    ("ObservableSource backpressure", lambda: ObservableSource(ReactiveStream(), backpressure="x"), "backpressure"),
]


@pytest.mark.parametrize(("build", "parameter"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_setting_is_refused_at_construction(
    build: Callable[[], object], parameter: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # JsonLines rows name relative files; nothing is created
    with pytest.raises((ValueError, TypeError)) as caught:
        build()
    message = str(caught.value)
    assert f"{parameter}=" in message, message


def test_messages_name_owner_parameter_value_and_what_is_allowed() -> None:
    with pytest.raises(ConfigError) as caught:
        EventPipeline(chunk_size=0)
    assert str(caught.value) == (
        "EventPipeline(chunk_size=0): chunk_size must be an integer >= 1, got 0"
    )
    with pytest.raises(ConfigError, match=r"^take\(count=-1\): count must be an integer >= 0, got -1$"):
        Observable.of(1).take(-1)


@pytest.mark.parametrize("make", [EventPipeline, StreamingPipeline])
def test_unknown_backpressure_name_resolves_through_the_registry_at_construction(
    make: Callable[..., object],
) -> None:
    with pytest.raises(UnknownSettingError) as caught:
        make(backpressure="drop_olest")
    error = caught.value
    # One error that is both: a plugin lookup failure and a bad setting.
    assert isinstance(error, UnknownPluginError) and isinstance(error, ConfigError)
    message = str(error)
    assert message.startswith(f"{make.__name__}(backpressure='drop_olest'): ")
    assert "no backpressure named 'drop_olest' is installed" in message
    assert "Installed backpressures: block, drop_newest, drop_oldest, sliding_window" in message
    assert "Did you mean 'drop_oldest'?" in message


async def test_event_pipeline_chunk_size_zero_is_refused_before_anything_runs() -> None:
    """Regression (issue 12): max_batch=0 (now chunk_size) was accepted and the first send()
    hung forever.

    On the old code the constructor returned; the send is bounded so that the old behaviour
    shows up as a failure (TooSlowError) instead of a hung test run.
    """
    with trio.fail_after(30):
        with pytest.raises(ConfigError, match=r"EventPipeline\(chunk_size=0\): chunk_size"):
            pipeline = EventPipeline("regression", chunk_size=0)
            pipeline.add_node(TransformNode(name="inc", transform_fn=lambda x: x + 1))
            pipeline.connect("input", "inc").connect("inc", "output")
            async with pipeline.process() as handle:
                await handle.send(1)


@pytest.mark.parametrize(
    ("make", "parameter"),
    [
        (lambda: EventPipeline("regression", buffer_size=-1), "buffer_size"),
        (lambda: EventPipeline("regression", backpressure="bogus"), "backpressure"),
        (lambda: StreamingPipeline("regression", backpressure="bogus"), "backpressure"),
    ],
)
async def test_bad_pipeline_settings_fail_at_construction_naming_the_parameter(
    make: Callable[[], object], parameter: str
) -> None:
    """Regression (issue 12): these failed only once running, naming an internal buffer."""
    with trio.fail_after(30):
        with pytest.raises((ValueError, TypeError)) as caught:
            pipeline = make()
            if isinstance(pipeline, EventPipeline):
                pipeline.add_node(TransformNode(name="inc", transform_fn=lambda x: x + 1))
                pipeline.connect("input", "inc").connect("inc", "output")
                async with pipeline.process() as handle:
                    await handle.send(1)
            else:
                assert isinstance(pipeline, StreamingPipeline)
                pipeline.set_source(IterableSource([1]))
                await pipeline.execute()
    message = str(caught.value)
    assert f"{parameter}=" in message, message
    assert ".in'" not in message  # no internal buffer name (e.g. 'inc.in')


def test_good_settings_still_build() -> None:
    EventPipeline(chunk_size=1, buffer_size=1, backpressure="drop_oldest", on_error="skip")
    StreamingPipeline(backpressure=SlidingWindowStrategy(window=0.5))
    FlowController(_buffer(), high=1.0, low=0.0)
    RetryPolicy(attempts=1, jitter=1.0)
    TumblingWindow("1s", offset=-0.5)
    SlidingWindow(count=3, every=1)
    WindowedAggregateNode(name="w", window=SessionWindow("1m"), allowed_lateness="5s")
    Observable.of(1).take(0).skip(0)
    Observable.timer(0)
