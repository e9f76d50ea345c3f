"""Event records and their wire format (validated through the core's cattrs converter)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

import attrs

from ..errors import ConfigError, InvalidMessageError
from .convert import structure, unstructure
from .validation import NON_EMPTY_STR, instance_of, number

_MAPPING = instance_of(Mapping, "a mapping (dict)")


def _new_id() -> str:
    return uuid.uuid4().hex


@attrs.frozen(kw_only=True)
class Event:
    """An immutable event: a ``type``, its ``data``, an id, a timestamp and an optional key.

    ``key`` partitions keyed state; ``timestamp`` is event time (seconds since the epoch).

    Example::

        >>> e = Event(type="tick", data={"price": 1.5}, key="AAPL", id="e1", timestamp=1.0)
        >>> Event.from_wire(e.to_wire()) == e
        True
        >>> Event.from_wire({"type": 3})
        Traceback (most recent call last):
        ...
        haive.dataflow.errors.InvalidMessageError: invalid Event: ...
    """

    type: str = attrs.field(validator=instance_of(str, "a string"))
    data: Mapping[str, Any] = attrs.field(factory=dict, validator=_MAPPING)
    key: str | None = attrs.field(default=None, validator=instance_of(str, "a string").optional())
    id: str = attrs.field(factory=_new_id, validator=NON_EMPTY_STR)
    #: Seconds since the epoch (finite: NaN or infinity would break every window and metric).
    timestamp: float = attrs.field(factory=time.time, validator=number())
    metadata: Mapping[str, Any] = attrs.field(factory=dict, validator=_MAPPING)

    def to_wire(self) -> dict[str, Any]:
        """A plain dict for JSON/MessagePack."""
        wire: dict[str, Any] = unstructure(self)
        return wire

    @classmethod
    def from_wire(cls, data: Any) -> Event:
        """Validate and build from a decoded message; InvalidMessageError says what is wrong."""
        if not isinstance(data, Mapping):
            raise InvalidMessageError(
                f"invalid Event: expected an object, got {type(data).__name__}"
            )
        try:
            return structure(dict(data), cls)
        except ConfigError as exc:
            raise InvalidMessageError(str(exc)) from exc
