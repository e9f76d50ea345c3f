"""The base of the AI transforms: one value per text, usable three ways.

A :class:`TextTransform` is

* a transform: ``await t.transform(text)`` returns the value (an embedding, a sentiment...),
  ``await t.transform_batch(texts)`` many at once (one model call), and ``await t(text)``
  is ``transform`` so ``stream.map(t)`` works in reactive streams;
* a step of a :class:`~haive.dataflow.pipelines.chain.TransformationChain` (it reads the chain's input by
  default: ``chain_input = "input"``);
* a pipeline node: it attaches its value to each item under ``field`` (see
  :func:`~haive_contrib_ai.records.annotate`) and passes the item on, a batch at a time.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, ClassVar

from haive.dataflow.errors import ConfigError
from haive.dataflow.runtime.nodes import Node, NodeContext, check_error_policy
from haive.dataflow.runtime.retry import RetryPolicy

from .records import annotate, text_of


class TextTransform(Node):
    """Computes one value per item's text; subclasses implement :meth:`compute`.

    Example: a transform counting characters::

        >>> import trio
        >>> class Length(TextTransform):
        ...     async def compute(self, texts):
        ...         return [len(t) for t in texts]
        >>> length = Length(name="length", field="length")
        >>> trio.run(length.transform, "four")
        4
        >>> trio.run(length.process_batch, ["ab", {"text": "abc"}], NodeContext("length"))
        [{'text': 'ab', 'length': 2}, {'text': 'abc', 'length': 3}]
    """

    PLUGIN_NAME: ClassVar[str] = ""
    #: Where a TransformationChain step of this transform reads from by default.
    chain_input: ClassVar[str] = "input"
    #: Extra name for this transform's output on a ChainResult.
    output_name: ClassVar[str | None] = None

    def __init__(
        self,
        name: str,
        *,
        field: str,
        text_field: str = "text",
        on_error: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{type(self).__name__}: name must be a non-empty string")
        if not isinstance(field, str) or not field:
            raise ConfigError(f"{type(self).__name__} {name!r}: field must be a non-empty string")
        check_error_policy(on_error, f"{type(self).__name__} {name!r}")
        self.name = name
        self.field = field
        self.text_field = text_field
        self.on_error = on_error
        self.retry = retry

    @abc.abstractmethod
    async def compute(self, texts: list[str]) -> list[Any]:
        """One value per text, in order (one model call for the whole list where possible)."""

    def texts(self, items: Sequence[Any]) -> list[str]:
        """The texts of ``items`` (str, mapping or record); a clear TypeError otherwise."""
        return [text_of(item, self.text_field) for item in items]

    async def transform_batch(self, items: Sequence[Any]) -> list[Any]:
        """The values for many items, in order."""
        if not items:
            return []
        values = await self.compute(self.texts(items))
        if len(values) != len(items):
            raise RuntimeError(
                f"{type(self).__name__}.compute returned {len(values)} values for {len(items)} texts"
            )
        return values

    async def transform(self, item: Any) -> Any:
        """The value for one item (a str, a mapping with a text, or a record)."""
        return (await self.transform_batch([item]))[0]

    async def __call__(self, item: Any) -> Any:
        return await self.transform(item)

    def attach(self, item: Any, value: Any) -> Any:
        """``item`` with ``value`` attached as :attr:`field` (what the node emits)."""
        return annotate(item, self.field, value)

    async def process_batch(self, batch: list[Any], ctx: NodeContext) -> list[Any]:
        try:
            values = await self.transform_batch(batch)
        except Exception:
            # Find the items that fail on their own; the others are not lost.
            out: list[Any] = []
            for item in batch:
                try:
                    value = await self.transform(item)
                except Exception as exc:
                    ok, value = await ctx.recover(self.transform, item, exc, is_async=True)
                    if not ok:
                        continue
                out.append(self.attach(item, value))
            return out
        return [self.attach(item, value) for item, value in zip(batch, values, strict=True)]
