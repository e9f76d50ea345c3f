"""Keyring: named AES keys; the primary one encrypts, every listed one decrypts."""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from haive.dataflow.errors import ConfigError

#: Environment variable read by :meth:`Keyring.from_env` (and by ``EncryptedSerializer()``
#: when no keyring is given): ``"k2:<base64 key>,k1:<base64 key>"``, primary first.
ENV_VAR = "HAIVE_CRYPTO_KEYS"

_KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_KEY_SIZES = (16, 24, 32)


def _check_key_id(key_id: object) -> str:
    if not isinstance(key_id, str) or not _KEY_ID.match(key_id):
        raise ConfigError(
            f"key id must be 1-64 characters among letters, digits and '._-', got {key_id!r}"
        )
    return key_id


def _check_key(key_id: str, key: object) -> bytes:
    if not isinstance(key, bytes | bytearray) or len(key) not in _KEY_SIZES:
        size = len(key) if isinstance(key, bytes | bytearray) else type(key).__name__
        raise ConfigError(
            f"key {key_id!r} must be 16, 24 or 32 bytes (AES-128/192/256), got {size}"
        )
    return bytes(key)


class Keyring:
    """Named AES-GCM keys. ``primary`` encrypts new messages; all keys decrypt.

    Rotation: :meth:`rotate` adds a new key and makes it primary; messages encrypted under
    older keys still decrypt as long as those keys stay listed; :meth:`retire` removes one
    (its messages then fail with an "unknown key id" error). Keys are shared secrets: load
    them from the environment or a secret store, never from code.

    Example::

        >>> ring = Keyring.generate("2026-01")
        >>> ring.primary
        '2026-01'
        >>> ring.rotate("2026-02")
        '2026-02'
        >>> sorted(ring.key_ids), ring.primary
        (['2026-01', '2026-02'], '2026-02')
        >>> copy = Keyring.from_spec(ring.to_spec())
        >>> copy.key_ids, copy.primary
        (['2026-02', '2026-01'], '2026-02')
    """

    def __init__(self, keys: Mapping[str, bytes] | None = None, primary: str | None = None) -> None:
        self._keys: dict[str, bytes] = {}
        self._ciphers: dict[str, AESGCM] = {}
        self.primary: str | None = None
        for key_id, key in (keys or {}).items():
            self.add(key_id, key)
        if primary is not None:
            if primary not in self._keys:
                raise ConfigError(f"primary key id {primary!r} is not in the keyring")
            self.primary = primary

    # -- building ------------------------------------------------------------------------
    @classmethod
    def generate(cls, key_id: str = "k1") -> Keyring:
        """A keyring with one fresh random 256-bit key."""
        ring = cls()
        ring.add(key_id, AESGCM.generate_key(bit_length=256), primary=True)
        return ring

    @classmethod
    def from_spec(cls, spec: str, *, source: str = "keyring spec") -> Keyring:
        """Parse ``"id:base64key,id2:base64key"`` (the first is primary)."""
        ring = cls()
        entries = [part.strip() for part in spec.split(",") if part.strip()]
        if not entries:
            raise ConfigError(f"{source}: no keys (expected 'id:base64key,...')")
        for entry in entries:
            key_id, sep, encoded = entry.partition(":")
            if not sep:
                raise ConfigError(f"{source}: entry {key_id!r} has no ':' (expected id:base64key)")
            try:
                key = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ConfigError(f"{source}: key {key_id!r} is not valid base64: {exc}") from exc
            ring.add(key_id, key, primary=ring.primary is None)
        return ring

    @classmethod
    def from_env(cls, var: str = ENV_VAR) -> Keyring:
        """The keyring in environment variable ``var`` (see :data:`ENV_VAR`)."""
        spec = os.environ.get(var)
        if not spec:
            raise ConfigError(
                f"no encryption keys: set {var}='k1:<base64 32-byte key>' (generate one with "
                'python -c "from haive_plugin_crypto import Keyring; '
                'print(Keyring.generate().to_spec())") or pass keyring='
            )
        return cls.from_spec(spec, source=var)

    def add(self, key_id: str, key: bytes, *, primary: bool = False) -> None:
        """Add a key (``primary=True`` also makes it the one that encrypts)."""
        _check_key_id(key_id)
        if key_id in self._keys:
            raise ConfigError(f"key id {key_id!r} is already in the keyring")
        self._keys[key_id] = _check_key(key_id, key)
        if primary or self.primary is None:
            self.primary = key_id

    def rotate(self, key_id: str | None = None, key: bytes | None = None) -> str:
        """Add a new key (random unless given) and make it primary; returns its id."""
        if key_id is None:
            n = len(self._keys) + 1
            while f"k{n}" in self._keys:
                n += 1
            key_id = f"k{n}"
        self.add(
            key_id, key if key is not None else AESGCM.generate_key(bit_length=256), primary=True
        )
        return key_id

    def retire(self, key_id: str) -> None:
        """Remove a key no message needs any more (not the primary one)."""
        if key_id == self.primary:
            raise ConfigError(f"key {key_id!r} is the primary key: rotate before retiring it")
        if key_id not in self._keys:
            raise ConfigError(f"key id {key_id!r} is not in the keyring")
        del self._keys[key_id]
        self._ciphers.pop(key_id, None)

    # -- use -----------------------------------------------------------------------------
    @property
    def key_ids(self) -> list[str]:
        return list(self._keys)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._keys

    def cipher(self, key_id: str) -> AESGCM:
        """The AES-GCM cipher of ``key_id`` (KeyError if absent)."""
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            cipher = self._ciphers[key_id] = AESGCM(self._keys[key_id])
        return cipher

    def to_spec(self) -> str:
        """``"id:base64key,..."`` with the primary first (what :meth:`from_spec` reads)."""
        order = sorted(self._keys, key=lambda k: k != self.primary)
        return ",".join(f"{k}:{base64.b64encode(self._keys[k]).decode()}" for k in order)

    def __repr__(self) -> str:
        return f"Keyring(key_ids={self.key_ids!r}, primary={self.primary!r})"
