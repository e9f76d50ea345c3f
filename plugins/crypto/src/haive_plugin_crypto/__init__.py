"""haive-plugin-crypto: end-to-end payload encryption (AES-GCM, key ids, rotation).

Wrap any serializer with :class:`EncryptedSerializer` so that whatever carries the bytes (a
Redis stream, a WebSocket relay, a file) only ever sees ciphertext.
"""

from __future__ import annotations

from .keyring import ENV_VAR, Keyring
from .serializer import (
    DecryptionError,
    EncryptedSerializer,
    NotEncryptedError,
    UnknownKeyError,
)

__all__ = [
    "ENV_VAR",
    "DecryptionError",
    "EncryptedSerializer",
    "Keyring",
    "NotEncryptedError",
    "UnknownKeyError",
]
