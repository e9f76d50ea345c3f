"""Hook implementations: the ``encrypted`` serializer.

Its public names (``EncryptedSerializer``, ``Keyring``) are declared in ``pyproject.toml``
(``haive.dataflow.exports``), with what it provides (``haive.dataflow.provides``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from haive.dataflow import hookimpl

if TYPE_CHECKING:
    from haive.dataflow.io.serializers import Serializer


@hookimpl
def haive_register_serializers() -> Iterable[type[Serializer]]:
    from .serializer import EncryptedSerializer

    return [EncryptedSerializer]
