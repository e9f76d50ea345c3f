"""Event schemas: validate what a source delivers and turn it into typed events.

A schema is a class from a well-kept validation library, used as it is:

* a ``msgspec.Struct`` (the fastest: validation and decoding in C, one call per item; the
  default recommendation, see ``bench/cases/schemas.py``),
* a pydantic v2 ``BaseModel`` (richer validators, the most widely known),
* an attrs class (structured by cattrs, which the core already uses for its settings).

The core depends on none of the first two: :class:`Schema` recognises the class it is
given and imports nothing that the class did not bring. Items may be dicts (already
decoded by the source), ``bytes``/``str`` holding JSON (decoded and validated in one
step), or instances of the class already. A record that does not match raises
:class:`SchemaError` naming the field and the problem; as the first node of a pipeline
(:meth:`~haive.dataflow.pipelines.streaming_pipeline.StreamingPipeline.set_schema`) such
records go to the dead-letter sink with that error and the pipeline goes on.

Evolving a schema: add fields with defaults (an old entry, replayed, still validates and
gets the default); unknown fields are ignored by default by all three libraries, so an
older worker reads newer entries too. Renaming or retyping a field is a new schema.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

import attrs

from ..errors import ConfigError, HaiveError
from .nodes import TransformNode
from .retry import NO_RETRY

T = TypeVar("T")

#: The name of the node :meth:`StreamingPipeline.set_schema` puts first.
SCHEMA_NODE_NAME = "schema"


class SchemaError(HaiveError, ValueError):
    """A record does not match its schema; the message names the fields and the problems.

    Example::

        >>> str(SchemaError("Order", ["price: expected a number, got 'ten'"]))
        "does not match Order: price: expected a number, got 'ten'"
    """

    def __init__(self, schema: str, problems: list[str]) -> None:
        self.schema = schema
        self.problems = problems
        super().__init__(f"does not match {schema}: " + "; ".join(problems))


def _msgspec_validator(model: type[T]) -> Callable[[Any], T]:
    import msgspec  # the class is a msgspec.Struct, so msgspec is installed

    decoder = msgspec.json.Decoder(model)
    name = model.__name__

    def validate(item: Any) -> T:
        try:
            if isinstance(item, bytes | bytearray | memoryview | str):
                return decoder.decode(item)
            if isinstance(item, model):
                return item
            return msgspec.convert(item, model)
        except msgspec.ValidationError as error:
            raise SchemaError(name, [str(error)]) from None
        except msgspec.DecodeError as error:
            raise SchemaError(name, [f"malformed JSON: {error}"]) from None

    return validate


def _pydantic_validator(model: Any) -> Callable[[Any], Any]:
    import pydantic  # the class is a pydantic model, so pydantic is installed

    name = model.__name__

    def validate(item: Any) -> Any:
        try:
            if isinstance(item, bytes | bytearray | str):
                return model.model_validate_json(item)
            if isinstance(item, model):
                return item
            return model.model_validate(item)
        except pydantic.ValidationError as error:
            problems = [
                f"{'.'.join(str(part) for part in e['loc']) or '(record)'}: {e['msg']}"
                for e in error.errors(include_url=False)
            ]
            raise SchemaError(name, problems) from None

    return validate


def _attrs_validator(model: type[T]) -> Callable[[Any], T]:
    import cattrs
    import orjson

    converter = cattrs.Converter(forbid_extra_keys=False)
    name = model.__name__

    def validate(item: Any) -> T:
        if isinstance(item, model):
            return item
        try:
            data = orjson.loads(item) if isinstance(item, bytes | bytearray | str) else item
            return converter.structure(data, model)
        except orjson.JSONDecodeError as error:
            raise SchemaError(name, [f"malformed JSON: {error}"]) from None
        except Exception as error:  # cattrs raises class and per-field errors
            raise SchemaError(name, cattrs.transform_error(error)) from None

    return validate


@attrs.frozen
class Schema(Generic[T]):
    """The validator of one schema class (msgspec ``Struct``, pydantic model or attrs class).

    Example::

        >>> import msgspec
        >>> class Tick(msgspec.Struct):
        ...     symbol: str
        ...     price: float
        ...     venue: str = "XNAS"          # added later: old records get the default
        >>> schema = Schema(Tick)
        >>> schema.validate({"symbol": "AAPL", "price": 101.5})
        Tick(symbol='AAPL', price=101.5, venue='XNAS')
        >>> schema.validate(b'{"symbol": "MSFT", "price": 1, "extra": true}')
        Tick(symbol='MSFT', price=1.0, venue='XNAS')
        >>> schema.validate({"symbol": "AAPL", "price": "ten"})
        Traceback (most recent call last):
        ...
        haive.dataflow.runtime.schemas.SchemaError: does not match Tick: Expected `float`, got `str` - at `$.price`
    """

    model: type[T]
    validate: Callable[[Any], T] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        model: Any = self.model
        if not isinstance(model, type):
            raise ConfigError(
                "Schema(model=...): model must be a msgspec.Struct, pydantic BaseModel or "
                f"attrs class, got {model!r}"
            )
        if hasattr(model, "__struct_fields__"):
            validator: Callable[[Any], Any] = _msgspec_validator(model)
        elif callable(getattr(model, "model_validate", None)):
            validator = _pydantic_validator(model)
        elif attrs.has(model):
            validator = _attrs_validator(model)
        else:
            raise ConfigError(
                "Schema(model=...): model must be a msgspec.Struct, pydantic BaseModel or "
                f"attrs class, got {model.__name__}"
            )
        object.__setattr__(self, "validate", validator)

    @property
    def name(self) -> str:
        """The schema class's name."""
        return self.model.__name__


def schema_node(model: type[Any], *, name: str = SCHEMA_NODE_NAME) -> TransformNode:
    """A node validating every item against ``model`` (see :class:`Schema`): it emits typed
    events and reports a record that does not match as a failed result (to the dead-letter
    sink, or the source's ``reject``) without retrying it, and goes on.

    Example::

        >>> import trio, msgspec
        >>> from haive.dataflow.runtime.nodes import NodeContext
        >>> class Reading(msgspec.Struct):
        ...     sensor: str
        ...     value: float
        >>> node = schema_node(Reading)
        >>> trio.run(node.process_batch, [{"sensor": "t1", "value": 20}], NodeContext("schema"))
        [Reading(sensor='t1', value=20.0)]
    """
    return TransformNode(
        name=name, transform_fn=Schema(model).validate, on_error="result", retry=NO_RETRY
    )
