"""Window engines: the pure, synchronous state of open windows and its transitions.

One engine per window kind assigns items to windows, reports late ones and closes windows
as the watermark (or the clock) passes their end: ``_TimeGrid`` (tumbling and sliding time
windows), ``_Sessions`` (session windows), ``_CountTumbling`` and ``_CountSliding`` (count
windows). ``_engine(window, aggregator)`` picks the one for a window specification.
:class:`~haive.dataflow.state.WindowedAggregateNode` drives them; nothing here awaits.
"""

from __future__ import annotations

import abc
import heapq
import operator
from collections import deque
from typing import Any

from ..errors import ConfigError
from .aggregators import Aggregator
from .window_specs import SessionWindow, SlidingWindow, TumblingWindow, WindowResult, WindowSpec


class _Engine(abc.ABC):
    """Window state and its transitions. ``add`` returns the late items."""

    def __init__(self, agg: Aggregator) -> None:
        self.agg = agg
        self.max_ts = float("-inf")
        self.watermark = float("-inf")

    @abc.abstractmethod
    def add(
        self,
        keys: list[Any],
        tss: list[float],
        items: list[Any],
        lateness: float,
        watermark: float | None = None,
    ) -> list[Any]:
        """Assign items to windows; return the late ones.

        The watermark follows the largest timestamp seen (minus ``lateness``) item by item,
        unless ``watermark`` is given: then it is that, for the whole batch (a node that
        combines several inputs computes it, see :mod:`.watermarks`).
        """

    @abc.abstractmethod
    def close(self, watermark: float) -> list[WindowResult]:
        """Emit every window that ends at or before ``watermark``."""

    @abc.abstractmethod
    def close_all(self) -> list[WindowResult]:
        """Emit every open window (end of input)."""

    def next_deadline(self) -> float | None:
        """When the earliest open window ends (time windows)."""
        return None

    def open_windows(self) -> int:
        return 0

    def state(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k != "agg"}

    def set_state(self, state: dict[str, Any]) -> None:
        vars(self).update(state)


class _TimeGrid(_Engine):
    """Tumbling and sliding time windows: window ``j`` is ``[off + j*every, ... + size)``."""

    def __init__(self, agg: Aggregator, size: float, every: float, offset: float) -> None:
        super().__init__(agg)
        self.size = size
        self.every = every
        self.offset = offset
        self.windows: dict[float, dict[Any, list[Any]]] = {}  # j -> key -> [acc, count]
        self.starts: list[float] = []  # heap of open j

    def _closed_below(self, watermark: float) -> float:
        # Window j is closed iff off + j*every + size <= watermark.
        return (watermark - self.offset - self.size) // self.every + 1

    def add(
        self,
        keys: list[Any],
        tss: list[float],
        items: list[Any],
        lateness: float,
        watermark: float | None = None,
    ) -> list[Any]:
        size, every, off = self.size, self.every, self.offset
        mx = self.max_ts
        fixed = watermark is not None
        wm = watermark if watermark is not None else mx - lateness
        late: list[Any] = []
        groups: dict[tuple[float, Any], list[Any]] = {}
        get = groups.get
        if every == size:  # tumbling: exactly one window per item
            for k, ts, item in zip(keys, tss, items, strict=True):
                if ts > mx:
                    mx = ts
                    if not fixed:
                        wm = mx - lateness
                if ts < wm and (ts - off) // size < (wm - off) // size:
                    late.append(item)
                    continue
                gk = ((ts - off) // size, k)
                group = get(gk)
                if group is None:
                    groups[gk] = [item]
                else:
                    group.append(item)
        else:
            for k, ts, item in zip(keys, tss, items, strict=True):
                if ts > mx:
                    mx = ts
                    if not fixed:
                        wm = mx - lateness
                last = (ts - off) // every
                j = (ts - off - size) // every + 1
                closed_below = self._closed_below(wm)
                missed = False
                while j <= last:
                    if j < closed_below:
                        missed = True
                    else:
                        gk = (j, k)
                        group = get(gk)
                        if group is None:
                            groups[gk] = [item]
                        else:
                            group.append(item)
                    j += 1
                if missed:
                    late.append(item)
        self.max_ts = mx
        self.watermark = wm
        windows = self.windows
        agg = self.agg
        for (j, k), group in groups.items():
            per_key = windows.get(j)
            if per_key is None:
                per_key = windows[j] = {}
                heapq.heappush(self.starts, j)
            slot = per_key.get(k)
            if slot is None:
                per_key[k] = [agg.add(agg.create(), group), len(group)]
            else:
                slot[0] = agg.add(slot[0], group)
                slot[1] += len(group)
        return late

    def _emit(self, j: float) -> list[WindowResult]:
        start = self.offset + j * self.every
        end = start + self.size
        result = self.agg.result
        return [
            WindowResult(k, start, end, result(acc), n)
            for k, (acc, n) in self.windows.pop(j).items()
        ]

    def close(self, watermark: float) -> list[WindowResult]:
        below = self._closed_below(watermark)
        out: list[WindowResult] = []
        starts = self.starts
        while starts and starts[0] < below:
            out.extend(self._emit(heapq.heappop(starts)))
        return out

    def close_all(self) -> list[WindowResult]:
        out: list[WindowResult] = []
        while self.starts:
            out.extend(self._emit(heapq.heappop(self.starts)))
        return out

    def next_deadline(self) -> float | None:
        return self.offset + self.starts[0] * self.every + self.size if self.starts else None

    def open_windows(self) -> int:
        return sum(len(per_key) for per_key in self.windows.values())


class _Session:
    """One open session of one key: ``[start, last + gap)``."""

    __slots__ = ("acc", "count", "dead", "last", "pending", "start")

    def __init__(self, ts: float, item: Any) -> None:
        self.start = ts
        self.last = ts
        self.acc: Any = None
        self.count = 0
        self.pending: list[Any] = [item]
        self.dead = False

    def __getstate__(self) -> tuple[Any, ...]:
        return (self.start, self.last, self.acc, self.count, self.pending, self.dead)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.start, self.last, self.acc, self.count, self.pending, self.dead = state


class _Sessions(_Engine):
    """Session windows: per key, ``[first, last + gap)`` grown by each event within the gap."""

    def __init__(self, agg: Aggregator, gap: float) -> None:
        super().__init__(agg)
        self.gap = gap
        self.sessions: dict[Any, list[_Session]] = {}  # key -> sessions sorted by start
        self.heap: list[tuple[float, int, Any]] = []  # (end, tiebreak, key), lazily stale
        self._tiebreak = 0

    def add(
        self,
        keys: list[Any],
        tss: list[float],
        items: list[Any],
        lateness: float,
        watermark: float | None = None,
    ) -> list[Any]:
        mx = self.max_ts
        fixed = watermark is not None
        wm = watermark if watermark is not None else mx - lateness
        per_key: dict[Any, list[tuple[float, float, Any]]] = {}
        for k, ts, item in zip(keys, tss, items, strict=True):
            if ts > mx:
                mx = ts
                if not fixed:
                    wm = mx - lateness
            entries = per_key.get(k)
            if entries is None:
                per_key[k] = [(ts, wm, item)]
            else:
                entries.append((ts, wm, item))
        self.max_ts = mx
        self.watermark = wm
        late: list[Any] = []
        gap = self.gap
        agg = self.agg
        by_start = operator.attrgetter("start")
        for k, entries in per_key.items():
            entries.sort(key=operator.itemgetter(0))
            sessions = self.sessions.get(k) or []
            touched: list[_Session] = []
            for ts, wm_at, item in entries:
                hits = [s for s in sessions if ts < s.last + gap and s.start < ts + gap]
                if not hits:
                    if ts + gap <= wm_at:
                        late.append(item)
                        continue
                    session = _Session(ts, item)
                    sessions.append(session)
                    sessions.sort(key=by_start)
                    touched.append(session)
                    continue
                session = hits[0]
                for other in hits[1:]:
                    # Two sessions bridged by this event become one.
                    session.start = min(session.start, other.start)
                    session.last = max(session.last, other.last)
                    session.acc = _merge_acc(agg, session.acc, other.acc)
                    session.count += other.count
                    session.pending.extend(other.pending)
                    sessions.remove(other)
                    other.dead = True
                session.start = min(session.start, ts)
                session.last = max(session.last, ts)
                session.pending.append(item)
                touched.append(session)
            for session in touched:
                if session.dead or not session.pending:
                    continue
                pending = session.pending
                session.acc = agg.add(agg.create() if session.acc is None else session.acc, pending)
                session.count += len(pending)
                session.pending = []
                self._tiebreak += 1
                heapq.heappush(self.heap, (session.last + gap, self._tiebreak, k))
            if sessions:
                self.sessions[k] = sessions
        return late

    def _result(self, k: Any, s: _Session) -> WindowResult:
        return WindowResult(k, s.start, s.last + self.gap, self.agg.result(s.acc), s.count)

    def close(self, watermark: float) -> list[WindowResult]:
        out: list[WindowResult] = []
        heap = self.heap
        gap = self.gap
        while heap and heap[0][0] <= watermark:
            _, _, k = heapq.heappop(heap)
            sessions = self.sessions.get(k)
            if not sessions:
                continue
            keep = []
            for s in sessions:
                if s.last + gap <= watermark:
                    out.append(self._result(k, s))
                else:
                    keep.append(s)
            if keep:
                self.sessions[k] = keep
            else:
                del self.sessions[k]
        return out

    def close_all(self) -> list[WindowResult]:
        out = [self._result(k, s) for k, sessions in self.sessions.items() for s in sessions]
        out.sort(key=operator.attrgetter("end"))
        self.sessions.clear()
        self.heap.clear()
        return out

    def next_deadline(self) -> float | None:
        heap = self.heap
        while heap:
            end, _, k = heap[0]
            if any(s.last + self.gap == end for s in self.sessions.get(k, ())):
                return end
            heapq.heappop(heap)
        return None

    def open_windows(self) -> int:
        return sum(len(s) for s in self.sessions.values())


def _merge_acc(agg: Aggregator, a: Any, b: Any) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    return agg.merge(a, b)


class _CountTumbling(_Engine):
    """Every ``n`` items of a key form a window."""

    def __init__(self, agg: Aggregator, n: int) -> None:
        super().__init__(agg)
        self.n = n
        self.open: dict[Any, list[Any]] = {}  # key -> [acc, count, first item number]
        self.seen: dict[Any, int] = {}
        self.ready: list[WindowResult] = []

    def add(
        self,
        keys: list[Any],
        tss: list[float],
        items: list[Any],
        lateness: float,
        watermark: float | None = None,
    ) -> list[Any]:
        groups: dict[Any, list[Any]] = {}
        for k, item in zip(keys, items, strict=True):
            group = groups.get(k)
            if group is None:
                groups[k] = [item]
            else:
                group.append(item)
        agg, n = self.agg, self.n
        for k, group in groups.items():
            slot = self.open.get(k)
            seen = self.seen.get(k, 0)
            while group:
                if slot is None:
                    slot = [agg.create(), 0, seen]
                take = group[: n - slot[1]]
                group = group[len(take) :]
                slot[0] = agg.add(slot[0], take)
                slot[1] += len(take)
                seen += len(take)
                if slot[1] == n:
                    self.ready.append(WindowResult(k, slot[2], seen, agg.result(slot[0]), n))
                    slot = None
            self.seen[k] = seen
            if slot is None:
                self.open.pop(k, None)
            else:
                self.open[k] = slot
        return []

    def close(self, watermark: float) -> list[WindowResult]:
        out, self.ready = self.ready, []
        return out

    def close_all(self) -> list[WindowResult]:
        out = self.close(0.0)
        result = self.agg.result
        for k, (acc, count, first) in self.open.items():
            out.append(WindowResult(k, first, first + count, result(acc), count))
        self.open.clear()
        return out

    def open_windows(self) -> int:
        return len(self.open)


class _CountSliding(_Engine):
    """Every ``every`` items of a key, the last ``size`` of them form a window."""

    def __init__(self, agg: Aggregator, size: int, every: int) -> None:
        super().__init__(agg)
        self.size = size
        self.every = every
        self.recent: dict[Any, deque[Any]] = {}
        self.since: dict[Any, int] = {}
        self.seen: dict[Any, int] = {}
        self.ready: list[WindowResult] = []

    def _window(self, k: Any) -> WindowResult:
        items = list(self.recent[k])
        agg = self.agg
        seen = self.seen[k]
        return WindowResult(
            k, seen - len(items), seen, agg.result(agg.add(agg.create(), items)), len(items)
        )

    def add(
        self,
        keys: list[Any],
        tss: list[float],
        items: list[Any],
        lateness: float,
        watermark: float | None = None,
    ) -> list[Any]:
        for k, item in zip(keys, items, strict=True):
            recent = self.recent.get(k)
            if recent is None:
                recent = self.recent[k] = deque(maxlen=self.size)
            recent.append(item)
            self.seen[k] = self.seen.get(k, 0) + 1
            since = self.since.get(k, 0) + 1
            if since == self.every:
                self.ready.append(self._window(k))
                since = 0
            self.since[k] = since
        return []

    def close(self, watermark: float) -> list[WindowResult]:
        out, self.ready = self.ready, []
        return out

    def close_all(self) -> list[WindowResult]:
        out = self.close(0.0)
        for k, since in self.since.items():
            if since:
                out.append(self._window(k))
        self.recent.clear()
        self.since.clear()
        return out

    def open_windows(self) -> int:
        return sum(1 for since in self.since.values() if since)

    def state(self) -> dict[str, Any]:
        state = super().state()
        state["recent"] = {k: (list(d), d.maxlen) for k, d in self.recent.items()}
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        state = dict(state)
        recent = state.pop("recent")
        super().set_state(state)
        self.recent = {k: deque(items, maxlen=maxlen) for k, (items, maxlen) in recent.items()}


def _engine(window: WindowSpec, agg: Aggregator) -> _Engine:
    if isinstance(window, TumblingWindow):
        if window.count is not None:
            return _CountTumbling(agg, window.count)
        assert window.size is not None
        return _TimeGrid(agg, window.size, window.size, window.offset)
    if isinstance(window, SlidingWindow):
        if window.count is not None:
            assert isinstance(window.every, int)
            return _CountSliding(agg, window.count, window.every)
        # __attrs_post_init__ converted a time window's ``every`` to float seconds.
        assert window.size is not None and isinstance(window.every, float)
        return _TimeGrid(agg, window.size, window.every, window.offset)
    if isinstance(window, SessionWindow):
        return _Sessions(agg, window.gap)
    raise ConfigError(
        f"window must be a TumblingWindow, SlidingWindow or SessionWindow, got {window!r}"
    )
