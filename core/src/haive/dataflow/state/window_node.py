"""WindowedAggregateNode: the pipeline node that aggregates keyed items over windows.

It reads each item's key and timestamp (event time, or trio's clock in processing time),
feeds them to the window engine for its window kind, emits the closed windows as
:class:`~haive.dataflow.state.WindowResult` items, hands late items to ``on_late``, runs the
timer that closes processing-time windows, and saves its open windows in checkpoints.
Overview and example: :mod:`haive.dataflow.state.windows`.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Hashable
from typing import Any, ClassVar, Literal

import attrs
import trio

from ..errors import ConfigError
from ..io.sinks import StreamSink
from ..runtime.backpressure import BoundedBuffer
from ..runtime.nodes import NODE_ON_ERROR, NODE_RETRY, Emit, Node, NodeContext, is_async_callable
from ..runtime.retry import RetryPolicy
from ..runtime.units import Duration
from ..runtime.validation import BOOL, NON_EMPTY_STR, duration, instance_of, one_of
from ._window_engines import _CountSliding, _CountTumbling, _Engine, _engine, _Sessions, _TimeGrid
from .aggregators import Aggregator, Collect, Count, Fold
from .fields import FieldGetter
from .watermarks import (
    LATE_TO_DEAD_LETTER,
    LateEventError,
    WatermarkTracker,
    check_late_target,
    route_late,
)
from .window_specs import SessionWindow, SlidingWindow, TumblingWindow, WindowResult, WindowSpec

TimeMode = Literal["event", "processing"]

LateHandler = Callable[[list[Any]], Any] | StreamSink | str


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
    ``on_late``: ``"dead_letter"`` (the default: the pipeline's dead letters, each with
    the reason ``late: event time T < watermark W - lateness L``; where a pipeline has
    none, only counted), a StreamSink (a side output), a function of the list of late
    items (sync or async), or None (counted only).

    ``partition`` (a field name or function, event time) names the input or partition each
    item comes from; the watermark is then the minimum over partitions of their largest
    timestamp, so one fast partition does not close windows a slow one still feeds, and it
    moves once per batch. ``partitions`` names the partitions to wait for before any window
    closes (else each counts from its first item on). ``idle_timeout`` (trio's clock) lets
    a partition silent that long stop holding the watermark back (see
    :mod:`haive.dataflow.state.watermarks`).
    ``allowed_lateness`` and the windows' sizes are in seconds, not milliseconds (a number, a
    :class:`~datetime.timedelta` or a string such as ``"500ms"``).

    Its state (open windows, watermark) is saved by pipeline checkpoints.

    Example: see :mod:`haive.dataflow.state.windows`.
    """

    PLUGIN_NAME: ClassVar[str] = "window"
    name: str = attrs.field(validator=NON_EMPTY_STR)
    window: WindowSpec = attrs.field(
        validator=instance_of(
            (TumblingWindow, SlidingWindow, SessionWindow),
            "a TumblingWindow, SlidingWindow or SessionWindow",
        )
    )
    aggregate: Aggregator | Callable[[list[Any]], Any] = attrs.field(factory=Count)
    key: str | Callable[[Any], Hashable] | None = None
    timestamp: str | Callable[[Any], float] = "timestamp"
    time: TimeMode = attrs.field(default="event", validator=one_of("event", "processing"))
    allowed_lateness: Duration = 0.0
    on_late: LateHandler | None = LATE_TO_DEAD_LETTER
    partition: str | Callable[[Any], Hashable] | None = None
    partitions: tuple[Hashable, ...] | None = attrs.field(
        default=None, converter=attrs.converters.optional(tuple)
    )
    idle_timeout: Duration | None = None
    emit_partial: bool = attrs.field(default=True, validator=BOOL)
    on_error: str | None = attrs.field(default=None, validator=NODE_ON_ERROR)
    retry: RetryPolicy | None = attrs.field(default=None, validator=NODE_RETRY)
    late_events: int = attrs.field(init=False, default=0)
    windows_emitted: int = attrs.field(init=False, default=0)
    _engine: _Engine = attrs.field(init=False)
    _key: FieldGetter | None = attrs.field(init=False, default=None)
    _ts: FieldGetter = attrs.field(init=False)
    _lateness: float = attrs.field(init=False, default=0.0)
    _wake: trio.Event | None = attrs.field(init=False, default=None)
    _tracker: WatermarkTracker | None = attrs.field(init=False, default=None)
    _partition: FieldGetter | None = attrs.field(init=False, default=None)
    _event_time: bool = attrs.field(init=False, default=True)
    _stale: bool = attrs.field(init=False, default=False)

    def __attrs_post_init__(self) -> None:
        where = f"WindowedAggregateNode {self.name!r}"
        agg = self.aggregate
        if not isinstance(agg, Aggregator):
            if not callable(agg):
                raise ConfigError(f"{where}: aggregate must be an Aggregator or a function")
            if is_async_callable(agg):
                raise ConfigError(f"{where}: aggregate functions must be synchronous")
            agg = Collect(agg)
        self._engine = _engine(self.window, agg)
        self._lateness = duration(
            "WindowedAggregateNode", "allowed_lateness", self.allowed_lateness, positive=False
        )
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
        check_late_target("WindowedAggregateNode", self.on_late)
        # Count windows never look at time.
        self._event_time = self.time == "event" and getattr(self.window, "count", None) is None
        idle = None
        if self.idle_timeout is not None:
            idle = duration("WindowedAggregateNode", "idle_timeout", self.idle_timeout)
        if self.partition is None:
            if idle is not None or self.partitions is not None:
                raise ConfigError(
                    f"{where}: idle_timeout and partitions apply to partitioned input: give "
                    "partition= (the field or function naming each item's input)"
                )
        else:
            if not self._event_time:
                raise ConfigError(
                    f"{where}: partition= combines event-time watermarks; it needs time='event' "
                    "and a time window"
                )
            self._partition = FieldGetter(self.partition)
            self._tracker = WatermarkTracker(
                inputs=self.partitions, lateness=self._lateness, idle_timeout=idle
            )

    @property
    def watermark(self) -> float:
        """Event time up to which windows are complete: the largest timestamp (the smallest
        of the partitions' largest, with ``partition=``) minus the allowed lateness."""
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
        tracker = self._tracker
        out: list[Any] = []
        parts: list[Any] = []
        wm: float | None = None
        if tracker is not None:
            items, keys, tss, parts = await self._partitions(items, keys, tss, ctx)
            # The batch is judged against the watermark before it, then moves it.
            wm = tracker.advance(trio.current_time())
        if self.time == "processing":
            out.extend(engine.close(trio.current_time()))
        try:
            late = engine.add(keys, tss, items, self._lateness, wm)
        except TypeError:
            # A timestamp that is not a number: fail those items, keep the others.
            late = []
            for k, ts, item in zip(keys, tss, items, strict=True):
                try:
                    late.extend(engine.add([k], [ts], [item], self._lateness, wm))
                except TypeError as exc:
                    await ctx.fail(item, TypeError(f"timestamp {ts!r} is not a number: {exc}"))
        if tracker is not None:
            now = trio.current_time()
            tracker.observe_many(parts, tss, now)
            engine.watermark = tracker.advance(now)
            if self._wake is not None:
                self._wake.set()
        if self.time == "event":
            out.extend(engine.close(engine.watermark))
        elif self._wake is not None:
            self._wake.set()
        if late:
            await self._late(late, ctx)
        self.windows_emitted += len(out)
        return out

    async def _partitions(
        self, items: list[Any], keys: list[Any], tss: list[float], ctx: NodeContext
    ) -> tuple[list[Any], list[Any], list[float], list[Any]]:
        """The partition of each item; items whose partition is unreadable fail."""
        getter = self._partition
        assert getter is not None
        try:
            parts = getter.many(items)
            for part in parts:
                hash(part)
            return items, keys, tss, parts
        except Exception:
            pass  # find the bad items one by one
        kept: tuple[list[Any], list[Any], list[float], list[Any]] = ([], [], [], [])
        for item, k, ts in zip(items, keys, tss, strict=True):
            try:
                part = getter(item)
                hash(part)
            except Exception as exc:
                await ctx.fail(item, exc)
                continue
            for column, value in zip(kept, (item, k, ts, part), strict=True):
                column.append(value)
        return kept

    async def _late(self, late: list[Any], ctx: NodeContext) -> None:
        self.late_events += len(late)
        target = self.on_late
        if target is None:
            return
        reasons: list[LateEventError] = []
        if target == LATE_TO_DEAD_LETTER:
            tracker = self._tracker
            frontier = tracker.frontier if tracker is not None else self._engine.max_ts
            for item in late:
                try:
                    ts = _seconds(self._ts(item))
                except Exception:  # it was read once; a function may not read it again
                    ts = float("nan")
                reasons.append(LateEventError(ts, frontier, self._lateness))
        await route_late(target, late, reasons, ctx)

    async def flush(self, ctx: NodeContext) -> list[Any]:
        if not self.emit_partial:
            return []
        out = self._engine.close_all()
        self.windows_emitted += len(out)
        return list(out)

    async def run(self, ctx: NodeContext, inbox: BoundedBuffer[Any], emit: Emit) -> None:
        tracker = self._tracker
        if tracker is not None and tracker.idle_timeout is not None:
            tracker.start(trio.current_time())
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    self._idle_timer, ctx, emit, name=f"haive-window-idle:{self.name}"
                )
                await super().run(ctx, inbox, emit)
                nursery.cancel_scope.cancel()
            return
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

    async def _idle_timer(self, ctx: NodeContext, emit: Emit) -> None:
        """Move the watermark when a partition turns idle, though no item arrives to do it."""
        tracker = self._tracker
        assert tracker is not None
        engine = self._engine
        while True:
            self._wake = trio.Event()
            deadline = tracker.next_idle_deadline(trio.current_time())
            with trio.move_on_at(deadline if deadline is not None else float("inf")):
                await self._wake.wait()
                continue
            engine.watermark = tracker.advance(trio.current_time())
            await self._emit_timed(ctx, emit, engine.close(engine.watermark))

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
        data: dict[str, Any] = {"engine": self._engine.state(), "late_events": self.late_events}
        if self._tracker is not None:
            data["tracker"] = self._tracker.state()
        return pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL)

    async def restore(self, snapshot: Any) -> None:
        data = pickle.loads(snapshot)
        self._engine.set_state(data["engine"])
        self.late_events = data["late_events"]
        if self._tracker is not None and "tracker" in data:
            self._tracker.set_state(data["tracker"])
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
