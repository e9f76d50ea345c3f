"""EnrichmentTransform: metadata about an item and what earlier steps found out about it."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from haive.dataflow.errors import ConfigError
from haive.dataflow.pipelines.chain import ChainResult
from haive.dataflow.runtime.nodes import is_async_callable
from haive.dataflow.runtime.retry import RetryPolicy

from .records import annotate, text_of, value_of
from .transforms import TextTransform

#: Fields of a record (or steps of a chain) whose confidence ``include_confidence`` reports.
CONFIDENCE_SOURCES = ("classification", "sentiment", "route")


def _confidence(value: Any) -> float | None:
    if value is None:
        return None
    found = (
        value.get("confidence")
        if isinstance(value, Mapping)
        else getattr(value, "confidence", None)
    )
    if found is None and not isinstance(value, Mapping):
        compound = getattr(value, "compound", None)  # a Sentiment: its strength
        found = abs(compound) if compound is not None else None
    return float(found) if isinstance(found, int | float) else None


class EnrichmentTransform(TextTransform):
    """Builds a ``metadata`` mapping for an item: text statistics, when it was processed, the
    confidence of earlier classification / sentiment results, and your own ``enrichers``.

    In a :class:`~haive.dataflow.pipelines.chain.TransformationChain` it reads the chain's state (every
    earlier output) and its output is also ``result.metadata``. As a pipeline node it merges
    the metadata into the item's existing ``metadata``.

    ``enrichers`` maps a key to a function of the item (sync or async: a lookup in a
    database, a feature store...). ``clock`` gives ``processed_at`` (seconds since the epoch).

    Example::

        >>> import trio
        >>> from haive.dataflow.pipelines.chain import ChainResult
        >>> enrich = EnrichmentTransform(enrichers={"shout": lambda text: text.isupper()}, clock=lambda: 0.0)
        >>> state = ChainResult("HELLO", {"classification": {"label": "greeting", "confidence": 0.9}})
        >>> trio.run(enrich.transform, state)
        {'characters': 5, 'words': 1, 'processed_at': 0.0, 'steps': ['classification'], 'confidence': {'classification': 0.9}, 'label': 'greeting', 'shout': True}
    """

    PLUGIN_NAME: ClassVar[str] = "enrichment"
    chain_input: ClassVar[str] = "state"
    output_name: ClassVar[str | None] = "metadata"

    def __init__(
        self,
        *,
        add_metadata: bool = True,
        include_confidence: bool = True,
        enrichers: Mapping[str, Callable[[Any], Any]] | None = None,
        clock: Callable[[], float] = time.time,
        name: str = "enrichment",
        field: str = "metadata",
        text_field: str = "text",
        on_error: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(name, field=field, text_field=text_field, on_error=on_error, retry=retry)
        self.add_metadata = add_metadata
        self.include_confidence = include_confidence
        self.enrichers = dict(enrichers or {})
        for key, fn in self.enrichers.items():
            if not callable(fn):
                raise ConfigError(f"EnrichmentTransform {name!r}: enricher {key!r} is not callable")
        self.clock = clock

    async def _enrich(self, item: Any) -> dict[str, Any]:
        if isinstance(item, ChainResult):
            subject = item.input
            found: dict[str, Any] = dict(item.outputs)
            steps: list[str] | None = list(item.steps)
        else:
            subject = item
            found = {key: value_of(item, key) for key in CONFIDENCE_SOURCES}
            steps = None
        metadata: dict[str, Any] = {}
        if self.add_metadata:
            try:
                text = text_of(subject, self.text_field)
            except TypeError:
                text = None
            if text is not None:
                metadata["characters"] = len(text)
                metadata["words"] = len(text.split())
            metadata["processed_at"] = self.clock()
            if steps is not None:
                metadata["steps"] = steps
        if self.include_confidence:
            confidences = {
                key: conf
                for key, value in found.items()
                if (conf := _confidence(value)) is not None
            }
            if confidences:
                metadata["confidence"] = confidences
            classification = found.get("classification")
            if classification is not None:
                label = (
                    classification.get("label")
                    if isinstance(classification, Mapping)
                    else getattr(classification, "label", None)
                )
                if label is not None:
                    metadata["label"] = label
        for key, fn in self.enrichers.items():
            value = fn(subject)
            if is_async_callable(fn):
                value = await value
            metadata[key] = value
        return metadata

    async def transform_batch(self, items: Any) -> list[Any]:
        return [await self._enrich(item) for item in items]

    async def compute(self, texts: list[str]) -> list[Any]:
        return [await self._enrich(text) for text in texts]

    def attach(self, item: Any, value: Any) -> Any:
        existing = value_of(item, self.field)
        if isinstance(existing, Mapping):
            value = {**existing, **value}
        return annotate(item, self.field, value)
