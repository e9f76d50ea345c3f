"""Serializers, events and configuration: bad input gets errors that name the problem."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from haive.dataflow import ConfigError, Event, JsonSerializer, MessagePackSerializer, StreamConfig
from haive.dataflow.errors import InvalidMessageError, SerializationError
from haive.dataflow.runtime.units import parse_duration, parse_size

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_serializers_round_trip(value):
    for serializer in (JsonSerializer(), MessagePackSerializer()):
        assert serializer.loads(serializer.dumps(value)) == value


def test_malformed_and_oversized_messages():
    with pytest.raises(SerializationError, match="json: malformed message"):
        JsonSerializer().loads(b'{"a": ')
    with pytest.raises(SerializationError, match="exceeds the limit of 10 bytes"):
        JsonSerializer(max_size=10).loads(b'{"aaaaaaaaaaaa": 1}')
    with pytest.raises(SerializationError, match="msgpack: malformed message"):
        MessagePackSerializer().loads(b"\xc1")
    with pytest.raises(SerializationError, match="json: cannot encode object"):
        JsonSerializer().dumps(object())
    with pytest.raises(SerializationError, match="msgpack: expected bytes"):
        MessagePackSerializer().loads("text")


def test_msgpack_keeps_bytes():
    s = MessagePackSerializer()
    assert s.loads(s.dumps({"frame": b"\x00\xff"})) == {"frame": b"\x00\xff"}


def test_event_wire_validation():
    event = Event(type="tick", data={"p": 1}, key="k")
    assert Event.from_wire(event.to_wire()) == event
    with pytest.raises(InvalidMessageError, match=r"expected an object, got list"):
        Event.from_wire([1, 2])
    with pytest.raises(InvalidMessageError, match=r"\$\.type"):
        Event.from_wire({"type": 5})
    with pytest.raises(InvalidMessageError, match=r"unknown key|extra"):
        Event.from_wire({"type": "t", "colour": "red"})
    with pytest.raises(InvalidMessageError, match=r"\$\.timestamp"):
        Event.from_wire({"type": "t", "timestamp": "yesterday"})


def test_stream_config_validation():
    config = StreamConfig(buffer_size=10_000, chunk_size=1000, max_memory_usage="2GB")
    assert config.max_memory_usage == 2_000_000_000
    with pytest.raises(ConfigError, match=r"unknown key\(s\): buffer_sise"):
        StreamConfig.from_dict({"buffer_sise": 10})
    with pytest.raises(ConfigError, match="buffer_size must be an integer >= 1, got 0"):
        StreamConfig(buffer_size=0)
    with pytest.raises(ConfigError, match="max_memory_usage must be a size"):
        StreamConfig(max_memory_usage="lots")
    with pytest.raises(ConfigError, match="must be a mapping"):
        StreamConfig.from_dict([("buffer_size", 1)])  # type: ignore[arg-type]


def test_units():
    assert parse_size("64k") == 64_000
    assert parse_size("1.5 MiB") == 1_572_864
    assert parse_duration("30m") == 1800.0
    with pytest.raises(ConfigError):
        parse_duration("-5s")
    with pytest.raises(ConfigError):
        parse_size(-1)
