"""Marble diagrams for reactive tests, on trio's clock (use with the ``autojump_clock`` fixture).

Syntax: every character is one frame (``FRAME`` seconds of trio time); spaces are ignored.

* ``-``   nothing happens in this frame
* ``a``   an item: ``values["a"]`` if given, else the character itself
* ``(ab)`` several items in one frame (the group takes one frame)
* ``|``   completion, ``#`` error

``cold(...)`` times events from subscription; ``hot(...)`` from the start of
:func:`run_marbles`, whether anyone listens or not. :func:`run_marbles` subscribes to an
observable, drives the hot sources and returns what happened as a marble string.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs
import trio

from haive.dataflow.reactive import Observable, ReactiveStream

FRAME = 1.0


class MarbleError(Exception):
    """The error a ``#`` stands for (unless one is given)."""


@attrs.frozen
class Event:
    frame: int
    kind: str  # "next", "complete", "error"
    value: Any = None


def parse(
    marbles: str, values: Mapping[str, Any] | None = None, error: BaseException | None = None
) -> list[Event]:
    events: list[Event] = []
    frame = 0
    group: list[Event] | None = None
    for char in marbles.replace(" ", ""):
        if char == "(":
            group = []
            continue
        if char == ")":
            assert group is not None, f"unbalanced ')' in {marbles!r}"
            events.extend(group)
            group = None
            frame += 1
            continue
        target = group if group is not None else events
        if char == "-":
            pass
        elif char == "|":
            target.append(Event(frame, "complete"))
        elif char == "#":
            target.append(Event(frame, "error", error or MarbleError("marble error")))
        else:
            target.append(Event(frame, "next", values[char] if values and char in values else char))
        if group is None:
            frame += 1
    return events


def render(events: list[Event], values: Mapping[str, Any] | None = None) -> str:
    """A marble string for recorded events (values mapped back to their characters)."""
    names = {repr(v): k for k, v in (values or {}).items()}
    by_frame: dict[int, list[str]] = {}
    for event in events:
        if event.kind == "next":
            name = names.get(repr(event.value), str(event.value))
        else:
            name = "|" if event.kind == "complete" else "#"
        by_frame.setdefault(event.frame, []).append(name)
    if not by_frame:
        return ""
    out = []
    for frame in range(max(by_frame) + 1):
        names_here = by_frame.get(frame, [])
        if not names_here:
            out.append("-")
        elif len(names_here) == 1:
            out.append(names_here[0])
        else:
            out.append("(" + "".join(names_here) + ")")
    return "".join(out)


def cold(
    marbles: str, values: Mapping[str, Any] | None = None, error: BaseException | None = None
) -> Observable[Any]:
    """An observable that plays ``marbles`` from the moment it is subscribed."""
    events = parse(marbles, values, error)

    async def produce(emit: Callable[[Any], Any]) -> None:
        start = trio.current_time()
        for event in events:
            await trio.sleep_until(start + event.frame * FRAME)
            if event.kind == "next":
                await emit(event.value)
            elif event.kind == "complete":
                return
            else:
                raise event.value
        await trio.sleep_forever()

    return Observable.create(produce)


class Hot:
    """A :class:`ReactiveStream` with a script: ``play`` emits it on absolute frames."""

    def __init__(
        self,
        marbles: str,
        values: Mapping[str, Any] | None = None,
        error: BaseException | None = None,
    ) -> None:
        self.stream: ReactiveStream[Any] = ReactiveStream(name=f"hot({marbles})")
        self.events = parse(marbles, values, error)

    async def play(self, start: float) -> None:
        for event in self.events:
            await trio.sleep_until(start + event.frame * FRAME)
            if event.kind == "next":
                await self.stream.emit(event.value)
            elif event.kind == "complete":
                await self.stream.complete()
                return
            else:
                await self.stream.error(event.value)
                return


def hot(
    marbles: str, values: Mapping[str, Any] | None = None, error: BaseException | None = None
) -> Hot:
    return Hot(marbles, values, error)


@attrs.define
class Recording:
    events: list[Event]
    values: Mapping[str, Any] | None

    @property
    def marbles(self) -> str:
        return render(self.events, self.values)

    @property
    def items(self) -> list[Any]:
        return [e.value for e in self.events if e.kind == "next"]

    @property
    def error(self) -> BaseException | None:
        return next((e.value for e in self.events if e.kind == "error"), None)


async def run_marbles(
    observable: Observable[Any],
    *hots: Hot,
    values: Mapping[str, Any] | None = None,
    until: int = 200,
    **subscribe_options: Any,
) -> Recording:
    """Subscribe to ``observable`` at frame 0, play ``hots``, record until it ends (or
    ``until`` frames), and return the recording."""
    events: list[Event] = []
    start = trio.current_time()

    def frame() -> int:
        return round((trio.current_time() - start) / FRAME)

    def on_next(item: Any) -> None:
        events.append(Event(frame(), "next", item))

    def on_error(error: BaseException) -> None:
        events.append(Event(frame(), "error", error))

    def on_completed() -> None:
        events.append(Event(frame(), "complete"))

    with trio.move_on_at(start + until * FRAME):
        async with trio.open_nursery() as nursery:
            subscription = await observable.subscribe(
                on_next, on_error, on_completed, **subscribe_options
            ).start(nursery)
            for script in hots:
                nursery.start_soon(script.play, start)
            await subscription.wait()
            nursery.cancel_scope.cancel()
    return Recording(events, values)
