"""Wire formats: JSON (orjson) and MessagePack, both bytes in / bytes out."""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import attrs
import msgpack
import orjson

from ..errors import SerializationError
from ..runtime.validation import POSITIVE_INT


class Serializer(abc.ABC):
    """Turns plain values (dicts, lists, str, numbers, bytes for msgpack) into bytes and back.

    ``max_size`` bounds what :meth:`loads` accepts, so an oversized message fails with a clear
    error before it is parsed.

    Example::

        >>> s = JsonSerializer()
        >>> s.loads(s.dumps({"a": 1}))
        {'a': 1}
    """

    PLUGIN_NAME: ClassVar[str]
    content_type: ClassVar[str]

    def __init__(self, *, max_size: int | None = None) -> None:
        self.max_size = POSITIVE_INT.optional().check(type(self).__name__, "max_size", max_size)

    @abc.abstractmethod
    def dumps(self, value: Any) -> bytes:
        """Encode ``value``; raises SerializationError naming the value's type on failure."""

    @abc.abstractmethod
    def loads(self, data: bytes | bytearray | memoryview | str) -> Any:
        """Decode ``data``; raises SerializationError saying what is wrong with it."""

    def _check_size(self, data: bytes | bytearray | memoryview | str) -> None:
        if self.max_size is not None and len(data) > self.max_size:
            raise SerializationError(
                f"{self.PLUGIN_NAME}: message of {len(data)} bytes exceeds the limit of "
                f"{self.max_size} bytes"
            )


def typed_event_fields(value: Any) -> Any:
    """The fields of a typed event (attrs instance, ``msgspec.Struct``, pydantic model) as
    builtins, for encoders that do not know the class (orjson's ``default``); a TypeError
    for anything else. Called only for values orjson cannot encode itself, so plain events
    pay nothing.

    Example::

        >>> import attrs
        >>> @attrs.frozen
        ... class Tick:
        ...     symbol: str
        ...     price: float
        >>> typed_event_fields(Tick("AAPL", 1.5))
        {'symbol': 'AAPL', 'price': 1.5}
    """
    if attrs.has(type(value)):
        return attrs.asdict(value)
    if hasattr(type(value), "__struct_fields__"):
        import msgspec  # the value is a msgspec.Struct, so msgspec is installed

        return msgspec.to_builtins(value)
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


class JsonSerializer(Serializer):
    """JSON through orjson (UTF-8 bytes; datetimes, dataclasses and typed events: attrs,
    msgspec and pydantic instances, see :func:`typed_event_fields`).

    Example::

        >>> JsonSerializer().dumps({"type": "tick", "price": 1.5})
        b'{"type":"tick","price":1.5}'
    """

    PLUGIN_NAME = "json"
    content_type = "application/json"

    def dumps(self, value: Any) -> bytes:
        try:
            return orjson.dumps(
                value, default=typed_event_fields, option=orjson.OPT_SERIALIZE_NUMPY
            )
        except TypeError as exc:
            raise SerializationError(f"json: cannot encode {type(value).__name__}: {exc}") from exc

    def loads(self, data: bytes | bytearray | memoryview | str) -> Any:
        self._check_size(data)
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise SerializationError(f"json: malformed message: {exc}") from exc


class MessagePackSerializer(Serializer):
    """MessagePack through msgpack: compact binary, bytes values kept as bytes.

    Example::

        >>> s = MessagePackSerializer()
        >>> s.loads(s.dumps({"blob": b"\\x00\\x01"}))
        {'blob': b'\\x00\\x01'}
    """

    PLUGIN_NAME = "msgpack"
    content_type = "application/msgpack"

    def dumps(self, value: Any) -> bytes:
        try:
            packed: bytes = msgpack.packb(value, use_bin_type=True, datetime=True)
            return packed
        except (TypeError, ValueError, OverflowError) as exc:
            raise SerializationError(
                f"msgpack: cannot encode {type(value).__name__}: {exc}"
            ) from exc

    def loads(self, data: bytes | bytearray | memoryview | str) -> Any:
        self._check_size(data)
        if isinstance(data, str):
            raise SerializationError("msgpack: expected bytes, got a text string")
        try:
            return msgpack.unpackb(data, raw=False, timestamp=3, strict_map_key=False)
        except TypeError as exc:
            # A map whose key is an array or a map: valid MessagePack, but no Python dict
            # can hold it (msgpack raises "unhashable type").
            raise SerializationError(
                f"msgpack: message has a map key Python cannot use: {exc}"
            ) from exc
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
            raise SerializationError(f"msgpack: malformed message: {exc}") from exc
