"""Node semantics: concurrency and ordering, errors, retries."""

from __future__ import annotations

import pytest
import trio

from haive.dataflow import (
    ConfigError,
    EventPipeline,
    FilterNode,
    NodeError,
    RetryPolicy,
    TransformNode,
)
from haive.dataflow.runtime.nodes import NodeContext


def linear(*nodes, **kwargs) -> EventPipeline:
    pipeline = EventPipeline(**kwargs)
    previous = "input"
    for node in nodes:
        pipeline.add_node(node)
        pipeline.connect(previous, node.name)
        previous = node.name
    pipeline.connect(previous, "output")
    return pipeline


async def test_concurrency_keeps_n_in_flight_and_order(autojump_clock):
    in_flight = 0
    peak = 0

    async def slow(x):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await trio.sleep(1 + (x % 3))  # later items often finish first
        in_flight -= 1
        return x

    pipeline = linear(TransformNode(name="slow", transform_fn=slow, concurrency=5, ordered=True))
    start = trio.current_time()
    async with pipeline.process() as p:
        result = await p.send_batch(range(20))
    assert result.outputs == list(range(20))
    assert peak == 5
    # 20 items of 1-3 s, 5 at a time: far less than the 40 s of a serial run
    assert trio.current_time() - start < 12


async def test_unordered_emits_as_finished(autojump_clock):
    async def slow(x):
        await trio.sleep(10 - x)
        return x

    pipeline = linear(TransformNode(name="slow", transform_fn=slow, concurrency=10, ordered=False))
    async with pipeline.process() as p:
        result = await p.send_batch(range(10))
    assert result.outputs == list(reversed(range(10)))


async def test_sync_and_async_filters():
    async def is_even(x):
        await trio.lowlevel.checkpoint()
        return x % 2 == 0

    pipeline = linear(
        FilterNode(name="even", filter_fn=is_even),
        FilterNode(name="small", filter_fn=lambda x: x < 6),
    )
    async with pipeline.process() as p:
        assert (await p.send_batch(range(10))).outputs == [0, 2, 4]


async def test_error_raises_node_error_naming_the_node():
    pipeline = linear(
        TransformNode(name="ok", transform_fn=lambda x: x),
        TransformNode(name="divide", transform_fn=lambda x: 1 / x),
    )
    with pytest.raises(NodeError, match="node 'divide' failed: ZeroDivisionError") as info:
        async with pipeline.process() as p:
            await p.send_batch([1, 0, 2])
    assert info.value.node == "divide"
    assert isinstance(info.value.__cause__, ZeroDivisionError)


async def test_result_policy_isolates_bad_items():
    calls = []

    def invert(x):
        calls.append(x)
        return 1 / x

    pipeline = linear(TransformNode(name="invert", transform_fn=invert), on_error="result")
    async with pipeline.process() as p:
        result = await p.send_batch([1, 0, 2, 0, 4])
    assert result.outputs == [1.0, 0.5, 0.25]
    assert [(r.data, r.node, type(r.error)) for r in result.errors] == [
        (0, "invert", ZeroDivisionError),
        (0, "invert", ZeroDivisionError),
    ]
    assert calls == [1, 0, 2, 0, 4]  # no item evaluated twice by the fast path


async def test_skip_policy_counts():
    pipeline = linear(TransformNode(name="t", transform_fn=int, on_error="skip"))
    async with pipeline.process() as p:
        result = await p.send_batch(["1", "x", "3"])
        assert p.stats()["t"].errors == 1
    assert result.outputs == [1, 3]
    assert result.errors == []


async def test_retry_with_backoff(autojump_clock):
    attempts: dict[int, int] = {}
    times = []

    async def flaky(x):
        attempts[x] = attempts.get(x, 0) + 1
        times.append(trio.current_time())
        if attempts[x] < 3:
            raise ConnectionError("try again")
        return x * 10

    policy = RetryPolicy(attempts=3, backoff=1.0, multiplier=2.0, jitter=0.0)
    pipeline = linear(TransformNode(name="flaky", transform_fn=flaky, retry=policy))
    async with pipeline.process() as p:
        result = await p.send(7)
        assert p.stats()["flaky"].retries == 2
    assert result.outputs == [70]
    assert [round(t - times[0], 6) for t in times] == [0.0, 1.0, 3.0]


async def test_retry_exhausted_is_an_error_result(autojump_clock):
    def always_fails(x):
        raise ValueError(f"bad {x}")

    pipeline = linear(
        TransformNode(name="f", transform_fn=always_fails),
        on_error="result",
        retry=RetryPolicy(attempts=2, jitter=0.0),
    )
    async with pipeline.process() as p:
        result = await p.send("a")
    assert result.outputs == []
    (failure,) = result.errors
    assert failure.attempts == 2 and str(failure.error) == "bad a"


def test_node_config_errors():
    with pytest.raises(ConfigError, match="concurrency must be an integer >= 1"):
        TransformNode(name="t", transform_fn=str, concurrency=0)
    with pytest.raises(ConfigError, match="must be callable"):
        FilterNode(name="f", filter_fn=42)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="on_error must be one of"):
        TransformNode(name="t", transform_fn=str, on_error="ignore")
    with pytest.raises(ConfigError, match="on_error must be one of"):
        EventPipeline(on_error="explode")
    with pytest.raises(ConfigError, match="attempts must be an integer >= 1"):
        RetryPolicy(attempts=0)


async def test_failures_mid_batch_keep_order_and_evaluate_each_item_once_more_per_retry():
    calls: list[int] = []
    failed_once: set[int] = set()

    def flaky(x):
        calls.append(x)
        if x % 100 == 7 and x not in failed_once:
            failed_once.add(x)
            raise ConnectionError(x)
        if x == 500:
            raise ValueError("always")
        return -x

    node = TransformNode(name="flaky", transform_fn=flaky, on_error="skip")
    ctx = NodeContext("flaky", error_policy="skip", retry=RetryPolicy(attempts=2, backoff=0))
    out = await node.process_batch(list(range(1000)), ctx)
    assert out == [-x for x in range(1000) if x != 500]
    # Each item once, in order; a failing one again right after (its retry).
    retried = {*failed_once, 500}
    assert calls == [y for x in range(1000) for y in ([x, x] if x in retried else [x])]
    assert ctx.stats.retries == 11 and ctx.stats.errors == 1
