"""EventRouter: send events to handlers or pipeline branches by pattern.

A *route* pairs a :class:`Pattern` with a handler (a sync or async function called with the
event) and/or a *target* (the name of a successor node when the router is a node of an
:class:`~haive.dataflow.pipelines.event_pipeline.EventPipeline` graph). Patterns combine:

* ``type``: the event's type (``event.type`` or ``event["type"]``), exact or a glob such as
  ``"agent_*"``;
* ``fields``: dotted paths to expected values. An expected value may be a plain value
  (equality), a set (membership), a compiled regular expression (search in a string), a class
  (``isinstance``) or a function (predicate on the value). For :class:`~haive.dataflow.Event`
  objects, a path not found on the event is looked up in ``event.data``;
* ``where``: a predicate on the whole event.

``mode="first"`` takes the first matching route in the order routes were added,
``mode="all"`` fans out to every matching route; the default route takes events that match
nothing (without one they are counted as unrouted).

Extending: :meth:`EventRouter.decide` is the one method that picks routes; the default calls
the pattern matcher :meth:`EventRouter.match`. A router that predicts routes (the AI
plugin's ``IntelligentEventRouter``) overrides ``decide``, uses :meth:`EventRouter.route`
to turn a predicted name into a route, and falls back to ``super().decide(event)``.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, Literal

import attrs
import trio  # noqa: F401 - the doctests below run on trio

from ..errors import ConfigError, GraphError, HaiveError
from ..runtime.backpressure import BoundedBuffer
from ..runtime.nodes import NODE_ON_ERROR, Emit, Node, NodeContext
from ..runtime.validation import NON_EMPTY_STR, one_of

RouteMode = Literal["first", "all"]
MODES: tuple[str, ...] = ("first", "all")

_MISSING: Any = object()


class RoutingError(HaiveError):
    """A route's predicate or handler failed; ``route`` names it and ``__cause__`` is why."""

    def __init__(self, route: str, error: BaseException) -> None:
        super().__init__(f"route {route!r} failed: {type(error).__name__}: {error}")
        self.route = route
        self.error = error


def event_type(event: Any) -> Any:
    """``event["type"]`` for mappings, else ``event.type`` (``None`` if absent).

    Example::

        >>> event_type({"type": "tick"}), event_type(42)
        ('tick', None)
    """
    if isinstance(event, Mapping):
        return event.get("type")
    return getattr(event, "type", None)


def get_field(event: Any, path: str) -> Any:
    """The value at dotted ``path`` in ``event`` (mappings and attributes), or a sentinel.

    For objects with a ``data`` mapping (:class:`~haive.dataflow.Event`), a first path part
    that is not an attribute is looked up in ``data``.

    Example::

        >>> get_field({"user": {"country": "FR"}}, "user.country")
        'FR'
        >>> get_field({"user": {}}, "user.country") is MISSING
        True
    """
    current = event
    for position, part in enumerate(path.split(".")):
        if isinstance(current, Mapping):
            current = current.get(part, _MISSING)
        else:
            value = getattr(current, part, _MISSING)
            if value is _MISSING and position == 0:
                data = getattr(current, "data", None)
                if isinstance(data, Mapping):
                    value = data.get(part, _MISSING)
            current = value
        if current is _MISSING:
            return _MISSING
    return current


MISSING = _MISSING


def _value_matches(expected: Any, value: Any) -> bool:
    if value is _MISSING:
        return False
    if isinstance(expected, re.Pattern):
        return isinstance(value, str) and expected.search(value) is not None
    if isinstance(expected, type):
        return isinstance(value, expected)
    if isinstance(expected, set | frozenset):
        try:
            return value in expected
        except TypeError:
            return False
    if callable(expected):
        return bool(expected(value))
    return bool(value == expected)


def _type_matcher(spec: str) -> Callable[[Any], bool]:
    if any(ch in spec for ch in "*?["):
        regex = re.compile(fnmatch.translate(spec))
        return lambda value: isinstance(value, str) and regex.match(value) is not None
    return lambda value: value == spec


@attrs.frozen
class Pattern:
    """What an event must look like to take a route (every given part must match).

    Example::

        >>> p = Pattern(type="agent_*", fields={"confidence": lambda c: c > 0.8})
        >>> p.matches({"type": "agent_response", "confidence": 0.9})
        True
        >>> p.matches({"type": "agent_response", "confidence": 0.5})
        False
    """

    type: str | None = None
    fields: Mapping[str, Any] = attrs.field(factory=dict)
    where: Callable[[Any], Any] | None = None
    _type_ok: Callable[[Any], bool] | None = attrs.field(
        init=False, default=None, eq=False, repr=False
    )

    def __attrs_post_init__(self) -> None:
        if self.type is not None and not isinstance(self.type, str):
            raise ConfigError(
                f"Pattern.type must be a string (a type or a glob), got {self.type!r}"
            )
        if not isinstance(self.fields, Mapping) or not all(isinstance(k, str) for k in self.fields):
            raise ConfigError(
                f"Pattern.fields must map dotted paths to values, got {self.fields!r}"
            )
        if self.where is not None and not callable(self.where):
            raise ConfigError(f"Pattern.where must be callable, got {self.where!r}")
        if self.type is not None:
            object.__setattr__(self, "_type_ok", _type_matcher(self.type))

    def matches(self, event: Any) -> bool:
        """True when ``event`` matches type, every field and the predicate."""
        if self._type_ok is not None and not self._type_ok(event_type(event)):
            return False
        for path, expected in self.fields.items():
            if not _value_matches(expected, get_field(event, path)):
                return False
        return self.where is None or bool(self.where(event))


PatternSpec = Pattern | str | Mapping[str, Any] | Callable[[Any], Any]


def as_pattern(spec: PatternSpec) -> Pattern:
    """A :class:`Pattern` from a pattern, a type (glob), a field mapping or a predicate.

    Example::

        >>> as_pattern("alert").matches({"type": "alert"})
        True
        >>> as_pattern({"severity": {"high", "critical"}}).matches({"severity": "high"})
        True
    """
    if isinstance(spec, Pattern):
        return spec
    if isinstance(spec, str):
        return Pattern(type=spec)
    if isinstance(spec, Mapping):
        return Pattern(fields=dict(spec))
    if callable(spec):
        return Pattern(where=spec)
    raise ConfigError(
        "a route pattern must be a Pattern, an event type (glob), a mapping of fields or a "
        f"predicate; got {type(spec).__name__} {spec!r}"
    )


Handler = Callable[[Any], Any]


@attrs.frozen
class Route:
    """A named pattern with a handler and/or a target node.

    Example::

        >>> Route("alerts", Pattern(type="alert"), target="notify").target
        'notify'
    """

    name: str
    pattern: Pattern
    handler: Handler | None = None
    target: str | None = None

    async def call(self, event: Any) -> None:
        """Call the handler (if any) with ``event``; failures raise :class:`RoutingError`."""
        if self.handler is None:
            return
        try:
            result = self.handler(event)
            if isinstance(result, Awaitable):
                await result
        except Exception as exc:
            raise RoutingError(self.name, exc) from exc


@attrs.define
class RouterStats:
    """How many events each route took, and how many matched none.

    Example::

        >>> RouterStats().unrouted
        0
    """

    events: int = 0
    unrouted: int = 0
    routed: dict[str, int] = attrs.field(factory=dict)


class EventRouter:
    """Routes events to handlers or pipeline branches by pattern (see the module doc).

    Example::

        >>> router = EventRouter()
        >>> seen = []
        >>> _ = router.add_route("agent_response", seen.append)
        >>> @router.route({"confidence": lambda c: c > 0.8}, name="confident")
        ... def act(event):
        ...     seen.append(("act", event["type"]))
        >>> _ = router.set_default(lambda e: seen.append(("default", e["type"])))
        >>> async def main():
        ...     await router.route_event({"type": "agent_response", "content": "hi"})
        ...     await router.route_event({"type": "analysis_update", "confidence": 0.9})
        ...     return await router.route_event({"type": "noise"})
        >>> trio.run(main)
        ['default']
        >>> seen
        [{'type': 'agent_response', 'content': 'hi'}, ('act', 'analysis_update'), ('default', 'noise')]
    """

    DEFAULT: ClassVar[str] = "default"

    def __init__(self, *, mode: RouteMode = "first", name: str = "router") -> None:
        one_of(*MODES).check("EventRouter", "mode", mode)
        self.name = name
        self.mode = mode
        self.routes: list[Route] = []
        self.default: Route | None = None
        self.stats = RouterStats()

    # -- building ------------------------------------------------------------------------
    def add_route(
        self,
        pattern: PatternSpec,
        handler: Handler | None = None,
        *,
        name: str | None = None,
        target: str | None = None,
    ) -> Route:
        """Add a route (checked in the order added). It needs a handler, a target or both."""
        if handler is None and target is None:
            raise ConfigError(
                f"EventRouter {self.name!r}: a route needs a handler or a target node"
            )
        if handler is not None and not callable(handler):
            raise ConfigError(
                f"EventRouter {self.name!r}: handler must be callable, got {handler!r}"
            )
        compiled = as_pattern(pattern)
        route_name = name or target or (pattern if isinstance(pattern, str) else None)
        if route_name is None:
            route_name = f"route{len(self.routes)}"
        if route_name == self.DEFAULT or any(r.name == route_name for r in self.routes):
            raise ConfigError(
                f"EventRouter {self.name!r}: duplicate route name {route_name!r}; pass name="
            )
        route = Route(route_name, compiled, handler, target)
        self.routes.append(route)
        return route

    def route(
        self, pattern: PatternSpec, *, name: str | None = None, target: str | None = None
    ) -> Callable[[Handler], Handler]:
        """Decorator form of :meth:`add_route`."""

        def register(handler: Handler) -> Handler:
            self.add_route(
                pattern, handler, name=name or getattr(handler, "__name__", None), target=target
            )
            return handler

        return register

    def set_default(self, handler: Handler | None = None, *, target: str | None = None) -> Route:
        """The route for events no pattern matches."""
        if handler is None and target is None:
            raise ConfigError(
                f"EventRouter {self.name!r}: the default route needs a handler or a target"
            )
        self.default = Route(self.DEFAULT, Pattern(), handler, target)
        return self.default

    def get_route(self, name: str) -> Route:
        """The route called ``name`` (for routers that pick routes by name)."""
        if self.default is not None and name == self.DEFAULT:
            return self.default
        for route in self.routes:
            if route.name == name:
                return route
        known = ", ".join(r.name for r in self.routes) or "(none)"
        raise ConfigError(f"EventRouter {self.name!r}: no route {name!r}; routes: {known}")

    @property
    def targets(self) -> set[str]:
        """Every node name a route (or the default) sends events to."""
        routes = [*self.routes, *([self.default] if self.default else [])]
        return {r.target for r in routes if r.target is not None}

    # -- deciding ------------------------------------------------------------------------
    def matches_pattern(self, event: Any, pattern: PatternSpec) -> bool:
        """Whether ``event`` matches ``pattern`` (any form :func:`as_pattern` accepts)."""
        return as_pattern(pattern).matches(event)

    def match(self, event: Any) -> list[Route]:
        """The routes ``event`` takes by pattern: first match or all matches, else the default."""
        chosen: list[Route] = []
        for route in self.routes:
            try:
                hit = route.pattern.matches(event)
            except Exception as exc:
                raise RoutingError(route.name, exc) from exc
            if hit:
                chosen.append(route)
                if self.mode == "first":
                    break
        if not chosen and self.default is not None:
            chosen.append(self.default)
        return chosen

    async def decide(self, event: Any) -> list[Route]:
        """The routes for ``event``. Override to route by prediction; the default matches."""
        return self.match(event)

    def _count(self, routes: Sequence[Route]) -> None:
        stats = self.stats
        stats.events += 1
        if not routes:
            stats.unrouted += 1
        for route in routes:
            stats.routed[route.name] = stats.routed.get(route.name, 0) + 1

    async def route_event(self, event: Any) -> list[str]:
        """Decide, call the handlers of the chosen routes in order; return their names."""
        routes = await self.decide(event)
        self._count(routes)
        for route in routes:
            await route.call(event)
        return [route.name for route in routes]

    def as_node(self, name: str | None = None) -> RouterNode:
        """This router as a node of an EventPipeline graph (see :class:`RouterNode`)."""
        return RouterNode(name or self.name, self)


class RouterNode(Node):
    """An :class:`EventRouter` as a graph node: route targets name its successor nodes.

    Each event goes to the successors its routes target (several in ``mode="all"``) and to
    the routes' handlers; an event no route takes is counted in ``router.stats.unrouted``
    and goes nowhere. Connect the router to every target; the graph is checked when it is
    validated (a target that is not connected, or a successor no route targets, is an error).
    A predicate or handler that raises fails that event under the pipeline's error policy.

    Example::

        >>> from haive.dataflow import EventPipeline, TransformNode
        >>> router = EventRouter(name="by_type")
        >>> _ = router.add_route("alert", target="alerts")
        >>> _ = router.set_default(target="rest")
        >>> pipeline = EventPipeline("routed")
        >>> _ = pipeline.add_node(router.as_node())
        >>> _ = pipeline.add_node(TransformNode(name="alerts", transform_fn=lambda e: "ALERT"))
        >>> _ = pipeline.add_node(TransformNode(name="rest", transform_fn=lambda e: e["type"]))
        >>> for a, b in [("input", "by_type"), ("by_type", "alerts"), ("by_type", "rest"),
        ...              ("alerts", "output"), ("rest", "output")]:
        ...     _ = pipeline.connect(a, b)
        >>> async def main():
        ...     async with pipeline.process() as p:
        ...         return [(await p.send({"type": t})).outputs for t in ("alert", "tick")]
        >>> trio.run(main)
        [['ALERT'], ['tick']]
    """

    PLUGIN_NAME: ClassVar[str] = "router"

    def __init__(self, name: str, router: EventRouter, *, on_error: str | None = None) -> None:
        if not isinstance(router, EventRouter):
            raise ConfigError(f"RouterNode {name!r}: expected an EventRouter, got {router!r}")
        self.name = NON_EMPTY_STR.check("RouterNode", "name", name)
        self.router = router
        self.on_error = NODE_ON_ERROR.check("RouterNode", "on_error", on_error)
        self._custom_decide = type(router).decide is not EventRouter.decide

    def check_successors(self, successors: Iterable[str]) -> None:
        """Called when the graph is validated: targets and successors must agree."""
        connected = set(successors)
        targets = self.router.targets
        missing = sorted(targets - connected)
        if missing:
            raise GraphError(
                f"router {self.name!r} routes to {', '.join(map(repr, missing))}, which "
                f"{'is' if len(missing) == 1 else 'are'} not connected from it: "
                f"connect({self.name!r}, {missing[0]!r})"
            )
        idle = sorted(connected - targets)
        if idle:
            raise GraphError(
                f"router {self.name!r} is connected to {', '.join(map(repr, idle))} but no "
                "route targets it"
            )

    async def _routes_for(self, item: Any, ctx: NodeContext) -> list[Route] | None:
        router = self.router
        try:
            routes = await router.decide(item) if self._custom_decide else router.match(item)
        except Exception as exc:
            await ctx.fail(item, exc)
            return None
        router._count(routes)
        for route in routes:
            if route.handler is not None:
                try:
                    await route.call(item)
                except RoutingError as exc:
                    await ctx.fail(item, exc)
        return routes

    async def process_batch(self, batch: list[Any], ctx: NodeContext) -> list[Any]:
        """Outside a graph: call handlers, return the events some route targets."""
        out: list[Any] = []
        for item in batch:
            routes = await self._routes_for(item, ctx)
            if routes and any(route.target is not None for route in routes):
                out.append(item)
        return out

    async def run_routed(
        self, ctx: NodeContext, inbox: BoundedBuffer[Any], outputs: Mapping[str, Emit]
    ) -> None:
        """The node's task in a graph: ``outputs`` maps each successor's name to its input."""
        stats = ctx.stats
        while (batch := await ctx.next_batch(inbox)) is not None:
            n = len(batch)
            per_target: dict[str, list[Any]] = {}
            for item in batch:
                routes = await self._routes_for(item, ctx)
                for route in routes or ():
                    if route.target is not None:
                        per_target.setdefault(route.target, []).append(item)
            stats.batches += 1
            for target, items in per_target.items():
                stats.items_out += len(items)
                await outputs[target](items)
            stats.in_progress -= n
            if ctx.on_progress is not None:
                ctx.on_progress()


__all__ = [
    "MISSING",
    "EventRouter",
    "Pattern",
    "Route",
    "RouterNode",
    "RouterStats",
    "RoutingError",
    "as_pattern",
    "event_type",
    "get_field",
]
