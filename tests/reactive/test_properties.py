"""Property tests: operators agree with the same functions over plain lists, whatever the
batching (cold sources of any batch size, hot streams fed in arbitrary slices)."""

from __future__ import annotations

import itertools

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from haive.dataflow.reactive import Observable, ReactiveStream

ITEMS = st.lists(st.integers(-1000, 1000), max_size=60)
BATCH = st.integers(1, 9)
SETTINGS = settings(max_examples=40, deadline=None)


def chunks(items: list[int], size: int) -> list[list[int]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def cold(items: list[int], batch: int) -> Observable[int]:
    return Observable.from_iterable(items, chunk_size=batch)


def run_hot(build, items: list[int], cuts: list[int]) -> list:
    """Emit ``items`` into a hot stream in slices of the given sizes; collect the output."""

    async def main():
        stream = ReactiveStream[int]()
        out = []
        async with build(stream).subscribe(out.append) as sub:
            rest = items
            for size in itertools.cycle(cuts):
                if not rest:
                    break
                await stream.emit_batch(rest[:size])
                rest = rest[size:]
            await stream.complete()
            await sub.wait()
        return out

    return trio.run(main)


def collect(observable: Observable) -> list:
    return trio.run(observable.to_list)


@SETTINGS
@given(ITEMS, BATCH)
def test_map_agrees_with_map(items, batch):
    assert collect(cold(items, batch).map(lambda x: x * 3 + 1)) == [x * 3 + 1 for x in items]


@SETTINGS
@given(ITEMS, BATCH)
def test_filter_agrees_with_filter(items, batch):
    assert collect(cold(items, batch).filter(lambda x: x % 3 == 0)) == [
        x for x in items if x % 3 == 0
    ]


@SETTINGS
@given(ITEMS, BATCH, st.integers(-5, 5))
def test_scan_agrees_with_accumulate(items, batch, seed):
    expected = list(itertools.accumulate(items, lambda a, b: a - b, initial=seed))[1:]
    assert collect(cold(items, batch).scan(lambda a, b: a - b, seed)) == expected


@SETTINGS
@given(ITEMS, BATCH, st.integers(1, 7))
def test_buffer_agrees_with_chunking(items, batch, size):
    assert collect(cold(items, batch).buffer(size)) == chunks(items, size)


@SETTINGS
@given(ITEMS, BATCH, st.integers(1, 7))
def test_window_agrees_with_chunking(items, batch, size):
    windows = cold(items, batch).window(size).flat_map(lambda w: w.to_list(), max_concurrent=1)
    assert collect(windows) == chunks(items, size)


@SETTINGS
@given(ITEMS, st.lists(st.integers(1, 9), min_size=1, max_size=5), st.integers(1, 7))
def test_fused_chain_on_a_hot_stream_agrees_with_lists(items, cuts, size):
    def build(stream):
        return (
            stream.map(lambda x: x * 2)
            .filter(lambda x: x % 3 != 0)
            .scan(lambda a, b: a + b, 0)
            .buffer(size)
        )

    evens = [x * 2 for x in items if (x * 2) % 3 != 0]
    expected = chunks(list(itertools.accumulate(evens)), size)
    assert run_hot(build, items, cuts) == expected


@SETTINGS
@given(ITEMS, BATCH, st.integers(0, 70), st.integers(0, 70))
def test_skip_take_agree_with_slicing(items, batch, skip, take):
    assert collect(cold(items, batch).skip(skip).take(take)) == items[skip:][:take]
