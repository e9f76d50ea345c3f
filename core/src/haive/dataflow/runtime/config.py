"""StreamConfig: the tuning knobs of pipelines and transports, validated on creation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from ..errors import ConfigError
from .defaults import DEFAULT_BUFFER_SIZE, DEFAULT_CHUNK_SIZE, DEFAULT_ERROR_BUFFER_SIZE
from .validation import NON_NEGATIVE_INT, POSITIVE_INT, invalid, size

#: Settings earlier versions accepted without applying them, and why they are gone; from_dict
#: names the reason instead of a bare "unknown key".
REMOVED: dict[str, str] = {
    "compression": "compression is set where bytes go on the wire: "
    "ConnectionConfig(compression='deflate') for WebSockets",
    "tcp_nodelay": "trio sets TCP_NODELAY on every TCP connection it opens",
    "keep_alive": "connections check their own health: WebSocket heartbeats "
    "(heartbeat_interval), Redis clients reconnect on a broken connection",
}


#: The smallest ``max_memory_usage`` accepted: a Python process running trio alone takes
#: about 30 MB; the cap also has to leave room for data.
MIN_MEMORY = 32 * 1000**2


def _memory(value: int | str | None) -> int | None:
    if value is None:
        return None
    allowed = "a size of at least 32MB (the interpreter alone uses about 30MB), or None"
    try:
        result = size("StreamConfig", "max_memory_usage", value)
    except ConfigError:
        raise ConfigError(invalid("StreamConfig", "max_memory_usage", value, allowed)) from None
    if result < MIN_MEMORY:
        raise ConfigError(invalid("StreamConfig", "max_memory_usage", value, allowed))
    return result


@attrs.frozen(kw_only=True)
class StreamConfig:
    """Buffer, batching, parallelism, memory and network settings, checked when created.

    ``buffer_size`` bounds every edge (items), ``chunk_size`` the largest micro-batch,
    ``error_buffer_size`` how many failed results wait to be handled (defaults and why: see
    :mod:`haive.dataflow.runtime.defaults`). Every pipeline kind sizes its buffers from these.
    ``max_memory_usage`` accepts sizes like ``"2GB"``. Unknown keys are rejected by name when
    built from a mapping with :meth:`from_dict`. The product description's ``tcp_nodelay``,
    ``keep_alive`` and ``compression`` are not settings of a pipeline (see :data:`REMOVED`):
    trio always sets TCP_NODELAY, WebSocket heartbeats keep connections alive, and WebSocket
    compression is ``ConnectionConfig(compression="deflate")``.

    Example (doctest ELLIPSIS is on)::

        >>> config = StreamConfig(buffer_size=10_000, chunk_size=1000, max_memory_usage="2GB")
        >>> config.max_memory_usage
        2000000000
        >>> StreamConfig.from_dict({"buffer_sise": 10})
        Traceback (most recent call last):
        ...
        haive.dataflow.errors.ConfigError: invalid StreamConfig: unknown key(s): buffer_sise; known keys: ...
    """

    buffer_size: int = attrs.field(default=DEFAULT_BUFFER_SIZE, validator=POSITIVE_INT)
    chunk_size: int = attrs.field(default=DEFAULT_CHUNK_SIZE, validator=POSITIVE_INT)
    error_buffer_size: int = attrs.field(default=DEFAULT_ERROR_BUFFER_SIZE, validator=POSITIVE_INT)
    worker_threads: int = attrs.field(default=1, validator=POSITIVE_INT)
    io_threads: int = attrs.field(default=4, validator=POSITIVE_INT)
    max_memory_usage: int | None = attrs.field(default=None, converter=_memory)
    gc_interval: int = attrs.field(default=0, validator=NON_NEGATIVE_INT)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StreamConfig:
        """Build from a mapping (e.g. parsed TOML/JSON); unknown keys raise ConfigError."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"StreamConfig must be a mapping, got {type(data).__name__}")
        known = {field.name for field in attrs.fields(cls)}
        removed = [f"{key} ({REMOVED[key]})" for key in data if key in REMOVED]
        if removed:
            raise ConfigError(
                f"invalid StreamConfig: {'; '.join(removed)}: remove "
                f"{'these keys' if len(removed) > 1 else 'this key'}"
            )
        unknown = sorted(str(key) for key in data if key not in known)
        if unknown:
            raise ConfigError(
                f"invalid StreamConfig: unknown key(s): {', '.join(unknown)}; "
                f"known keys: {', '.join(sorted(known))}"
            )
        return cls(**data)
