"""IntelligentEventRouter: route events by a learned model, with pattern rules as fallback."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, Literal

import attrs
import numpy as np

from haive.dataflow.errors import ConfigError
from haive.dataflow.runtime.nodes import Node, NodeContext, check_error_policy, is_async_callable
from haive.dataflow.runtime.retry import RetryPolicy

from .classification import ClassificationTransform
from .embeddings import EmbeddingTransform, normalize_rows

Method = Literal["model", "pattern", "default", "none"]
Handler = Callable[[Any], Any]


@attrs.frozen
class RouteDecision:
    """Where an event went and why.

    ``method`` is ``"model"`` (the learned model was confident enough), ``"pattern"`` (a
    pattern rule matched), ``"default"`` (the default handler) or ``"none"``. ``candidate``
    and ``confidence`` are the model's best guess even when it was not used; ``result`` is
    what the handler returned.

    Example::

        >>> RouteDecision("billing", "model", 0.82, {"text": "refund"}, True).route
        'billing'
    """

    route: str | None
    method: Method
    confidence: float | None
    event: Any = attrs.field(repr=False)
    handled: bool = False
    result: Any = attrs.field(default=None, repr=False)
    candidate: str | None = None


def _lookup(event: Any, path: str) -> Any:
    value = event
    for part in path.split("."):
        if isinstance(value, Mapping):
            if part not in value:
                return _MISSING
            value = value[part]
        else:
            value = getattr(value, part, _MISSING)
            if value is _MISSING:
                return _MISSING
    return value


_MISSING = object()


def _field_matches(expected: Any, value: Any) -> bool:
    if value is _MISSING:
        return False
    if isinstance(expected, re.Pattern):
        return isinstance(value, str) and expected.search(value) is not None
    if isinstance(expected, str):
        return isinstance(value, str) and fnmatch.fnmatchcase(value, expected)
    if callable(expected):
        return bool(expected(value))
    return bool(value == expected)


@attrs.define
class Route:
    """A named route: its handler, the examples the model learns from and a pattern rule."""

    name: str
    handler: Handler | None = None
    examples: list[str] = attrs.field(factory=list)
    pattern: Any = None

    def matches(self, event: Any, text: str) -> bool:
        """Whether the pattern rule matches ``event`` (whose text is ``text``)."""
        pattern = self.pattern
        if pattern is None:
            return False
        if isinstance(pattern, re.Pattern):
            return pattern.search(text) is not None
        if isinstance(pattern, Mapping):
            return all(
                _field_matches(expected, _lookup(event, key)) for key, expected in pattern.items()
            )
        return bool(pattern(event))


class IntelligentEventRouter(Node):
    """Routes each event to a handler: first by a learned model, then by pattern rules.

    * Model: give routes ``examples`` (the router embeds them and picks the route with the
      most similar example) or a ``classifier`` (a fitted scikit-learn classifier whose classes
      are route names, or a :class:`~haive_contrib_ai.classification.ClassificationTransform`).
      Its answer is used when its confidence (cosine similarity, or probability) reaches
      ``threshold``.
    * Patterns, in the order routes were added: a regex (str or compiled) searched in the
      event's text, a mapping of field paths to expected values (``{"type": "order.*"}``:
      globs for strings, compiled regexes, predicates, or equal values), or a predicate.
    * Otherwise the default handler (:meth:`set_default`), if any.

    Handlers may be sync or async; ``route_event`` returns a :class:`RouteDecision`. As a
    pipeline node the router routes every event of a batch (the model sees the whole batch in
    one call) and emits the decisions. An event's text is ``text_fn(event)`` if given, else
    the str itself, its ``text`` field, or its fields written out.

    Example (pattern rules only; see the tests and examples for the learned model)::

        >>> import trio
        >>> router = IntelligentEventRouter()
        >>> seen = []
        >>> router.add_route("orders", seen.append, pattern={"type": "order.*"})
        >>> router.add_route("errors", seen.append, pattern=r"(?i)\\berror\\b")
        >>> decision = trio.run(router.route_event, {"type": "log", "text": "Disk ERROR on node 3"})
        >>> decision.route, decision.method, decision.handled
        ('errors', 'pattern', True)
        >>> trio.run(router.route_event, {"type": "order.created"}).route
        'orders'
    """

    PLUGIN_NAME: ClassVar[str] = "event_router"

    def __init__(
        self,
        *,
        embedder: EmbeddingTransform | None = None,
        classifier: Any = None,
        threshold: float = 0.5,
        text_fn: Callable[[Any], str] | None = None,
        text_field: str = "text",
        name: str = "event_router",
        on_error: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        where = f"IntelligentEventRouter {name!r}"
        if not isinstance(threshold, int | float) or not -1 <= threshold <= 1:
            raise ConfigError(f"{where}: threshold must be in [-1, 1], got {threshold!r}")
        check_error_policy(on_error, where)
        self.name = name
        self.threshold = float(threshold)
        self.text_fn = text_fn
        self.text_field = text_field
        self.on_error = on_error
        self.retry = retry
        self._embedder = embedder
        self._owns_embedder = embedder is None
        if classifier is not None and not isinstance(classifier, ClassificationTransform):
            classifier = ClassificationTransform(
                model=classifier, confidence_threshold=self.threshold, embedder=embedder
            )
        self.classifier: ClassificationTransform | None = classifier
        self.routes: dict[str, Route] = {}
        self.default: Handler | None = None
        self._example_matrix: np.ndarray | None = None
        self._example_routes: list[str] = []
        self._examples_dirty = False

    @property
    def embedder(self) -> EmbeddingTransform:
        if self._embedder is None:
            self._embedder = EmbeddingTransform()
        return self._embedder

    # -- building ------------------------------------------------------------------------
    def add_route(
        self,
        name: str,
        handler: Handler | None = None,
        *,
        examples: Iterable[str] = (),
        pattern: str | re.Pattern[str] | Mapping[str, Any] | Callable[[Any], bool] | None = None,
    ) -> None:
        """Add route ``name`` with its handler, model examples and/or pattern rule."""
        if not isinstance(name, str) or not name:
            raise ConfigError(f"route names must be non-empty strings, got {name!r}")
        if name in self.routes:
            raise ConfigError(
                f"IntelligentEventRouter {self.name!r}: route {name!r} already exists"
            )
        if handler is not None and not callable(handler):
            raise ConfigError(f"route {name!r}: handler must be callable, got {handler!r}")
        if isinstance(pattern, str):
            try:
                pattern = re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"route {name!r}: invalid pattern {pattern!r}: {exc}") from None
        elif (
            pattern is not None
            and not isinstance(pattern, re.Pattern | Mapping)
            and not callable(pattern)
        ):
            raise ConfigError(
                f"route {name!r}: pattern must be a regex, a mapping of fields or a predicate, got {pattern!r}"
            )
        route = Route(name, handler, [], pattern)
        self.routes[name] = route
        self.learn(name, examples)

    def learn(self, route: str, examples: Iterable[str]) -> None:
        """Add examples of ``route`` for the model (embedded on the next routing call)."""
        if route not in self.routes:
            raise ConfigError(
                f"unknown route {route!r}; routes: {', '.join(self.routes) or '(none)'}"
            )
        new = [e for e in examples]
        if not all(isinstance(e, str) and e for e in new):
            raise ConfigError(f"route {route!r}: examples must be non-empty strings")
        if new:
            self.routes[route].examples.extend(new)
            self._examples_dirty = True

    def set_default(self, handler: Handler | None) -> None:
        """The handler for events no model answer and no pattern claims."""
        if handler is not None and not callable(handler):
            raise ConfigError(f"default handler must be callable, got {handler!r}")
        self.default = handler

    # -- running -------------------------------------------------------------------------
    def text(self, event: Any) -> str:
        """The text the model reads and regex patterns search."""
        if self.text_fn is not None:
            return self.text_fn(event)
        if isinstance(event, str):
            return event
        if isinstance(event, Mapping):
            value = event.get(self.text_field)
            if isinstance(value, str):
                return value
            return " ".join(
                f"{k} {self.text(v) if isinstance(v, Mapping) else v}"
                for k, v in event.items()
                if isinstance(v, str | int | float | Mapping) and not isinstance(v, bool)
            )
        value = getattr(event, self.text_field, None)
        if isinstance(value, str):
            return value
        data = getattr(event, "data", None)
        if isinstance(data, Mapping):
            kind = getattr(event, "type", "")
            return f"{kind} {self.text(data)}".strip()
        return str(event)

    async def open(self) -> None:
        if self.classifier is not None:
            await self.classifier.open()
        await self._refresh_examples()

    async def aclose(self) -> None:
        if self._owns_embedder and self._embedder is not None:
            await self._embedder.aclose()

    async def _refresh_examples(self) -> None:
        if not self._examples_dirty:
            return
        texts, owners = [], []
        for route in self.routes.values():
            for example in route.examples:
                texts.append(example)
                owners.append(route.name)
        self._example_matrix = normalize_rows(await self.embedder.embed_texts(texts))
        self._example_routes = owners
        self._examples_dirty = False

    async def predict_batch(self, events: Sequence[Any]) -> list[tuple[str | None, float | None]]:
        """The model's ``(route, confidence)`` per event (``(None, None)`` without a model)."""
        if not events:
            return []
        if self.classifier is not None:
            predictions = await self.classifier.transform_batch([self.text(e) for e in events])
            return [(p.candidate, p.confidence) for p in predictions]
        await self._refresh_examples()
        if self._example_matrix is None or not len(self._example_routes):
            return [(None, None)] * len(events)
        vectors = normalize_rows(await self.embedder.embed_texts([self.text(e) for e in events]))
        sims = vectors @ self._example_matrix.T
        best = np.argmax(sims, axis=1)
        return [(self._example_routes[int(j)], float(sims[i, j])) for i, j in enumerate(best)]

    async def predict(self, event: Any) -> tuple[str | None, float | None]:
        """The model's best route for one event and its confidence."""
        return (await self.predict_batch([event]))[0]

    async def _dispatch(
        self, event: Any, candidate: str | None, confidence: float | None
    ) -> RouteDecision:
        route: Route | None = None
        method: Method = "none"
        if candidate is not None and confidence is not None and confidence >= self.threshold:
            route, method = self.routes.get(candidate), "model"
        if route is None:
            text = self.text(event)
            for rule in self.routes.values():
                if rule.matches(event, text):
                    route, method = rule, "pattern"
                    break
        handler = route.handler if route is not None else self.default
        if route is None and handler is not None:
            method = "default"
        result = None
        if handler is not None:
            result = handler(event)
            if is_async_callable(handler):
                result = await result
        return RouteDecision(
            route.name if route is not None else None,
            method,
            confidence,
            event,
            handler is not None,
            result,
            candidate,
        )

    async def route_batch(self, events: Sequence[Any]) -> list[RouteDecision]:
        """Route many events; the model sees them in one call, handlers run in order."""
        predictions = await self.predict_batch(events)
        return [
            await self._dispatch(event, candidate, confidence)
            for event, (candidate, confidence) in zip(events, predictions, strict=True)
        ]

    async def route_event(self, event: Any) -> RouteDecision:
        """Route one event and run its handler."""
        return (await self.route_batch([event]))[0]

    async def __call__(self, event: Any) -> RouteDecision:
        return await self.route_event(event)

    async def process_batch(self, batch: list[Any], ctx: NodeContext) -> list[Any]:
        try:
            predictions = await self.predict_batch(batch)
        except Exception:
            # Find the events the model fails on, one by one; the others are routed.
            out: list[Any] = []
            for event in batch:
                try:
                    out.append(await self.route_event(event))
                except Exception as exc:
                    ok, value = await ctx.recover(self.route_event, event, exc, is_async=True)
                    if ok:
                        out.append(value)
            return out
        decisions: list[Any] = []
        for event, (candidate, confidence) in zip(batch, predictions, strict=True):
            try:
                decisions.append(await self._dispatch(event, candidate, confidence))
            except Exception as exc:
                ok, value = await ctx.recover(self.route_event, event, exc, is_async=True)
                if ok:
                    decisions.append(value)
        return decisions
