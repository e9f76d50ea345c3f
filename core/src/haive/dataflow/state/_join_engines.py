"""Join engines: the pure, synchronous state of a stream-stream join.

``_WindowJoin`` keeps both sides of each (key, window) in the window engines of
:mod:`._window_engines` (a window's value is its list of ``(side, item)``) and pairs them
when the window closes. ``_IntervalJoin`` keeps each side's items per key until no partner
can come any more and pairs an item with the other side's as it arrives. Both take the
watermark from the node (see :mod:`.watermarks`); nothing here awaits.
"""

from __future__ import annotations

import heapq
from typing import Any

from ._window_engines import _Engine, _engine
from .aggregators import Collect
from .join_specs import IntervalJoin, JoinResult
from .window_specs import WindowResult, WindowSpec

LEFT, RIGHT = 0, 1


class _WindowJoin:
    """Tumbling, sliding and session window joins: pairs per closed (key, window)."""

    def __init__(self, window: WindowSpec, how: str) -> None:
        self.windows: _Engine = _engine(window, Collect())
        self.how = how

    def add(
        self, sides: list[int], keys: list[Any], tss: list[float], items: list[Any], wm: float
    ) -> tuple[list[JoinResult], list[int]]:
        """Add a batch at watermark ``wm``; returns (pairs ready now: none, late positions)."""
        tagged = [(side, i, item) for i, (side, item) in enumerate(zip(sides, items, strict=True))]
        late = self.windows.add(keys, tss, tagged, 0.0, watermark=wm)
        return [], [i for _, i, _ in late]

    def _pairs(self, result: WindowResult) -> list[JoinResult]:
        lefts = [item for side, _, item in result.value if side == LEFT]
        rights = [item for side, _, item in result.value if side == RIGHT]
        k, start, end = result.key, result.start, result.end
        if lefts and rights:
            return [JoinResult(k, lt, rt, start, end) for lt in lefts for rt in rights]
        if lefts and self.how != "inner":
            return [JoinResult(k, lt, None, start, end) for lt in lefts]
        if rights and self.how == "outer":
            return [JoinResult(k, None, rt, start, end) for rt in rights]
        return []

    def close(self, wm: float) -> list[JoinResult]:
        self.windows.watermark = wm
        return [pair for result in self.windows.close(wm) for pair in self._pairs(result)]

    def close_all(self) -> list[JoinResult]:
        return [pair for result in self.windows.close_all() for pair in self._pairs(result)]

    def open_items(self) -> int:
        return self.windows.open_windows()

    def state(self) -> dict[str, Any]:
        return self.windows.state()

    def set_state(self, state: dict[str, Any]) -> None:
        self.windows.set_state(state)


class _IntervalJoin:
    """Interval joins: left ``t`` pairs with right ``t + lower .. t + upper`` of its key.

    A side's entry is ``[ts, item, matched]`` under ``(key, sequence number)``; the heaps
    hold ``(expiry, seq, side, key)``: a left item can meet no new right once the
    watermark passes ``ts + upper``, a right one no new left once it passes ``ts - lower``.
    """

    def __init__(self, interval: IntervalJoin, how: str) -> None:
        self.lower = interval.lower
        self.upper = interval.upper
        self.how = how
        self.sides: tuple[dict[Any, dict[int, list[Any]]], dict[Any, dict[int, list[Any]]]] = (
            {},
            {},
        )
        self.expiry: list[tuple[float, int, int, Any]] = []
        self.seq = 0

    def add(
        self, sides: list[int], keys: list[Any], tss: list[float], items: list[Any], wm: float
    ) -> tuple[list[JoinResult], list[int]]:
        out: list[JoinResult] = []
        late: list[int] = []
        lower, upper = self.lower, self.upper
        stores = self.sides
        push, expiry = heapq.heappush, self.expiry
        seq = self.seq
        for i, (side, k, ts, item) in enumerate(zip(sides, keys, tss, items, strict=True)):
            if ts < wm:
                late.append(i)
                continue
            entry = [ts, item, False]
            others = stores[1 - side].get(k)
            if others:
                if side == LEFT:
                    lo, hi = ts + lower, ts + upper
                    for other in others.values():
                        if lo <= other[0] <= hi:
                            out.append(JoinResult(k, item, other[1]))
                            other[2] = entry[2] = True
                else:
                    lo, hi = ts - upper, ts - lower
                    for other in others.values():
                        if lo <= other[0] <= hi:
                            out.append(JoinResult(k, other[1], item))
                            other[2] = entry[2] = True
            seq += 1
            mine = stores[side].get(k)
            if mine is None:
                stores[side][k] = {seq: entry}
            else:
                mine[seq] = entry
            push(expiry, (ts + upper if side == LEFT else ts - lower, seq, side, k))
        self.seq = seq
        return out, late

    def close(self, wm: float) -> list[JoinResult]:
        """Forget the items no partner can reach any more (expiry < ``wm``); emit the
        unmatched ones of a left or outer join."""
        out: list[JoinResult] = []
        heap = self.expiry
        pop = heapq.heappop
        stores = self.sides
        keep_left = self.how != "inner"
        keep_right = self.how == "outer"
        while heap and heap[0][0] < wm:
            _, seq, side, k = pop(heap)
            per_key = stores[side][k]
            entry = per_key.pop(seq)
            if not per_key:
                del stores[side][k]
            if not entry[2] and (keep_right if side else keep_left):
                out.append(
                    JoinResult(k, entry[1], None) if side == LEFT else JoinResult(k, None, entry[1])
                )
        return out

    def close_all(self) -> list[JoinResult]:
        return self.close(float("inf"))

    def open_items(self) -> int:
        return len(self.expiry)

    def state(self) -> dict[str, Any]:
        return {"sides": self.sides, "expiry": self.expiry, "seq": self.seq}

    def set_state(self, state: dict[str, Any]) -> None:
        self.sides = state["sides"]
        self.expiry = state["expiry"]
        self.seq = state["seq"]


JoinEngine = _WindowJoin | _IntervalJoin


def join_engine(window: WindowSpec | IntervalJoin, how: str) -> JoinEngine:
    if isinstance(window, IntervalJoin):
        return _IntervalJoin(window, how)
    return _WindowJoin(window, how)
