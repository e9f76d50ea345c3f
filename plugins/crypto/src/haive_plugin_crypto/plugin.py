"""Hook implementations: the ``encrypted`` serializer and the public names."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from haive.dataflow import hookimpl

EXPORTS: dict[str, str] = {
    "EncryptedSerializer": "haive_plugin_crypto.serializer:EncryptedSerializer",
    "Keyring": "haive_plugin_crypto.keyring:Keyring",
}


@hookimpl
def haive_register_serializers() -> Iterable[type[Any]]:
    from .serializer import EncryptedSerializer

    return [EncryptedSerializer]


@hookimpl
def haive_streaming_exports() -> Mapping[str, str]:
    return EXPORTS
