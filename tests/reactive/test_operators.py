"""Marble tests for every operator, under MockClock: items, timing, completion and errors.

One frame is one second of trio time; ``autojump_clock`` makes the seconds free.
"""

from __future__ import annotations

import pytest
import trio
import trio.lowlevel

from haive.dataflow.errors import ConfigError
from haive.dataflow.reactive import EmptyStreamError, Observable
from haive.dataflow.reactive import Operators as ops

from .marbles import MarbleError, cold, hot, run_marbles

V = {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}


async def double_async(x):
    await trio.lowlevel.checkpoint()
    return x * 2


async def is_odd_async(x):
    await trio.lowlevel.checkpoint()
    return x % 2 == 1


# -- sources --------------------------------------------------------------------------------
async def test_of_and_from_iterable_emit_at_once(autojump_clock):
    assert (await run_marbles(Observable.of(1, 2, 3))).marbles == "(123|)"
    assert (await run_marbles(Observable.from_iterable(range(3), chunk_size=2))).marbles == "(012|)"


async def test_interval_timer_empty_throw_never(autojump_clock):
    assert (await run_marbles(Observable.interval(1).take(3))).marbles == "-01(2|)"
    assert (await run_marbles(Observable.timer(2))).marbles == "--(0|)"
    assert (await run_marbles(Observable.timer(2, 1).take(3))).marbles == "--01(2|)"
    assert (await run_marbles(Observable.empty())).marbles == "|"
    rec = await run_marbles(Observable.throw(KeyError("k")))
    assert rec.marbles == "#" and isinstance(rec.error, KeyError)
    assert (await run_marbles(Observable.never(), until=5)).marbles == ""


async def test_interval_skips_ticks_a_blocked_consumer_missed(autojump_clock):
    seen = []

    async def slow(n):
        seen.append((n, trio.current_time()))
        await trio.sleep(2.5)

    start = trio.current_time()
    await Observable.interval(1).take(3).for_each(slow)
    # ticks at 1, then the next free slots on the 1 s grid: 4 and 7 (no burst of stale ticks)
    assert [(n, t - start) for n, t in seen] == [(0, 1.0), (1, 4.0), (2, 7.0)]


async def test_from_async_iterable_defer_create(autojump_clock):
    async def gen():
        for x in "ab":
            await trio.sleep(1)
            yield x

    assert (await run_marbles(Observable.from_async_iterable(gen()))).marbles == "-a(b|)"
    deferred = Observable.defer(gen)
    assert (await run_marbles(deferred)).marbles == "-a(b|)"
    assert (await run_marbles(deferred)).marbles == "-a(b|)"  # a new generator per run

    async def produce(emit):
        await emit("x")
        await trio.sleep(2)
        await emit("y")

    assert (await run_marbles(Observable.create(produce))).marbles == "x-(y|)"


# -- fused per-item operators -------------------------------------------------------------
@pytest.mark.parametrize("fn", [lambda x: x * 2, double_async], ids=["sync", "async"])
async def test_map(autojump_clock, fn):
    rec = await run_marbles(cold("-a-b-|", V).map(fn), values={"x": 2, "y": 4})
    assert rec.marbles == "-x-y-|"


async def test_map_error_mid_batch_delivers_the_items_before_it(autojump_clock):
    rec = await run_marbles(
        Observable.of(1, 3, 2, 5).map(lambda x: 10 // (x - 2)), values={"p": -10, "q": 10}
    )
    assert rec.marbles == "(pq#)"
    assert isinstance(rec.error, ZeroDivisionError)


async def test_map_with_a_lambda_returning_a_coroutine_says_what_to_do(autojump_clock):
    rec = await run_marbles(Observable.of(1).map(lambda x: double_async(x)))
    assert isinstance(rec.error, TypeError)
    assert "not an async function" in str(rec.error) and "flat_map" in str(rec.error)


@pytest.mark.parametrize("pred", [lambda x: x % 2 == 1, is_odd_async], ids=["sync", "async"])
async def test_filter(autojump_clock, pred):
    assert (await run_marbles(cold("-a-b-c|", V).filter(pred), values=V)).marbles == "-a---c|"


async def test_scan_and_reduce(autojump_clock):
    values = {"p": 1, "q": 3, "r": 6, "s": 16}
    rec = await run_marbles(cold("-a-b-c|", V).scan(lambda acc, x: acc + x), values=values)
    assert rec.marbles == "-p-q-r|"
    rec = await run_marbles(
        cold("-a-b-c|", V).scan(lambda acc, x: acc + x, 10), values={"p": 11, "q": 13, "r": 16}
    )
    assert rec.marbles == "-p-q-r|"

    async def add(acc, x):
        await trio.lowlevel.checkpoint()
        return acc + x

    assert (
        await run_marbles(cold("-a-b-c|", V).reduce(add), values=values)
    ).marbles == "------(r|)"
    assert (await run_marbles(Observable.empty().reduce(add, 7))).marbles == "(7|)"
    rec = await run_marbles(Observable.empty().reduce(add))
    assert rec.marbles == "#" and isinstance(rec.error, EmptyStreamError)


async def test_take_completes_and_stops_the_upstream(autojump_clock):
    assert (await run_marbles(cold("-a-b-c-|", V).take(2), values=V)).marbles == "-a-(b|)"
    assert (await run_marbles(cold("-a-b-c-|", V).take(0))).marbles == "|"
    produced = []
    rec = await run_marbles(Observable.interval(1).tap(produced.append).take(3))
    assert rec.marbles == "-01(2|)"
    await trio.sleep(10)
    assert produced == [0, 1, 2]  # nothing ran after take completed


async def test_skip_distinct_distinct_until_changed(autojump_clock):
    assert (await run_marbles(cold("-a-b-c|", V).skip(2), values=V)).marbles == "-----c|"
    assert (await run_marbles(cold("abacb|").distinct())).marbles == "ab-c-|"
    assert (await run_marbles(cold("aAbB|").distinct(str.lower))).marbles == "a-b-|"
    assert (await run_marbles(cold("aabba|").distinct_until_changed())).marbles == "a-b-a|"

    async def lower(x):
        return x.lower()

    assert (await run_marbles(cold("aAbB|").distinct_until_changed(lower))).marbles == "a-b-|"


async def test_tap_sees_items_completion_and_errors(autojump_clock):
    log = []
    source = cold("-a-b|").tap(
        log.append, lambda e: log.append(type(e).__name__), lambda: log.append("done")
    )
    assert (await run_marbles(source)).marbles == "-a-b|"
    assert log == ["a", "b", "done"]
    log.clear()
    failing = cold("-a#").tap(
        log.append, lambda e: log.append(type(e).__name__), lambda: log.append("done")
    )
    assert (await run_marbles(failing)).marbles == "-a#"
    assert log == ["a", "MarbleError"]


async def test_buffer_count(autojump_clock):
    values = {"x": ["a", "b"], "y": ["c", "d"], "z": ["e"]}
    assert (
        await run_marbles(cold("-a-b-c-d-e-|").buffer(2), values=values)
    ).marbles == "---x---y---(z|)"


async def test_throttle(autojump_clock):
    assert (await run_marbles(cold("-abc-d---e|").throttle(3))).marbles == "-a---d---e|"


# -- time operators ---------------------------------------------------------------------
async def test_debounce(autojump_clock):
    assert (await run_marbles(cold("-ab----c---d|").debounce(2))).marbles == "----b----c--(d|)"


async def test_sample(autojump_clock):
    assert (await run_marbles(cold("-ab----c---|").sample(3))).marbles == "---b-----c-|"
    assert (
        await run_marbles(cold("-a|").sample(3))
    ).marbles == "--(a|)"  # pending item at completion


async def test_buffer_time(autojump_clock):
    values = {"x": ["a", "b"], "y": ["c"], "z": ["d"], "e": []}
    assert (
        await run_marbles(cold("-ab-c---d-|").buffer_time(3), values=values)
    ).marbles == "---x--y--z|"
    # a full list goes at once and starts the period again
    values = {"x": ["a", "b"], "y": ["c"]}
    assert (
        await run_marbles(cold("-abc-----|").buffer_time(5, max_count=2), values=values)
    ).marbles == "--x----y-|"
    assert (
        await run_marbles(cold("-----|").buffer_time(2, emit_empty=True), values=values | {"e": []})
    ).marbles == "--e-e|"


async def test_window_count(autojump_clock):
    values = {"x": ["a", "b"], "y": ["c"]}
    windows = cold("-abc-|").window(2)
    assert (
        await run_marbles(windows.map(lambda w: "w"))
    ).marbles == "-w-w-|"  # emitted when opened
    assert (
        await run_marbles(windows.flat_map(lambda w: w.to_list()), values=values)
    ).marbles == "--x--(y|)"


async def test_window_time(autojump_clock):
    values = {"x": ["a"], "y": ["b", "c"], "z": ["d"]}
    windows = cold("-a--bc-d|").window_time(3)
    assert (await run_marbles(windows.map(lambda w: "w"))).marbles == "w--w--w-|"
    assert (
        await run_marbles(windows.flat_map(lambda w: w.to_list()), values=values)
    ).marbles == "---x--y-(z|)"


async def test_delay(autojump_clock):
    assert (await run_marbles(cold("-a-b|").delay(2))).marbles == "---a-b|"
    rec = await run_marbles(cold("-a#").delay(5))
    assert rec.marbles == "--#"  # errors are not delayed


async def test_timeout(autojump_clock):
    rec = await run_marbles(cold("-a----b|").timeout(3))
    assert rec.marbles == "-a--#" and isinstance(rec.error, TimeoutError)
    assert (await run_marbles(cold("-a----b|").timeout(3, fallback=cold("x|")))).marbles == "-a--x|"
    assert (await run_marbles(cold("-a-b|").timeout(3))).marbles == "-a-b|"


async def test_timeout_does_not_count_time_spent_waiting_on_the_consumer(autojump_clock):
    seen = []

    async def handler(x):
        seen.append(x)
        await trio.sleep(10)

    await Observable.from_iterable(range(3), chunk_size=1).timeout(1).for_each(handler)
    assert seen == [0, 1, 2]


# -- combining ----------------------------------------------------------------------------
async def test_merge(autojump_clock):
    assert (await run_marbles(Observable.merge(cold("-a--b|"), cold("--c-|")))).marbles == "-ac-b|"
    assert (await run_marbles(cold("-a--b|").merge(cold("--c-|")))).marbles == "-ac-b|"


async def test_zip(autojump_clock):
    values = {"p": ("a", "x"), "q": ("b", "y")}
    assert (
        await run_marbles(cold("-a-b-c|").zip(cold("--x----y|")), values=values)
    ).marbles == "--p----q|"
    rec = await run_marbles(
        Observable.zip(cold("ab|"), cold("xy|"), lambda left, right: left + right),
        values={"p": "ax", "q": "by"},
    )
    assert rec.marbles == "pq|"


async def test_concat(autojump_clock):
    assert (await run_marbles(cold("-a|").concat(cold("-b|")))).marbles == "-a-b|"
    assert (await run_marbles(Observable.concat(cold("a|"), Observable.of("b")))).marbles == "a(b|)"


async def test_combine_latest(autojump_clock):
    values = {"p": ("a", "x"), "q": ("a", "y"), "r": ("b", "y")}
    assert (
        await run_marbles(
            Observable.combine_latest(cold("-a---b|"), cold("--x-y--|")), values=values
        )
    ).marbles == "--p-qr-|"
    # the seed's form: the combining function as the last argument
    rec = await run_marbles(
        Observable.combine_latest(
            cold("-a---b|"), cold("--x-y--|"), lambda left, right: left + right
        ),
        values={"p": "ax", "q": "ay", "r": "by"},
    )
    assert rec.marbles == "--p-qr-|"
    # a source that completes without an item: nothing can ever be combined
    assert (await run_marbles(cold("-a----|").combine_latest(cold("--|")))).marbles == "--|"


async def test_with_latest_from(autojump_clock):
    values = {"p": ("b", "x"), "q": ("c", "y")}
    assert (
        await run_marbles(cold("-a-b---c|").with_latest_from(cold("--x---y|")), values=values)
    ).marbles == "---p---q|"


async def test_start_with(autojump_clock):
    assert (await run_marbles(cold("-a|").start_with("s"))).marbles == "sa|"
    source = hot("a-b|")
    # subscribed before the start items go out: the hot item of frame 0 is not lost
    assert (await run_marbles(source.stream.start_with("s"), source)).marbles == "(sa)-b|"


async def test_flat_map_merges_inner_streams(autojump_clock):
    values = {"p": "a1", "q": "b1", "r": "a2", "s": "b2"}

    def inner(v):
        return cold("-1--2|").map(lambda n: v + n)

    assert (await run_marbles(cold("-a-b|").flat_map(inner), values=values)).marbles == "--p-qr-s|"
    # one at a time keeps the order (the upstream waits)
    assert (
        await run_marbles(cold("-a-b|").flat_map(inner, max_concurrent=1), values=values)
    ).marbles == "--p--r-q--s|"


async def test_flat_map_results_iterables_awaitables_values(autojump_clock):
    async def fetch(x):
        await trio.sleep(1)
        return [x, x]

    assert (await run_marbles(cold("a|").flat_map(lambda x: [x, x.upper()]))).marbles == "(aA)|"
    assert (
        await run_marbles(cold("a|").flat_map(lambda x: x * 2), values={"d": "aa"})
    ).marbles == "d|"
    rec = await run_marbles(cold("a|").flat_map(fetch), values={"l": ["a", "a"]})
    assert rec.marbles == "-(l|)"  # an awaitable stands for one item


async def test_flat_map_limits_concurrency(autojump_clock):
    running = peak = 0

    async def work(x):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await trio.sleep(1)
        running -= 1
        return x

    start = trio.current_time()
    out = await Observable.of(*range(6)).flat_map(work, max_concurrent=2).to_list()
    assert sorted(out) == list(range(6))
    assert peak == 2
    assert trio.current_time() - start == 3


async def test_flat_map_function_error_delivers_earlier_items(autojump_clock):
    def explode(x):
        if x == "b":
            raise ValueError("b")
        return [x]

    rec = await run_marbles(cold("-a-b-c|").flat_map(explode))
    assert rec.marbles == "-a-#" and isinstance(rec.error, ValueError)


# -- errors ---------------------------------------------------------------------------------
async def test_retry_resubscribes_with_backoff(autojump_clock):
    subscriptions = []

    def make():
        subscriptions.append(trio.current_time())
        return cold("-a#")

    rec = await run_marbles(Observable.defer(make).retry(2, backoff=1, reset_on_success=False))
    assert rec.marbles == "-a--a---a#"
    assert len(subscriptions) == 3
    # by default a run that delivered something resets the count: a long-lived stream survives
    assert (await run_marbles(Observable.defer(make).retry(1).take(4))).marbles == "-a-a-a-(a|)"


async def test_retry_policy_and_forever(autojump_clock):
    from haive.dataflow import RetryPolicy

    attempts = 0

    def flaky():
        nonlocal attempts
        attempts += 1
        return Observable.of("ok") if attempts >= 5 else Observable.throw(OSError("down"))

    rec = await run_marbles(Observable.defer(flaky).retry(), values={"k": "ok"})
    assert rec.marbles == "(k|)" and attempts == 5
    attempts = 0
    rec = await run_marbles(
        Observable.defer(flaky).retry(RetryPolicy(attempts=3, backoff=1, jitter=0))
    )
    assert rec.marbles == "---#" and isinstance(rec.error, OSError)  # pauses of 1 and 2 frames


async def test_retry_ignores_errors_raised_downstream_of_it(autojump_clock):
    subscriptions = 0

    def make():
        nonlocal subscriptions
        subscriptions += 1
        return cold("-a-b|")

    def bad(x):
        raise RuntimeError("downstream")

    rec = await run_marbles(Observable.defer(make).retry(3).map(bad))
    assert rec.marbles == "-#" and isinstance(rec.error, RuntimeError)
    assert subscriptions == 1


async def test_catch_error(autojump_clock):
    assert (await run_marbles(cold("-a#").catch_error(lambda e: cold("-b|")))).marbles == "-a-b|"
    assert (await run_marbles(cold("-a#").catch_error(lambda e: None))).marbles == "-a|"
    assert (await run_marbles(cold("-a#").catch_error(lambda e: "x"))).marbles == "-a(x|)"

    async def handler(error):
        await trio.sleep(1)
        return [type(error).__name__[0]]

    assert (await run_marbles(cold("-a#").catch_error(handler))).marbles == "-a-(M|)"
    rec = await run_marbles(
        cold("-a#", error=KeyError("k")).catch_error(lambda e: None, exceptions=ValueError)
    )
    assert rec.marbles == "-a#" and isinstance(rec.error, KeyError)
    with pytest.raises(ConfigError, match="never cancellation"):
        Observable.of(1).catch_error(lambda e: None, exceptions=BaseException)


# -- error and completion pass through every operator -----------------------------------
PASS_THROUGH = {
    "map": ops.map(str.upper),
    "filter": ops.filter(lambda x: True),
    "scan": ops.scan(lambda a, b: b),
    "take": ops.take(5),
    "skip": ops.skip(0),
    "distinct": ops.distinct(),
    "distinct_until_changed": ops.distinct_until_changed(),
    "tap": ops.tap(lambda x: None),
    "throttle": ops.throttle(0.5),
    "start_with": ops.start_with(),
    "retry(0)": ops.retry(0),
    "catch_error(other types)": ops.catch_error(lambda e: None, exceptions=KeyError),
    "flat_map": ops.flat_map(lambda x: [x]),
    "flat_map(1)": ops.flat_map(lambda x: [x], max_concurrent=1),
    "merge": ops.merge(Observable.empty()),
    "concat": ops.concat(Observable.empty()),
    "with_latest_from": ops.with_latest_from(Observable.of(0)),
    "debounce": ops.debounce(1),
    "sample": ops.sample(2),
    "delay": ops.delay(1),
    "timeout": ops.timeout(5),
}


@pytest.mark.parametrize("name", sorted(PASS_THROUGH))
async def test_error_passes_through(autojump_clock, name):
    operator = PASS_THROUGH[name]
    if name == "with_latest_from":
        rec = await run_marbles(operator(cold("-a-#")), values={"p": ("a", 0)})
        assert rec.marbles == "-p-#"
    else:
        rec = await run_marbles(operator(cold("-a-#")))
        expected = {"debounce": "--a#", "sample": "--a#", "delay": "--a#", "map": "-A-#"}.get(
            name, "-a-#"
        )
        assert rec.marbles == expected
    assert isinstance(rec.error, MarbleError)


@pytest.mark.parametrize(
    "name", ["buffer", "buffer_time", "window", "window_time", "reduce", "zip", "combine_latest"]
)
async def test_error_passes_through_collecting_operators(autojump_clock, name):
    source = cold("-a-#")
    observable = {
        "buffer": source.buffer(5),
        "buffer_time": source.buffer_time(10),
        "window": source.window(5).map(lambda w: "w"),
        "window_time": source.window_time(10).map(lambda w: "w"),
        "reduce": source.reduce(lambda a, b: b),
        "zip": source.zip(Observable.of(1, 2)),
        "combine_latest": source.combine_latest(Observable.of(1)),
    }[name]
    rec = await run_marbles(observable, values={"p": ("a", 1)})
    expected = {
        "window_time": "w--#",
        "window": "-w-#",
        "zip": "-p-#",
        "combine_latest": "-p-#",
    }.get(name, "---#")
    assert rec.marbles == expected
    assert isinstance(rec.error, MarbleError)


async def test_windows_of_a_failed_stream_fail_too(autojump_clock):
    windows = await cold("-ab-#").window(5).catch_error(lambda e: None).to_list()
    assert len(windows) == 1
    with pytest.raises(MarbleError):
        await windows[0].to_list()
    assert windows[0].items == ["a", "b"]


async def test_bad_arguments_are_named(autojump_clock):
    with pytest.raises(ConfigError, match=r"take\(count=-1\)"):
        Observable.of(1).take(-1)
    with pytest.raises(ConfigError, match="map expects a function"):
        Observable.of(1).map(3)
    with pytest.raises(ConfigError, match=r"debounce\(period=0\)"):
        Observable.of(1).debounce(0)
    with pytest.raises(ConfigError, match=r"buffer\(count=0\)"):
        Observable.of(1).buffer(0)
    with pytest.raises(ConfigError, match="merge expects Observables"):
        Observable.merge(Observable.of(1), [2])
    assert (await run_marbles(Observable.of(1).debounce("2s"))).marbles == "(1|)"


async def test_share(autojump_clock):
    source = hot("-a-b-|")
    shared = source.stream.map(str.upper).share()
    async with shared:  # connected for the block (a root's `async with` would do it too)
        assert (await run_marbles(shared, source)).marbles == "-A-B-|"
    failing = hot("-a-#")
    shared = failing.stream.share()
    async with shared:
        rec = await run_marbles(shared, failing)
    assert rec.marbles == "-a-#" and isinstance(rec.error, MarbleError)
