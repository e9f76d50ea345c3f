"""Fuzzing the core serializers with bytes a remote peer controls.

Whatever arrives (random bytes, text, a valid message truncated, corrupted or extended),
``loads`` either returns a value or raises :class:`SerializationError` (a ``ValueError``):
never a raw ``KeyError``/``IndexError``/``TypeError``/``struct.error`` from the parser.
JSON and MessagePack are not authenticated, so a corrupted message may decode to another
value; what matters here is that nothing else escapes.
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from haive.dataflow import JsonSerializer, MessagePackSerializer, Serializer, get_registry
from haive.dataflow.errors import SerializationError

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: Every serializer the core registers (through the registry: builtins/serializers.py).
CORE_SERIALIZERS: list[type[Serializer]] = [JsonSerializer, MessagePackSerializer]

#: Plain values both formats carry.
values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    # No infinities: orjson writes them as null (JSON has none), so they do not round-trip.
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def decode(serializer: Serializer, data: bytes | str) -> None:
    """``loads`` must succeed or raise SerializationError; anything else fails the test."""
    try:
        serializer.loads(data)
    except SerializationError:
        pass


def test_the_core_registers_these_serializers() -> None:
    registry = get_registry()
    assert {registry.serializer(cls.PLUGIN_NAME) for cls in CORE_SERIALIZERS} == set(
        CORE_SERIALIZERS
    )


@pytest.mark.parametrize("cls", CORE_SERIALIZERS, ids=lambda c: c.PLUGIN_NAME)
@FUZZ
@given(data=st.binary(max_size=256) | st.text(max_size=64))
# A map keyed by an array: valid MessagePack, but unhashable in Python (was a raw TypeError).
@example(data=b"\x81\x90\x00")
# A map keyed by a map.
@example(data=b"\x81\x80\x00")
# A timestamp extension with a length no timestamp has.
@example(data=b"\xd5\xff\x00\x00")
# Nesting deeper than either parser allows.
@example(data=b"[" * 2000)
@example(data=b"\x91" * 2000)
# Invalid UTF-8 and a lone surrogate.
@example(data=b'"\xff"')
@example(data="\ud800")
def test_arbitrary_input_raises_only_serialization_error(
    cls: type[Serializer], data: bytes | str
) -> None:
    decode(cls(), data)


@pytest.mark.parametrize("cls", CORE_SERIALIZERS, ids=lambda c: c.PLUGIN_NAME)
@FUZZ
@given(
    value=values,
    cut=st.integers(min_value=0),
    flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(1, 255)), max_size=4),
    tail=st.binary(max_size=8),
)
def test_truncated_corrupted_or_extended_messages_raise_only_serialization_error(
    cls: type[Serializer],
    value: Any,
    cut: int,
    flips: list[tuple[int, int]],
    tail: bytes,
) -> None:
    serializer = cls()
    token = serializer.dumps(value)
    assert serializer.loads(token) == value
    decode(serializer, token[: cut % (len(token) + 1)])
    corrupted = bytearray(token)
    for position, mask in flips:
        corrupted[position % len(corrupted)] ^= mask
    decode(serializer, bytes(corrupted))
    decode(serializer, token + tail)


@pytest.mark.parametrize("cls", CORE_SERIALIZERS, ids=lambda c: c.PLUGIN_NAME)
@FUZZ
@given(data=st.binary(min_size=9, max_size=64))
def test_max_size_is_enforced_before_parsing(cls: type[Serializer], data: bytes) -> None:
    with pytest.raises(SerializationError, match="exceeds the limit of 8 bytes"):
        cls(max_size=8).loads(data)


def test_unusable_map_keys_are_a_serialization_error() -> None:
    """Regression: a MessagePack map keyed by an array escaped as a raw TypeError."""
    data = msgpack.packb({(1, 2): "x"}, use_bin_type=True)  # packs the tuple key as an array
    with pytest.raises(SerializationError, match="map key"):
        MessagePackSerializer().loads(data)
