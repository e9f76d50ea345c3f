"""EncryptedSerializer: authenticated encryption around any haive serializer.

Wire format of one message (all lengths in bytes)::

    b"HVE" | version (1) = 0x01 | key-id length (1) | key id (ASCII) | nonce (12) | ciphertext + tag (16)

The cipher is AES-GCM with a fresh random 96-bit nonce per message. The header (magic,
version, key id) and the optional ``associated_data`` (e.g. the stream name) are
authenticated too, so changing the key id, moving a message to another stream or flipping
any bit is detected. Random nonces are safe for about 2**32 messages per key: rotate keys
well before that (:meth:`Keyring.rotate`).
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from cryptography.exceptions import InvalidTag

from haive.dataflow.errors import ConfigError, SerializationError
from haive.dataflow.io.serializers import MessagePackSerializer, Serializer

from .keyring import Keyring

MAGIC = b"HVE"
VERSION = 1
NONCE_SIZE = 12
TAG_SIZE = 16


class DecryptionError(SerializationError):
    """An encrypted message cannot be decrypted: tampered, truncated or wrong key."""


class UnknownKeyError(DecryptionError):
    """The message names a key id that is not in the keyring (retired, or never shared)."""


class NotEncryptedError(DecryptionError):
    """The bytes are not an encrypted haive message at all."""


class EncryptedSerializer(Serializer):
    """Encrypts what ``inner`` serializes (default MessagePack) with the keyring's primary key.

    With no ``keyring`` the keys come from the ``HAIVE_CRYPTO_KEYS`` environment variable,
    so ``registry.serializer("encrypted")()`` works in configured deployments.

    Example::

        >>> ring = Keyring.generate("k1")
        >>> s = EncryptedSerializer(keyring=ring, associated_data="orders")
        >>> token = s.dumps({"card": "4111 1111 1111 1111"})
        >>> b"4111" in token, s.key_id_of(token)
        (False, 'k1')
        >>> s.loads(token)
        {'card': '4111 1111 1111 1111'}
        >>> s.loads(token[:-1] + bytes([token[-1] ^ 1]))
        Traceback (most recent call last):
        ...
        haive_plugin_crypto.serializer.DecryptionError: encrypted: authentication failed for a message under key id 'k1': ...
    """

    PLUGIN_NAME: ClassVar[str] = "encrypted"
    content_type: ClassVar[str] = "application/vnd.haive.encrypted"

    def __init__(
        self,
        inner: Serializer | None = None,
        keyring: Keyring | None = None,
        *,
        associated_data: bytes | str = b"",
        max_size: int | None = None,
    ) -> None:
        super().__init__(max_size=max_size)
        if inner is not None and not isinstance(inner, Serializer):
            raise ConfigError(f"EncryptedSerializer: inner must be a Serializer, got {inner!r}")
        if keyring is not None and not isinstance(keyring, Keyring):
            raise ConfigError(f"EncryptedSerializer: keyring must be a Keyring, got {keyring!r}")
        self.inner = inner if inner is not None else MessagePackSerializer()
        self.keyring = keyring if keyring is not None else Keyring.from_env()
        if self.keyring.primary is None:
            raise ConfigError("EncryptedSerializer: the keyring has no key to encrypt with")
        self.associated_data = (
            associated_data.encode() if isinstance(associated_data, str) else bytes(associated_data)
        )

    # -- bytes ---------------------------------------------------------------------------
    def encrypt(self, plaintext: bytes) -> bytes:
        """Encrypt raw bytes under the primary key."""
        key_id = self.keyring.primary
        assert key_id is not None
        kid = key_id.encode("ascii")
        header = MAGIC + bytes([VERSION, len(kid)]) + kid
        nonce = os.urandom(NONCE_SIZE)
        sealed = self.keyring.cipher(key_id).encrypt(
            nonce, plaintext, header + self.associated_data
        )
        return header + nonce + sealed

    def _parse(self, data: bytes | bytearray | memoryview | str) -> tuple[str, bytes, bytes, bytes]:
        if isinstance(data, str):
            raise NotEncryptedError("encrypted: expected bytes, got a text string")
        raw = bytes(data)
        if raw[:3] != MAGIC:
            raise NotEncryptedError(
                f"encrypted: not an encrypted haive message (starts with {raw[:8]!r}, expected "
                f"{MAGIC!r}): was it written without encryption?"
            )
        if len(raw) < 5:
            raise DecryptionError("encrypted: message truncated inside its header")
        if raw[3] != VERSION:
            raise DecryptionError(
                f"encrypted: unsupported format version {raw[3]} (this reads {VERSION})"
            )
        end = 5 + raw[4]
        if len(raw) < end + NONCE_SIZE + TAG_SIZE:
            raise DecryptionError(
                f"encrypted: message of {len(raw)} bytes is truncated (a message is at least "
                f"{end + NONCE_SIZE + TAG_SIZE} bytes)"
            )
        try:
            key_id = raw[5:end].decode("ascii")
        except UnicodeDecodeError:
            raise DecryptionError(
                "encrypted: the key id in the header is not ASCII (corrupted)"
            ) from None
        return key_id, raw[:end], raw[end : end + NONCE_SIZE], raw[end + NONCE_SIZE :]

    def key_id_of(self, data: bytes | bytearray | memoryview) -> str:
        """The key id a message was encrypted under (without decrypting it)."""
        return self._parse(data)[0]

    def decrypt(self, data: bytes | bytearray | memoryview | str) -> bytes:
        """Check and decrypt raw bytes; raises :class:`DecryptionError` (or a subclass)."""
        self._check_size(data)
        key_id, header, nonce, sealed = self._parse(data)
        if key_id not in self.keyring:
            raise UnknownKeyError(
                f"encrypted: message was encrypted with key id {key_id!r}, which is not in the "
                f"keyring (keys: {', '.join(self.keyring.key_ids)}); add that key to read it"
            )
        try:
            return self.keyring.cipher(key_id).decrypt(nonce, sealed, header + self.associated_data)
        except InvalidTag:
            raise DecryptionError(
                f"encrypted: authentication failed for a message under key id {key_id!r}: it "
                "was modified or truncated, belongs to other associated data (another stream), "
                "or the key with that id is not the one it was encrypted with"
            ) from None

    def reencrypt(self, data: bytes | bytearray | memoryview) -> bytes:
        """Decrypt with whatever key it names and encrypt again under the primary key."""
        return self.encrypt(self.decrypt(data))

    # -- values --------------------------------------------------------------------------
    def dumps(self, value: Any) -> bytes:
        return self.encrypt(self.inner.dumps(value))

    def loads(self, data: bytes | bytearray | memoryview | str) -> Any:
        return self.inner.loads(self.decrypt(data))

    def __repr__(self) -> str:
        return f"EncryptedSerializer(inner={type(self.inner).__name__}(), keyring={self.keyring!r})"
