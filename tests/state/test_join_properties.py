"""Stream-stream joins against a simple reference, on random inputs (hypothesis).

Events are fed in random batches, out of order, with late ones. The reference computes the
watermark before each batch on its own (min over the two sides of their largest time, minus
the lateness), decides which events are late, and pairs the on-time ones by brute force:
every (left, right) of a key within the interval, or in the same window. The node must
emit exactly those pairs (and the unmatched items of left/outer joins), and route exactly
the late events.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Any

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from haive.dataflow.runtime.nodes import NodeContext
from haive.dataflow.state import (
    IntervalJoin,
    JoinNode,
    SessionWindow,
    SlidingWindow,
    TumblingWindow,
)

SIDES = ("L", "R")


@st.composite
def streams(draw: st.DrawFn, max_size: int = 40) -> tuple[list[dict[str, Any]], list[int]]:
    raw = draw(
        st.lists(
            st.tuples(st.sampled_from(SIDES), st.integers(0, 2), st.integers(0, 30)),
            max_size=max_size,
        )
    )
    events = [{"side": s, "k": k, "ts": float(t), "id": i} for i, (s, k, t) in enumerate(raw)]
    cuts = draw(st.lists(st.integers(1, 6), min_size=len(events), max_size=len(events)))
    sizes: list[int] = []
    left = len(events)
    for cut in cuts:
        if left <= 0:
            break
        sizes.append(min(cut, left))
        left -= sizes[-1]
    return events, sizes


def batches_of(events: list[dict[str, Any]], sizes: list[int]) -> list[list[dict[str, Any]]]:
    out, at = [], 0
    for n in sizes:
        out.append(events[at : at + n])
        at += n
    return out


def watermarks(batches: list[list[dict[str, Any]]], lateness: float) -> list[float]:
    """The watermark each batch is judged against (before it)."""
    maxes = {"L": -math.inf, "R": -math.inf}
    marks = []
    for batch in batches:
        marks.append(min(maxes.values()) - lateness)
        for e in batch:
            maxes[e["side"]] = max(maxes[e["side"]], e["ts"])
    return marks


def run_node(node: JoinNode, batches: list[list[dict[str, Any]]]) -> tuple[Counter, list[int]]:
    late: list[dict[str, Any]] = []
    node.on_late = late.extend

    async def main() -> list[Any]:
        ctx = NodeContext(node.name)
        out = []
        for batch in batches:
            out += await node.process_batch(batch, ctx)
        return out + await node.flush(ctx)

    results = trio.run(main)
    got = Counter(
        (
            r.key,
            None if r.left is None else r.left["id"],
            None if r.right is None else r.right["id"],
            r.start,
            r.end,
        )
        for r in results
    )
    return got, sorted(e["id"] for e in late)


def unmatched(
    pairs: Counter, members: list[dict[str, Any]], how: str, window: tuple[Any, Any]
) -> Counter:
    """The (item, None) / (None, item) rows of a left or outer join."""
    out: Counter = Counter()
    paired_l = {p[1] for p in pairs}
    paired_r = {p[2] for p in pairs}
    for e in members:
        if e["side"] == "L" and how != "inner" and e["id"] not in paired_l:
            out[(e["k"], e["id"], None, *window)] += 1
        if e["side"] == "R" and how == "outer" and e["id"] not in paired_r:
            out[(e["k"], None, e["id"], *window)] += 1
    return out


def node_for(window: Any, how: str, lateness: float) -> JoinNode:
    return JoinNode(
        name="j",
        window=window,
        key="k",
        how=how,
        side="side",
        left="L",
        right="R",
        timestamp="ts",
        allowed_lateness=lateness,
    )


hows = st.sampled_from(("inner", "left", "outer"))


@settings(max_examples=150, deadline=None)
@given(
    data=streams(),
    bounds=st.tuples(st.integers(-6, 6), st.integers(-6, 6)).map(sorted),
    lateness=st.integers(0, 5),
    how=hows,
)
def test_interval_join_matches_reference(data, bounds, lateness, how):
    events, sizes = data
    lower, upper = bounds
    batches = batches_of(events, sizes)
    marks = watermarks(batches, lateness)
    on_time, late = [], []
    for batch, wm in zip(batches, marks, strict=True):
        for e in batch:
            (late if e["ts"] < wm else on_time).append(e)
    want: Counter = Counter()
    for a in on_time:
        for b in on_time:
            if (
                a["side"] == "L"
                and b["side"] == "R"
                and a["k"] == b["k"]
                and a["ts"] + lower <= b["ts"] <= a["ts"] + upper
            ):
                want[(a["k"], a["id"], b["id"], None, None)] += 1
    want += unmatched(want, on_time, how, (None, None))

    got, got_late = run_node(node_for(IntervalJoin(lower, upper), how, lateness), batches)
    assert got == want
    assert got_late == sorted(e["id"] for e in late)


def grid_windows(ts: float, size: int, every: int) -> list[tuple[float, float]]:
    """The [start, end) windows of a time grid holding ``ts``."""
    first = math.floor((ts - size) / every) + 1
    last = math.floor(ts / every)
    return [(j * every, j * every + size) for j in range(first, last + 1)]


@settings(max_examples=150, deadline=None)
@given(
    data=streams(),
    shape=st.tuples(st.integers(1, 8), st.integers(1, 8)).map(sorted),
    sliding=st.booleans(),
    lateness=st.integers(0, 5),
    how=hows,
)
def test_window_join_matches_reference(data, shape, sliding, lateness, how):
    events, sizes = data
    every, size = shape
    if not sliding:
        every = size
    window = SlidingWindow(size, every) if sliding else TumblingWindow(size)
    batches = batches_of(events, sizes)
    marks = watermarks(batches, lateness)
    members: dict[tuple[Any, float, float], list[dict[str, Any]]] = defaultdict(list)
    late = []
    for batch, wm in zip(batches, marks, strict=True):
        for e in batch:
            windows = grid_windows(e["ts"], size, every)
            open_ = [w for w in windows if w[1] > wm]
            if len(open_) < len(windows):
                late.append(e)  # missed a window that had closed
            for start, end in open_:
                members[(e["k"], float(start), float(end))].append(e)
    want: Counter = Counter()
    for (k, start, end), group in members.items():
        pairs: Counter = Counter(
            (k, a["id"], b["id"], start, end)
            for a in group
            for b in group
            if a["side"] == "L" and b["side"] == "R"
        )
        want += pairs + unmatched(pairs, group, how, (start, end))

    got, got_late = run_node(node_for(window, how, lateness), batches)
    assert got == want
    assert got_late == sorted(e["id"] for e in late)


@settings(max_examples=150, deadline=None)
@given(data=streams(), gap=st.integers(1, 6), how=hows)
def test_session_join_matches_reference(data, gap, how):
    # Lateness beyond the input's span: out of order but never late, every session closes
    # at the end of input; sessions form over both sides of a key.
    events, sizes = data
    batches = batches_of(events, sizes)
    by_key: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        by_key[e["k"]].append(e)
    want: Counter = Counter()
    for k, items in by_key.items():
        items.sort(key=lambda e: e["ts"])
        sessions: list[list[dict[str, Any]]] = []
        for e in items:
            if sessions and e["ts"] < sessions[-1][-1]["ts"] + gap:
                sessions[-1].append(e)
            else:
                sessions.append([e])
        for group in sessions:
            start, end = group[0]["ts"], group[-1]["ts"] + gap
            pairs: Counter = Counter(
                (k, a["id"], b["id"], start, end)
                for a in group
                for b in group
                if a["side"] == "L" and b["side"] == "R"
            )
            want += pairs + unmatched(pairs, group, how, (start, end))

    got, got_late = run_node(node_for(SessionWindow(gap), how, 1000), batches)
    assert got == want
    assert got_late == []
