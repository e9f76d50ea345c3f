"""Fuzzing EncryptedSerializer with bytes a remote peer controls.

AES-GCM payloads are authenticated: any change to a message (a flipped bit anywhere,
truncation, extra bytes, another key id, another stream's associated data) must raise
:class:`DecryptionError` and never decode to a value. Random or unrelated bytes raise
``DecryptionError`` (or a subclass: ``NotEncryptedError``, ``UnknownKeyError``); a message
that authenticates but whose plaintext the inner serializer cannot read raises the inner
serializer's ``SerializationError``. Nothing else (``IndexError``, ``UnicodeDecodeError``,
``InvalidTag``...) may escape.
"""

from __future__ import annotations

from typing import Any

import pytest
from haive_plugin_crypto import (
    DecryptionError,
    EncryptedSerializer,
    Keyring,
    NotEncryptedError,
    UnknownKeyError,
)
from haive_plugin_crypto.serializer import MAGIC, VERSION
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from haive.dataflow import JsonSerializer, MessagePackSerializer
from haive.dataflow.errors import SerializationError

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

RING = Keyring({"k1": bytes(range(32)), "k2": bytes(range(1, 33))}, primary="k1")
SERIALIZER = EncryptedSerializer(keyring=RING, associated_data="orders")

values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.text(max_size=16),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


@FUZZ
@given(data=st.binary(max_size=128) | st.text(max_size=32))
@example(data=b"")
@example(data=MAGIC)
@example(data=MAGIC + bytes([VERSION]))
@example(data=MAGIC + bytes([VERSION, 0]) + bytes(28))  # empty key id
@example(data=MAGIC + bytes([VERSION, 255]) + b"k1")  # key id longer than the message
@example(data=MAGIC + bytes([VERSION, 2]) + b"\xff\xfe" + bytes(28))  # non-ASCII key id
@example(data=MAGIC + bytes([VERSION, 2]) + b"k1" + bytes(28))  # known key, bad tag
@example(data=MAGIC + bytes([VERSION + 1, 2]) + b"k1" + bytes(28))
def test_arbitrary_bytes_raise_a_decryption_error(data: bytes | str) -> None:
    with pytest.raises(DecryptionError):
        SERIALIZER.loads(data)


@FUZZ
@given(value=values, position=st.integers(min_value=0), mask=st.integers(1, 255))
def test_any_flipped_bits_are_detected(value: Any, position: int, mask: int) -> None:
    token = SERIALIZER.dumps(value)
    assert SERIALIZER.loads(token) == value
    tampered = bytearray(token)
    tampered[position % len(tampered)] ^= mask
    with pytest.raises(DecryptionError):
        SERIALIZER.loads(bytes(tampered))


@FUZZ
@given(value=values, cut=st.integers(min_value=0), tail=st.binary(min_size=1, max_size=32))
def test_truncated_or_extended_messages_are_detected(value: Any, cut: int, tail: bytes) -> None:
    token = SERIALIZER.dumps(value)
    with pytest.raises(DecryptionError):
        SERIALIZER.loads(token[: cut % len(token)])
    with pytest.raises(DecryptionError):
        SERIALIZER.loads(token + tail)


@FUZZ
@given(value=values, data=st.data())
def test_spliced_messages_are_detected(value: Any, data: st.DataObject) -> None:
    """A header from one message with the body of another (or another key id) never reads."""
    token = SERIALIZER.dumps(value)
    other = SERIALIZER.dumps(data.draw(values))
    header = 5 + len("k1")
    # This message's header and nonce, the other's ciphertext and tag.
    with pytest.raises(DecryptionError):
        SERIALIZER.loads(token[: header + 12] + other[header + 12 :])
    renamed = token[:3] + bytes([VERSION, 2]) + b"k2" + token[header:]
    with pytest.raises(DecryptionError):
        SERIALIZER.loads(renamed)
    elsewhere = EncryptedSerializer(keyring=RING, associated_data="refunds")
    with pytest.raises(DecryptionError):
        elsewhere.loads(token)


@FUZZ
@given(plaintext=st.binary(max_size=64))
@example(plaintext=b"\x81\x90\x00")  # msgpack map keyed by an array
@example(plaintext=b"\xc1")  # a byte msgpack never uses
def test_authentic_but_unreadable_plaintext_is_the_inner_serializer_error(
    plaintext: bytes,
) -> None:
    for inner in (MessagePackSerializer(), JsonSerializer()):
        serializer = EncryptedSerializer(inner, RING)
        token = serializer.encrypt(plaintext)
        assert serializer.decrypt(token) == plaintext
        try:
            serializer.loads(token)
        except DecryptionError:  # pragma: no cover - the message is authentic
            pytest.fail("an authentic message was reported as tampered")
        except SerializationError:
            pass


def test_error_kinds_say_what_is_wrong() -> None:
    token = SERIALIZER.dumps({"a": 1})
    with pytest.raises(NotEncryptedError):
        SERIALIZER.loads(b'{"a": 1}')
    retired = Keyring({"k3": bytes(32)})
    with pytest.raises(UnknownKeyError, match="key id 'k1'"):
        EncryptedSerializer(keyring=retired, associated_data="orders").loads(token)
