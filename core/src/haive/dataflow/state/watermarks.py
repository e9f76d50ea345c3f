"""Event-time watermarks over several inputs, idle inputs, and the routing of late events.

A node that reads several inputs (the two sides of a join, the partitions of a topic) cannot
trust the largest timestamp it has seen: one fast input would close windows that a slow
input still has events for. :class:`WatermarkTracker` keeps the largest timestamp of each
input and takes the *minimum*: the *frontier* ``W``, up to which every input has reached.
The node's watermark is ``W - L`` (``L`` the allowed lateness); windows ending at or before
it close, and an event whose windows have all closed is late (its time ``T < W - L``).

An input that has sent nothing for ``idle_timeout`` (trio's clock, so processing time) is
*idle* and stops holding the frontier back; its next event makes it active again (and that
event may be late). When every input is idle the frontier stays where it is. The frontier
never goes back.

A late event is never dropped silently: the node counts it and hands it to its ``on_late``
(:data:`LATE_TO_DEAD_LETTER` sends it with a :class:`LateEventError` naming
``late: event time T < watermark W - lateness L`` to the pipeline's dead letters).
The semantics are written out in ``docs/concepts/time.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable
from typing import Any, Final

import attrs

from ..errors import ConfigError, HaiveError
from ..io.sinks import StreamSink
from ..runtime.nodes import NodeContext, is_async_callable
from ..runtime.results import Result

_NEG_INF: Final = float("-inf")

#: ``on_late="dead_letter"``: late events go to the pipeline's dead letters with the reason.
LATE_TO_DEAD_LETTER: Final = "dead_letter"

#: What a node's ``on_late`` may be: a function of the list of late items (sync or async), a
#: StreamSink (a side output), ``"dead_letter"``, or None (counted only).
LateTarget = Callable[[list[Any]], Any] | StreamSink | str | None


class LateEventError(HaiveError):
    """Why an event was not processed: it arrived after the watermark passed it.

    Example::

        >>> str(LateEventError(3.0, 12.0, 2.0))
        'late: event time 3.0 < watermark 12.0 - lateness 2.0'
    """

    def __init__(self, event_time: float, frontier: float, lateness: float) -> None:
        super().__init__(
            f"late: event time {event_time} < watermark {frontier} - lateness {lateness}"
        )
        self.event_time = event_time
        self.frontier = frontier
        self.lateness = lateness

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.event_time, self.frontier, self.lateness))


@attrs.define(eq=False)
class WatermarkTracker:
    """The frontier of several inputs: the minimum over active inputs of their largest time.

    ``inputs`` names the inputs known in advance (a join's two sides): each holds the
    frontier back until it has sent something or is idle. With ``inputs=None`` inputs are
    discovered as they send (partitions). ``idle_timeout`` (seconds, None = never idle) is
    measured on trio's clock from an input's last event (or from the tracker's start for an
    input never heard from). :attr:`watermark` is the frontier minus ``lateness``.

    Example: the fast input does not close windows the slow one still feeds::

        >>> tracker = WatermarkTracker(inputs=("orders", "payments"), lateness=1.0)
        >>> tracker.observe("orders", 50.0, now=0.0)
        >>> tracker.advance(now=0.0)
        -inf
        >>> tracker.observe("payments", 10.0, now=0.0)
        >>> tracker.advance(now=0.0)
        9.0
    """

    inputs: tuple[Hashable, ...] | None = None
    lateness: float = 0.0
    idle_timeout: float | None = None
    frontier: float = attrs.field(init=False, default=_NEG_INF)
    _max: dict[Hashable, float] = attrs.field(init=False, factory=dict)
    _seen: dict[Hashable, float] = attrs.field(init=False, factory=dict)
    _started: float | None = attrs.field(init=False, default=None)

    @property
    def watermark(self) -> float:
        """Event time up to which windows are complete: the frontier minus the lateness."""
        return self.frontier - self.lateness

    def start(self, now: float) -> None:
        """Start the idle clock of the inputs not heard from yet (done on first use)."""
        if self._started is None:
            self._started = now

    def observe(self, name: Hashable, ts: float, now: float) -> None:
        """``name`` sent an event of time ``ts`` at ``now`` (trio's clock)."""
        self.start(now)
        if ts > self._max.get(name, _NEG_INF):
            self._max[name] = ts
        self._seen[name] = now

    def observe_many(self, names: Iterable[Hashable], tss: Iterable[float], now: float) -> None:
        """:meth:`observe` for a batch."""
        self.start(now)
        maxes, seen = self._max, self._seen
        for name, ts in zip(names, tss, strict=True):
            if ts > maxes.get(name, _NEG_INF):
                maxes[name] = ts
            seen[name] = now

    def _names(self) -> Iterable[Hashable]:
        return self._max.keys() if self.inputs is None else self.inputs

    def _active(self, name: Hashable, now: float) -> bool:
        timeout = self.idle_timeout
        if timeout is None:
            return True
        last = self._seen.get(name, self._started)
        return last is None or now - last < timeout

    def advance(self, now: float) -> float:
        """Recompute the frontier at ``now``; return the watermark (frontier - lateness)."""
        self.start(now)
        lowest = math.inf
        any_active = False
        for name in self._names():
            if not self._active(name, now):
                continue
            any_active = True
            seen = self._max.get(name, _NEG_INF)
            if seen < lowest:
                lowest = seen
        if any_active and lowest > self.frontier:
            self.frontier = lowest
        return self.frontier - self.lateness

    def idle_inputs(self, now: float) -> list[Hashable]:
        """The inputs idle at ``now``."""
        return [name for name in self._names() if not self._active(name, now)]

    def next_idle_deadline(self, now: float) -> float | None:
        """When the next input active at ``now`` turns idle (None: none will, or no idle
        timeout)."""
        timeout = self.idle_timeout
        if timeout is None or self._started is None:
            return None
        ends = [self._seen.get(name, self._started) + timeout for name in self._names()]
        future = [end for end in ends if end > now]
        return min(future) if future else None

    def late_error(self, ts: float) -> LateEventError:
        """The reason an event of time ``ts`` is late now."""
        return LateEventError(ts, self.frontier, self.lateness)

    # -- checkpoints ----------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps: the frontier and each input's largest time."""
        return {"frontier": self.frontier, "max": dict(self._max)}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state`; idle clocks start again (they were another process's)."""
        self.frontier = state["frontier"]
        self._max = dict(state["max"])
        self._seen = {}
        self._started = None


def check_late_target(where: str, target: object) -> None:
    """Raise ConfigError unless ``target`` is a valid ``on_late``."""
    if target is None or target == LATE_TO_DEAD_LETTER:
        return
    if isinstance(target, str) or not (isinstance(target, StreamSink) or callable(target)):
        raise ConfigError(
            f"{where}(on_late={target!r}): on_late must be a function, a StreamSink, "
            f"'{LATE_TO_DEAD_LETTER}' or None, got {target!r}"
        )


async def route_late(
    target: LateTarget,
    late: list[Any],
    reasons: list[LateEventError],
    ctx: NodeContext,
) -> None:
    """Hand ``late`` items to ``target``; ``"dead_letter"`` sends failed Results with their
    ``reasons`` (one per item; other targets ignore them) to the pipeline's error buffer
    (its dead-letter sink), whatever the error policy.

    Without an error buffer (an EventPipeline under ``on_error="raise"``, a node driven by
    hand) a dead-letter target has nowhere to write: the items are then only counted, in
    the node's ``late_events``.
    """
    if not late or target is None:
        return
    if target == LATE_TO_DEAD_LETTER:
        if ctx.errors is not None:
            await ctx.errors.put_batch(
                [
                    Result.failed(item, reason, node=ctx.name)
                    for item, reason in zip(late, reasons, strict=True)
                ]
            )
        return
    if isinstance(target, StreamSink):
        await target.write_batch(late)
    elif callable(target):
        if is_async_callable(target):
            await target(late)
        else:
            target(late)
