"""Windowed aggregation: tumbling, sliding and session windows over keyed items.

Windows are measured by time (``TumblingWindow("1s")``) or by count
(``TumblingWindow(count=100)``). Time is *event time* (read from each item, default
``item["timestamp"]`` / ``item.timestamp``) or *processing time* (trio's clock when the item
arrives). In event time the watermark is the largest timestamp seen minus
``allowed_lateness``; a window closes (is emitted) once the watermark passes its end, and an
event whose window already closed is *late*: counted in ``late_events`` and handed to
``on_late`` if set, never silently mixed into a wrong window. At the end of the input every
open window is emitted. In processing time windows close on a timer.

The work is done per batch with dicts (items grouped by window and key first, then each
group folded into its window at once), so there is no per-item task switch and an
aggregator sees lists of items (``Sum`` sums a list at C speed).

Example: per-user event counts and value sums in 1-second event-time windows::

    >>> import trio
    >>> from haive.dataflow.nodes import NodeContext
    >>> node = WindowedAggregateNode(
    ...     name="per_user", window=TumblingWindow("1s"), key="user", timestamp="ts",
    ...     aggregate=Sum("value"))
    >>> events = [{"user": "a", "ts": 0.1, "value": 1}, {"user": "b", "ts": 0.5, "value": 2},
    ...           {"user": "a", "ts": 0.9, "value": 3}, {"user": "a", "ts": 1.2, "value": 4}]
    >>> async def main():
    ...     ctx = NodeContext("per_user")
    ...     return await node.process_batch(events, ctx) + await node.flush(ctx)
    >>> for result in trio.run(main):
    ...     print(result.key, result.start, result.end, result.count, result.value)
    a 0.0 1.0 2 4
    b 0.0 1.0 1 2
    a 1.0 2.0 1 4
"""

from __future__ import annotations

import abc
import heapq
import operator
import pickle
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from typing import Any, ClassVar, Literal

import attrs
import trio

from ..backpressure import BoundedBuffer
from ..errors import ConfigError
from ..nodes import Emit, Node, NodeContext, check_error_policy, is_async_callable
from ..retry import RetryPolicy
from ..sinks import StreamSink
from ..units import parse_duration

TimeMode = Literal["event", "processing"]

# -- field access ---------------------------------------------------------------------------


class FieldGetter:
    """Reads one field from items that are mappings (``item[name]``) or objects (attribute).

    ``many(items)`` reads a whole batch at C speed when the items are dicts.

    Example::

        >>> FieldGetter("n").many([{"n": 1}, {"n": 2}])
        [1, 2]
    """

    __slots__ = ("_attr", "_item", "fn", "name")

    def __init__(self, spec: str | Callable[[Any], Any] | None) -> None:
        self.name = spec if isinstance(spec, str) else getattr(spec, "__name__", "value")
        self.fn: Callable[[Any], Any] | None = None
        if spec is None:
            self.fn = _identity
        elif callable(spec):
            self.fn = spec
        elif not isinstance(spec, str) or not spec:
            raise ConfigError(f"a field must be a name or a callable, got {spec!r}")
        self._item = operator.itemgetter(self.name)
        self._attr = operator.attrgetter(self.name)

    def __call__(self, item: Any) -> Any:
        if self.fn is not None:
            return self.fn(item)
        if isinstance(item, dict):
            return item[self.name]
        try:
            return self._attr(item)
        except AttributeError:
            try:
                return item[self.name]
            except (TypeError, KeyError, IndexError):
                raise KeyError(
                    f"item has no field {self.name!r}: {type(item).__name__} {item!r:.80}"
                ) from None

    def many(self, items: list[Any]) -> list[Any]:
        """The field of every item (raises on the first item that lacks it)."""
        fn = self.fn
        if fn is _identity:
            return items
        if fn is not None:
            return list(map(fn, items))
        if items and type(items[0]) is dict:
            try:
                return list(map(self._item, items))
            except (KeyError, TypeError):
                pass  # a non-dict or an item without the field: the slow path names it
        return list(map(self, items))


def _identity(item: Any) -> Any:
    return item


# -- aggregators ----------------------------------------------------------------------------


class Aggregator(abc.ABC):
    """Folds the items of a window into an accumulator, batch by batch.

    ``add`` receives a *list* of items (all for the same window) so built-ins can fold at C
    speed; ``merge`` combines two accumulators (session windows merging); ``result`` turns
    the accumulator into the emitted value.

    Example: the largest item per window::

        >>> class Largest(Aggregator):
        ...     def create(self): return None
        ...     def add(self, acc, items):
        ...         top = max(items)
        ...         return top if acc is None else max(acc, top)
        ...     def merge(self, a, b): return b if a is None else a if b is None else max(a, b)
        >>> agg = Largest()
        >>> agg.result(agg.add(agg.create(), [3, 9, 4]))
        9
    """

    @abc.abstractmethod
    def create(self) -> Any:
        """A new, empty accumulator."""

    @abc.abstractmethod
    def add(self, acc: Any, items: list[Any]) -> Any:
        """The accumulator after adding ``items``."""

    @abc.abstractmethod
    def merge(self, a: Any, b: Any) -> Any:
        """One accumulator holding what ``a`` and ``b`` hold."""

    def result(self, acc: Any) -> Any:
        """The value emitted for a closed window (default: the accumulator)."""
        return acc


class Count(Aggregator):
    """The number of items in the window.

    Example::

        >>> Count().add(Count().create(), ["a", "b"])
        2
    """

    def create(self) -> int:
        return 0

    def add(self, acc: int, items: list[Any]) -> int:
        return acc + len(items)

    def merge(self, a: int, b: int) -> int:
        return a + b


class _FieldAggregator(Aggregator):
    """An aggregator of one ``field`` of the items (a name, a function, or None for the
    items themselves; see :class:`FieldGetter`)."""

    def __init__(self, field: str | Callable[[Any], Any] | None = None) -> None:
        self.field = FieldGetter(field)


class Sum(_FieldAggregator):
    """The sum of ``field`` (a name or a function; default the items themselves).

    Example::

        >>> Sum("v").add(0, [{"v": 2}, {"v": 3}])
        5
    """

    def create(self) -> Any:
        return 0

    def add(self, acc: Any, items: list[Any]) -> Any:
        return acc + sum(self.field.many(items))

    def merge(self, a: Any, b: Any) -> Any:
        return a + b


class Mean(_FieldAggregator):
    """The mean of ``field`` (None for an empty window).

    Example::

        >>> m = Mean()
        >>> m.result(m.add(m.create(), [1, 2, 6]))
        3.0
    """

    def create(self) -> tuple[float, int]:
        return (0.0, 0)

    def add(self, acc: tuple[float, int], items: list[Any]) -> tuple[float, int]:
        return (acc[0] + sum(self.field.many(items)), acc[1] + len(items))

    def merge(self, a: tuple[float, int], b: tuple[float, int]) -> tuple[float, int]:
        return (a[0] + b[0], a[1] + b[1])

    def result(self, acc: tuple[float, int]) -> float | None:
        return acc[0] / acc[1] if acc[1] else None


class Min(_FieldAggregator):
    """The smallest ``field`` value.

    Example::

        >>> Min().add(None, [3, 1, 2])
        1
    """

    def create(self) -> Any:
        return None

    def add(self, acc: Any, items: list[Any]) -> Any:
        low = min(self.field.many(items))
        return low if acc is None or low < acc else acc

    def merge(self, a: Any, b: Any) -> Any:
        if a is None:
            return b
        return a if b is None or a <= b else b


class Max(_FieldAggregator):
    """The largest ``field`` value.

    Example::

        >>> Max().add(None, [3, 1, 2])
        3
    """

    def create(self) -> Any:
        return None

    def add(self, acc: Any, items: list[Any]) -> Any:
        high = max(self.field.many(items))
        return high if acc is None or high > acc else acc

    def merge(self, a: Any, b: Any) -> Any:
        if a is None:
            return b
        return a if b is None or a >= b else b


class Collect(Aggregator):
    """The window's items as a list, or ``fn(items)`` when a function is given.

    Example::

        >>> c = Collect(len)
        >>> c.result(c.add(c.create(), ["a", "b"]))
        2
    """

    def __init__(self, fn: Callable[[list[Any]], Any] | None = None) -> None:
        if fn is not None and not callable(fn):
            raise ConfigError(f"Collect: fn must be callable, got {fn!r}")
        self.fn = fn

    def create(self) -> list[Any]:
        return []

    def add(self, acc: list[Any], items: list[Any]) -> list[Any]:
        acc.extend(items)
        return acc

    def merge(self, a: list[Any], b: list[Any]) -> list[Any]:
        return a + b

    def result(self, acc: list[Any]) -> Any:
        return acc if self.fn is None else self.fn(acc)


class Fold(Aggregator):
    """Per-item folding: ``fold(acc, item)`` from ``initial()``; ``merge`` for sessions.

    Example::

        >>> f = Fold(set, lambda acc, item: acc | {item}, lambda a, b: a | b)
        >>> sorted(f.add(f.create(), ["x", "y", "x"]))
        ['x', 'y']
    """

    def __init__(
        self,
        initial: Callable[[], Any],
        fold: Callable[[Any, Any], Any],
        merge: Callable[[Any, Any], Any] | None = None,
    ) -> None:
        if not callable(initial) or not callable(fold):
            raise ConfigError("Fold: initial and fold must be callables")
        self.initial = initial
        self.fold = fold
        self.merge_fn = merge

    def create(self) -> Any:
        return self.initial()

    def add(self, acc: Any, items: list[Any]) -> Any:
        fold = self.fold
        for item in items:
            acc = fold(acc, item)
        return acc

    def merge(self, a: Any, b: Any) -> Any:
        if self.merge_fn is None:
            raise ConfigError("Fold: session windows merge accumulators; give merge=")
        return self.merge_fn(a, b)


# -- window specifications ------------------------------------------------------------------


def _opt_duration(value: float | str | None) -> float | None:
    return None if value is None else parse_duration(value, what="window size")


def _positive_int(value: int | None, what: str) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ConfigError(f"{what} must be an int >= 1, got {value!r}")


@attrs.frozen
class TumblingWindow:
    """Fixed, non-overlapping windows: ``TumblingWindow("1s")`` or ``TumblingWindow(count=100)``.

    Time windows are aligned to ``offset`` (seconds; windows are ``[offset + k*size, ...)``).

    Example::

        >>> TumblingWindow("5m").size, TumblingWindow(count=10).count
        (300.0, 10)
    """

    size: float | None = attrs.field(default=None, converter=_opt_duration)
    count: int | None = attrs.field(default=None, kw_only=True)
    offset: float = attrs.field(default=0.0, kw_only=True, converter=float)

    def __attrs_post_init__(self) -> None:
        if (self.size is None) == (self.count is None):
            raise ConfigError("TumblingWindow: give a size (time) or count=N, not both")
        if self.size is not None and self.size <= 0:
            raise ConfigError(f"TumblingWindow: size must be positive, got {self.size!r}")
        _positive_int(self.count, "TumblingWindow: count")


@attrs.frozen
class SlidingWindow:
    """Overlapping windows of ``size`` starting every ``every``: ``SlidingWindow("10s", "5s")``.

    By count: ``SlidingWindow(count=100, every=10)`` emits, every 10 items of a key, the
    last (up to) 100 of them.

    Example::

        >>> w = SlidingWindow("1m", every="10s")
        >>> w.size, w.every
        (60.0, 10.0)
    """

    size: float | None = attrs.field(default=None, converter=_opt_duration)
    every: float | None = attrs.field(default=None)
    count: int | None = attrs.field(default=None, kw_only=True)
    offset: float = attrs.field(default=0.0, kw_only=True, converter=float)

    def __attrs_post_init__(self) -> None:
        if (self.size is None) == (self.count is None):
            raise ConfigError("SlidingWindow: give a size (time) or count=N, not both")
        if self.every is None:
            raise ConfigError("SlidingWindow: give every= (how often a window starts)")
        if self.size is not None:
            every = parse_duration(self.every, what="SlidingWindow every")
            if self.size <= 0 or every <= 0:
                raise ConfigError("SlidingWindow: size and every must be positive")
            object.__setattr__(self, "every", every)
        else:
            _positive_int(self.count, "SlidingWindow: count")
            _positive_int(self.every, "SlidingWindow: every (for count windows)")  # type: ignore[arg-type]


def _gap(value: float | str) -> float:
    return parse_duration(value, what="session gap")


@attrs.frozen
class SessionWindow:
    """Per-key sessions: a window closes after ``gap`` without events of its key.

    Example::

        >>> SessionWindow("30m").gap
        1800.0
    """

    gap: float = attrs.field(converter=_gap)

    def __attrs_post_init__(self) -> None:
        if self.gap <= 0:
            raise ConfigError(f"SessionWindow: gap must be positive, got {self.gap!r}")


WindowSpec = TumblingWindow | SlidingWindow | SessionWindow


@attrs.frozen(slots=True)
class WindowResult:
    """One closed window of one key: ``[start, end)`` (seconds, or item numbers for count
    windows), the aggregate ``value`` and how many items it holds.

    Example::

        >>> WindowResult("a", 0.0, 1.0, 6, 3).to_dict()["value"]
        6
    """

    key: Any
    start: float
    end: float
    value: Any
    count: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "start": self.start,
            "end": self.end,
            "value": self.value,
            "count": self.count,
        }


# -- window engines (pure, synchronous; one per kind) ---------------------------------------


class _Engine(abc.ABC):
    """Window state and its transitions. ``add`` returns the late items."""

    def __init__(self, agg: Aggregator) -> None:
        self.agg = agg
        self.max_ts = float("-inf")
        self.watermark = float("-inf")

    @abc.abstractmethod
    def add(
        self, keys: list[Any], tss: list[float], items: list[Any], lateness: float
    ) -> list[Any]:
        """Assign items to windows; return the late ones."""

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
        self, keys: list[Any], tss: list[float], items: list[Any], lateness: float
    ) -> list[Any]:
        size, every, off = self.size, self.every, self.offset
        mx = self.max_ts
        wm = mx - lateness
        late: list[Any] = []
        groups: dict[tuple[float, Any], list[Any]] = {}
        get = groups.get
        if every == size:  # tumbling: exactly one window per item
            for k, ts, item in zip(keys, tss, items, strict=True):
                if ts > mx:
                    mx = ts
                    wm = mx - lateness
                elif ts < wm and (ts - off) // size < (wm - off) // size:
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
        self, keys: list[Any], tss: list[float], items: list[Any], lateness: float
    ) -> list[Any]:
        mx = self.max_ts
        wm = mx - lateness
        per_key: dict[Any, list[tuple[float, float, Any]]] = {}
        for k, ts, item in zip(keys, tss, items, strict=True):
            if ts > mx:
                mx = ts
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
        self, keys: list[Any], tss: list[float], items: list[Any], lateness: float
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
        self, keys: list[Any], tss: list[float], items: list[Any], lateness: float
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
        assert window.size is not None and window.every is not None
        return _TimeGrid(agg, window.size, float(window.every), window.offset)
    if isinstance(window, SessionWindow):
        return _Sessions(agg, window.gap)
    raise ConfigError(
        f"window must be a TumblingWindow, SlidingWindow or SessionWindow, got {window!r}"
    )


# -- the node -------------------------------------------------------------------------------

LateHandler = Callable[[list[Any]], Any] | StreamSink


@attrs.define(eq=False)
class WindowedAggregateNode(Node):
    """Aggregates keyed items over tumbling, sliding or session windows; emits WindowResults.

    ``key`` (a field name or function; None = one window for the whole stream) partitions
    the stream; ``aggregate`` is an :class:`Aggregator` (``Count()``, ``Sum("value")``,
    ``Mean``, ``Min``, ``Max``, ``Collect(fn)``, ``Fold``) or a function of the window's item
    list. ``time="event"`` reads ``timestamp`` (field name or function, seconds) from each
    item; ``time="processing"`` uses trio's clock at arrival and closes windows on a timer.
    ``allowed_lateness`` (event time) holds windows open that much longer for stragglers;
    events for windows already closed are counted in ``late_events`` and given to
    ``on_late`` (a function of the list of late items, sync or async, or a StreamSink).

    Its state (open windows, watermark) is saved by pipeline checkpoints.

    Example: see :mod:`haive.dataflow.state.windows`.
    """

    PLUGIN_NAME: ClassVar[str] = "window"
    name: str
    window: WindowSpec
    aggregate: Aggregator | Callable[[list[Any]], Any] = attrs.field(factory=Count)
    key: str | Callable[[Any], Hashable] | None = None
    timestamp: str | Callable[[Any], float] = "timestamp"
    time: TimeMode = "event"
    allowed_lateness: float | str = 0.0
    on_late: LateHandler | None = None
    emit_partial: bool = True
    on_error: str | None = None
    retry: RetryPolicy | None = None
    late_events: int = attrs.field(init=False, default=0)
    windows_emitted: int = attrs.field(init=False, default=0)
    _engine: _Engine = attrs.field(init=False)
    _key: FieldGetter | None = attrs.field(init=False, default=None)
    _ts: FieldGetter = attrs.field(init=False)
    _lateness: float = attrs.field(init=False, default=0.0)
    _wake: trio.Event | None = attrs.field(init=False, default=None)
    _late_async: bool = attrs.field(init=False, default=False)
    _event_time: bool = attrs.field(init=False, default=True)
    _stale: bool = attrs.field(init=False, default=False)

    def __attrs_post_init__(self) -> None:
        where = f"WindowedAggregateNode {self.name!r}"
        check_error_policy(self.on_error, where)
        if self.time not in ("event", "processing"):
            raise ConfigError(f"{where}: time must be 'event' or 'processing', got {self.time!r}")
        agg = self.aggregate
        if not isinstance(agg, Aggregator):
            if not callable(agg):
                raise ConfigError(f"{where}: aggregate must be an Aggregator or a function")
            if is_async_callable(agg):
                raise ConfigError(f"{where}: aggregate functions must be synchronous")
            agg = Collect(agg)
        self._engine = _engine(self.window, agg)
        self._lateness = parse_duration(self.allowed_lateness, what=f"{where}: allowed_lateness")
        if self._lateness and self.time == "processing":
            raise ConfigError(f"{where}: allowed_lateness only applies to event time")
        if (
            isinstance(self.window, SessionWindow)
            and isinstance(agg, Fold)
            and agg.merge_fn is None
        ):
            raise ConfigError(f"{where}: session windows merge accumulators; give Fold(merge=...)")
        self._key = None if self.key is None else FieldGetter(self.key)
        self._ts = FieldGetter(self.timestamp)
        if self.on_late is not None and not (
            isinstance(self.on_late, StreamSink) or callable(self.on_late)
        ):
            raise ConfigError(f"{where}: on_late must be a function or a StreamSink")
        self._late_async = self.on_late is not None and is_async_callable(self.on_late)
        # Count windows never look at time.
        self._event_time = self.time == "event" and getattr(self.window, "count", None) is None

    @property
    def watermark(self) -> float:
        """Event time up to which windows are complete (max timestamp - allowed lateness)."""
        return self._engine.watermark

    def open_windows(self) -> int:
        """How many (key, window) pairs are open."""
        return self._engine.open_windows()

    # -- processing -----------------------------------------------------------------------
    async def _extract(
        self, batch: list[Any], ctx: NodeContext
    ) -> tuple[list[Any], list[Any], list[float]]:
        """(items, keys, timestamps) without the items whose key or timestamp is unreadable."""
        keyf, tsf = self._key, self._ts
        processing = not self._event_time
        try:
            keys = [None] * len(batch) if keyf is None else keyf.many(batch)
            if processing:
                tss = [trio.current_time()] * len(batch)
            else:
                tss = tsf.many(batch)
                if tss and not isinstance(tss[0], int | float):
                    tss = [_seconds(t) for t in tss]
            return batch, keys, tss
        except Exception:
            pass  # find the bad items one by one
        items: list[Any] = []
        keys = []
        tss = []
        now = trio.current_time()
        for item in batch:
            try:
                k = None if keyf is None else keyf(item)
                ts = now if processing else _seconds(tsf(item))
                hash(k)
            except Exception as exc:
                await ctx.fail(item, exc)
                continue
            items.append(item)
            keys.append(k)
            tss.append(ts)
        return items, keys, tss

    async def process_batch(self, batch: list[Any], ctx: NodeContext) -> list[Any]:
        items, keys, tss = await self._extract(batch, ctx)
        engine = self._engine
        out: list[Any] = []
        if self.time == "processing":
            out.extend(engine.close(trio.current_time()))
        try:
            late = engine.add(keys, tss, items, self._lateness)
        except TypeError:
            # A timestamp that is not a number: fail those items, keep the others.
            late = []
            for k, ts, item in zip(keys, tss, items, strict=True):
                try:
                    late.extend(engine.add([k], [ts], [item], self._lateness))
                except TypeError as exc:
                    await ctx.fail(item, TypeError(f"timestamp {ts!r} is not a number: {exc}"))
        if self.time == "event":
            out.extend(engine.close(engine.watermark))
        elif self._wake is not None:
            self._wake.set()
        if late:
            await self._late(late)
        self.windows_emitted += len(out)
        return out

    async def _late(self, late: list[Any]) -> None:
        self.late_events += len(late)
        handler = self.on_late
        if handler is None:
            return
        if isinstance(handler, StreamSink):
            await handler.write_batch(late)
        elif self._late_async:
            await handler(late)
        else:
            handler(late)

    async def flush(self, ctx: NodeContext) -> list[Any]:
        if not self.emit_partial:
            return []
        out = self._engine.close_all()
        self.windows_emitted += len(out)
        return list(out)

    async def run(self, ctx: NodeContext, inbox: BoundedBuffer[Any], emit: Emit) -> None:
        if self.time != "processing" or isinstance(self._engine, _CountTumbling | _CountSliding):
            await super().run(ctx, inbox, emit)
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._tick, ctx, emit, name=f"haive-window-timer:{self.name}")
            await super().run(ctx, inbox, emit)
            nursery.cancel_scope.cancel()

    async def _tick(self, ctx: NodeContext, emit: Emit) -> None:
        """Processing time: close windows when the clock reaches their end."""
        engine = self._engine
        if self._stale:
            # Windows restored from another process: their times are on that process's
            # clock, so they are closed now rather than at a meaningless deadline.
            self._stale = False
            await self._emit_timed(ctx, emit, engine.close_all())
        while True:
            self._wake = trio.Event()
            deadline = engine.next_deadline()
            with trio.move_on_at(deadline if deadline is not None else float("inf")):
                await self._wake.wait()
                continue
            await self._emit_timed(ctx, emit, engine.close(trio.current_time()))

    async def _emit_timed(self, ctx: NodeContext, emit: Emit, out: list[WindowResult]) -> None:
        if not out:
            return
        self.windows_emitted += len(out)
        ctx.stats.items_out += len(out)
        ctx.stats.in_progress += len(out)  # not settled until emitted
        try:
            await emit(list(out))
        finally:
            ctx.stats.in_progress -= len(out)

    # -- checkpoints ----------------------------------------------------------------------
    def snapshot(self) -> bytes:
        """The open windows, watermark and counters (pickled, so later changes don't leak)."""
        return pickle.dumps(
            {"engine": self._engine.state(), "late_events": self.late_events},
            protocol=pickle.HIGHEST_PROTOCOL,
        )

    async def restore(self, snapshot: Any) -> None:
        data = pickle.loads(snapshot)
        self._engine.set_state(data["engine"])
        self.late_events = data["late_events"]
        timed = isinstance(self._engine, _TimeGrid | _Sessions)
        self._stale = self.time == "processing" and timed and self._engine.open_windows() > 0
        await trio.lowlevel.checkpoint()


#: The same node under its shorter name.
WindowNode = WindowedAggregateNode


def _seconds(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    timestamp = getattr(value, "timestamp", None)
    if callable(timestamp):  # datetime
        result: float = timestamp()
        return result
    raise TypeError(f"timestamp must be seconds (a number) or a datetime, got {value!r}")


def window_results_by_key(results: Iterable[WindowResult]) -> dict[Any, list[WindowResult]]:
    """Group results per key, in window order (handy in tests and reports).

    Example::

        >>> window_results_by_key([WindowResult("a", 0, 1, 1, 1)])["a"][0].value
        1
    """
    grouped: dict[Any, list[WindowResult]] = {}
    for result in results:
        grouped.setdefault(result.key, []).append(result)
    for rows in grouped.values():
        rows.sort(key=lambda r: r.start)
    return grouped
