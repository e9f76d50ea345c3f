"""Built-in serializers: json (orjson) and msgpack."""

from __future__ import annotations

from typing import Any

from ..hookspecs import hookimpl
from ..serializers import JsonSerializer, MessagePackSerializer


@hookimpl
def haive_register_serializers() -> list[type[Any]]:
    return [JsonSerializer, MessagePackSerializer]
