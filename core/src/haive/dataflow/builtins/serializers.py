"""Built-in serializers: json (orjson) and msgpack."""

from __future__ import annotations

from typing import Any

from ..io.serializers import JsonSerializer, MessagePackSerializer
from ..plugins.hookspecs import hookimpl


@hookimpl
def haive_register_serializers() -> list[type[Any]]:
    return [JsonSerializer, MessagePackSerializer]
