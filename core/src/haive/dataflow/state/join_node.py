"""JoinNode: a stream-stream join by key in event time (windows or intervals).

Two streams reach one node in either of two ways:

* **by predecessor** (``side=None``, the default): in an
  :class:`~haive.dataflow.pipelines.event_pipeline.EventPipeline` graph, connect the node
  that carries the left stream and the one that carries the right stream into the join;
  ``left=`` and ``right=`` name those two predecessors. The run tags each item with the
  predecessor it came from (:attr:`JoinNode.tags_inputs`), so the join knows its side.
* **by field** (``side="kind"`` or a function): one stream carries both sides (a
  :class:`~haive.dataflow.pipelines.streaming_pipeline.StreamingPipeline`'s source, a
  merged topic), and ``side`` of each item is ``left`` or ``right``.

Example: orders and payments of a user in the same minute (by field)::

    >>> import trio
    >>> from haive.dataflow.runtime.nodes import NodeContext
    >>> from haive.dataflow.state import TumblingWindow
    >>> join = JoinNode(name="paid", window=TumblingWindow("60s"), key="user", side="kind",
    ...                 left="order", right="payment", timestamp="ts")
    >>> events = [
    ...     {"kind": "order", "user": "ada", "ts": 5, "id": 1},
    ...     {"kind": "payment", "user": "ada", "ts": 20, "amount": 9},
    ...     {"kind": "order", "user": "bob", "ts": 30, "id": 2},
    ... ]
    >>> async def main():
    ...     ctx = NodeContext("paid")
    ...     return await join.process_batch(events, ctx) + await join.flush(ctx)
    >>> for pair in trio.run(main):
    ...     print(pair.key, pair.left["id"], pair.right["amount"], pair.start, pair.end)
    ada 1 9 0.0 60.0
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Hashable
from typing import Any, ClassVar, Self

import attrs
import trio

from ..errors import ConfigError, GraphError
from ..runtime.backpressure import BoundedBuffer
from ..runtime.nodes import NODE_ON_ERROR, NODE_RETRY, Emit, Node, NodeContext
from ..runtime.retry import RetryPolicy
from ..runtime.units import Duration
from ..runtime.validation import NON_EMPTY_STR, duration, instance_of, one_of
from ._join_engines import LEFT, RIGHT, JoinEngine, join_engine
from .fields import FieldGetter
from .join_specs import JOIN_HOWS, IntervalJoin
from .watermarks import (
    LATE_TO_DEAD_LETTER,
    LateEventError,
    LateTarget,
    WatermarkTracker,
    check_late_target,
    route_late,
)
from .window_node import _seconds
from .window_specs import SessionWindow, SlidingWindow, TumblingWindow

Field = str | Callable[[Any], Any]


def _optional_duration(owner: str, parameter: str, value: Duration | None) -> float | None:
    return None if value is None else duration(owner, parameter, value)


@attrs.define(eq=False)
class JoinNode(Node):
    """Joins a left and a right stream by key in event time; emits :class:`JoinResult` pairs.

    ``window`` is a time :class:`TumblingWindow`, :class:`SlidingWindow` or
    :class:`SessionWindow` (items of both sides in the same window of their key are paired
    when the watermark closes the window; session gaps are measured over both sides) or an
    :class:`IntervalJoin` (a left item at ``t`` pairs with right items at ``t + lower ..
    t + upper``, as soon as both are there). ``how`` is ``"inner"`` (pairs only), ``"left"``
    (a left item that met no right item is emitted with ``right=None``) or ``"outer"``
    (both sides so). ``key`` reads the join key of both sides (``left_key``/``right_key``
    when the sides name it differently); ``timestamp`` the event time (seconds or a
    datetime).

    The watermark is the minimum over the two sides of their largest event time, minus
    ``allowed_lateness``; a side silent for ``idle_timeout`` (trio's clock) stops holding it
    back. A late item (one whose windows, or whose possible partners, the watermark has
    passed) is counted in ``late_events`` and handed to ``on_late``: by default the
    pipeline's dead letters with ``late: event time T < watermark W - lateness L`` (where
    a pipeline has none, only counted); or a StreamSink (side output) or a function of the
    list of late items. Semantics: ``docs/concepts/time.md``. Durations are in
    seconds (a number, a timedelta or a string such as ``"500ms"``).

    How items reach it: see :mod:`haive.dataflow.state.join_node`. Its state (open windows
    or buffered items, watermark) is saved by pipeline checkpoints. At the end of the input
    every open window is joined and emitted (unmatched items of a left or outer join too).

    Example: an interval join of two observables::

        >>> import trio
        >>> from haive.dataflow.reactive import Observable
        >>> clicks = Observable.of({"ad": 1, "ts": 10.0}, {"ad": 2, "ts": 11.0})
        >>> views = Observable.of({"ad": 1, "ts": 8.0}, {"ad": 2, "ts": 1.0})
        >>> async def main():
        ...     joined = views.join(clicks, IntervalJoin(0, "5s"), key="ad", timestamp="ts")
        ...     return [(p.key, p.left["ts"], p.right["ts"]) for p in await joined.to_list()]
        >>> trio.run(main)
        [(1, 8.0, 10.0)]
    """

    PLUGIN_NAME: ClassVar[str] = "join"
    name: str = attrs.field(validator=NON_EMPTY_STR)
    window: TumblingWindow | SlidingWindow | SessionWindow | IntervalJoin = attrs.field(
        validator=instance_of(
            (TumblingWindow, SlidingWindow, SessionWindow, IntervalJoin),
            "a TumblingWindow, SlidingWindow, SessionWindow or IntervalJoin",
        )
    )
    key: Field | None = None
    how: str = attrs.field(default="inner", validator=one_of(*JOIN_HOWS))
    left: Hashable = "left"
    right: Hashable = "right"
    side: Field | None = None
    timestamp: Field = "timestamp"
    left_key: Field | None = None
    right_key: Field | None = None
    allowed_lateness: Duration = 0.0
    idle_timeout: Duration | None = None
    on_late: LateTarget = LATE_TO_DEAD_LETTER
    on_error: str | None = attrs.field(default=None, validator=NODE_ON_ERROR)
    retry: RetryPolicy | None = attrs.field(default=None, validator=NODE_RETRY)
    late_events: int = attrs.field(init=False, default=0)
    pairs_emitted: int = attrs.field(init=False, default=0)
    _engine: JoinEngine = attrs.field(init=False)
    _tracker: WatermarkTracker = attrs.field(init=False)
    _keys: tuple[FieldGetter, FieldGetter] = attrs.field(init=False)
    _ts: FieldGetter = attrs.field(init=False)
    _side: FieldGetter | None = attrs.field(init=False, default=None)
    _wake: trio.Event | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        owner = f"JoinNode {self.name!r}"
        if getattr(self.window, "count", None) is not None:
            raise ConfigError(
                f"{owner}: window={self.window!r}: joins are in event time; count windows "
                "have no time to meet in"
            )
        if self.left == self.right:
            raise ConfigError(f"{owner}: left and right must differ, both are {self.left!r}")
        lateness = duration("JoinNode", "allowed_lateness", self.allowed_lateness, positive=False)
        idle = _optional_duration("JoinNode", "idle_timeout", self.idle_timeout)
        check_late_target("JoinNode", self.on_late)
        self._engine = join_engine(self.window, self.how)
        self._tracker = WatermarkTracker(inputs=(LEFT, RIGHT), lateness=lateness, idle_timeout=idle)
        if self.left_key is None and self.right_key is None:
            shared = FieldGetter(self.key)
            self._keys = (shared, shared)
        else:
            self._keys = (
                FieldGetter(self.left_key if self.left_key is not None else self.key),
                FieldGetter(self.right_key if self.right_key is not None else self.key),
            )
        self._ts = FieldGetter(self.timestamp)
        self._side = None if self.side is None else FieldGetter(self.side)

    def fresh(self) -> Self:
        """A node with the same settings and no state (each run of a reactive join gets one)."""
        return attrs.evolve(self)

    # -- wiring ---------------------------------------------------------------------------
    @property
    def tags_inputs(self) -> bool:
        """True when the run should tag each item with its predecessor (``side=None``)."""
        return self.side is None

    def check_predecessors(self, names: list[str]) -> None:
        """Graph validation: by predecessor, the two predecessors are ``left`` and ``right``."""
        if self.side is not None:
            return
        expected = {self.left, self.right}
        if set(names) != expected:
            raise GraphError(
                f"JoinNode {self.name!r}: its inputs are {sorted(map(str, names))}, but it joins "
                f"left={self.left!r} and right={self.right!r}: connect exactly those two nodes "
                "into it (or give side= to read the side from each item)"
            )

    @property
    def watermark(self) -> float:
        """Event time up to which the join is complete (frontier - allowed lateness)."""
        return self._tracker.watermark

    def open_items(self) -> int:
        """Open (key, window) pairs of a window join, buffered items of an interval join."""
        return self._engine.open_items()

    # -- processing -----------------------------------------------------------------------
    def _extract_fast(
        self, batch: list[Any]
    ) -> tuple[list[int], list[Any], list[float], list[Any]]:
        """The whole batch at C speed where it can be; raises on any unreadable item."""
        if self._side is None:
            names = [entry[0] for entry in batch]
            items = [entry[1] for entry in batch]
        else:
            items = batch
            names = self._side.many(items)
        codes = {self.left: LEFT, self.right: RIGHT}
        sides = [codes[name] for name in names]  # KeyError: a side that is neither
        left_keys, right_keys = self._keys
        if left_keys is right_keys:
            keys = left_keys.many(items)
        else:
            keys = [self._keys[side](item) for side, item in zip(sides, items, strict=True)]
        set(keys)  # TypeError: an unhashable key
        tss = self._ts.many(items)
        sum(tss)  # TypeError: a timestamp that is not a number (datetimes take the slow path)
        return sides, keys, tss, items

    async def _extract(
        self, batch: list[Any], ctx: NodeContext
    ) -> tuple[list[int], list[Any], list[float], list[Any]]:
        try:
            return self._extract_fast(batch)
        except Exception:
            pass  # find the bad items one by one
        sides: list[int] = []
        keys: list[Any] = []
        tss: list[float] = []
        items: list[Any] = []
        left, right = self.left, self.right
        side_of = self._side
        keyfs, tsf = self._keys, self._ts
        for entry in batch:
            if side_of is None:
                name, item = entry
            else:
                name, item = None, entry
            try:
                if side_of is not None:
                    name = side_of(item)
                if name == left:
                    side = LEFT
                elif name == right:
                    side = RIGHT
                else:
                    raise ValueError(f"side {name!r} is neither left={left!r} nor right={right!r}")
                k = keyfs[side](item)
                hash(k)
                ts = _seconds(tsf(item))
            except Exception as exc:
                await ctx.fail(item, exc)
                continue
            sides.append(side)
            keys.append(k)
            tss.append(ts)
            items.append(item)
        return sides, keys, tss, items

    async def process_batch(self, batch: list[Any], ctx: NodeContext) -> list[Any]:
        sides, keys, tss, items = await self._extract(batch, ctx)
        # No await from here to the emit, so the idle timer never sees half a batch.
        tracker, engine = self._tracker, self._engine
        now = trio.current_time()
        # The batch is judged against the watermark before it, then moves it.
        wm = tracker.advance(now)
        out, late = engine.add(sides, keys, tss, items, wm)
        tracker.observe_many(sides, tss, now)
        out.extend(engine.close(tracker.advance(now)))
        if self._wake is not None:
            self._wake.set()
        if late:
            self.late_events += len(late)
            await route_late(
                self.on_late,
                [items[i] for i in late],
                [LateEventError(tss[i], tracker.frontier, tracker.lateness) for i in late],
                ctx,
            )
        self.pairs_emitted += len(out)
        return out

    async def flush(self, ctx: NodeContext) -> list[Any]:
        out = self._engine.close_all()
        self.pairs_emitted += len(out)
        return list(out)

    async def run(self, ctx: NodeContext, inbox: BoundedBuffer[Any], emit: Emit) -> None:
        if self._tracker.idle_timeout is None:
            await super().run(ctx, inbox, emit)
            return
        self._tracker.start(trio.current_time())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._idle_timer, ctx, emit, name=f"haive-join-idle:{self.name}")
            await super().run(ctx, inbox, emit)
            nursery.cancel_scope.cancel()

    async def _idle_timer(self, ctx: NodeContext, emit: Emit) -> None:
        """Move the watermark when a side turns idle, though no item arrives to do it."""
        tracker = self._tracker
        while True:
            self._wake = trio.Event()
            deadline = tracker.next_idle_deadline(trio.current_time())
            with trio.move_on_at(deadline if deadline is not None else float("inf")):
                await self._wake.wait()
                continue
            out = self._engine.close(tracker.advance(trio.current_time()))
            if out:
                self.pairs_emitted += len(out)
                ctx.stats.items_out += len(out)
                ctx.stats.in_progress += len(out)  # not settled until emitted
                try:
                    await emit(out)
                finally:
                    ctx.stats.in_progress -= len(out)

    # -- checkpoints ----------------------------------------------------------------------
    def snapshot(self) -> bytes:
        """The buffered items or open windows, the watermark and the counters."""
        return pickle.dumps(
            {
                "engine": self._engine.state(),
                "tracker": self._tracker.state(),
                "late_events": self.late_events,
                "pairs_emitted": self.pairs_emitted,
            },
            protocol=pickle.HIGHEST_PROTOCOL,
        )

    async def restore(self, snapshot: Any) -> None:
        data = pickle.loads(snapshot)
        self._engine.set_state(data["engine"])
        self._tracker.set_state(data["tracker"])
        self.late_events = data["late_events"]
        self.pairs_emitted = data["pairs_emitted"]
        await trio.lowlevel.checkpoint()
