"""StreamConfig: the tuning knobs of pipelines and transports, validated on creation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from .errors import ConfigError
from .validation import BOOL, NON_NEGATIVE_INT, POSITIVE_INT, invalid, one_of, size

COMPRESSIONS = ("none", "deflate", "gzip", "zlib", "snappy", "lz4")


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

    ``buffer_size`` bounds every edge (items), ``chunk_size`` the largest micro-batch.
    ``max_memory_usage`` accepts sizes like ``"2GB"``. Unknown keys are rejected by name when
    built from a mapping with :meth:`from_dict`.

    Example (doctest ELLIPSIS is on)::

        >>> config = StreamConfig(buffer_size=10_000, chunk_size=1000, max_memory_usage="2GB")
        >>> config.max_memory_usage
        2000000000
        >>> StreamConfig.from_dict({"buffer_sise": 10})
        Traceback (most recent call last):
        ...
        haive.dataflow.errors.ConfigError: invalid StreamConfig: unknown key(s): buffer_sise; known keys: ...
    """

    buffer_size: int = attrs.field(default=1024, validator=POSITIVE_INT)
    chunk_size: int = attrs.field(default=1024, validator=POSITIVE_INT)
    worker_threads: int = attrs.field(default=1, validator=POSITIVE_INT)
    io_threads: int = attrs.field(default=4, validator=POSITIVE_INT)
    max_memory_usage: int | None = attrs.field(default=None, converter=_memory)
    gc_interval: int = attrs.field(default=0, validator=NON_NEGATIVE_INT)
    compression: str = attrs.field(default="none", validator=one_of(*COMPRESSIONS))
    tcp_nodelay: bool = attrs.field(default=True, validator=BOOL)
    keep_alive: bool = attrs.field(default=True, validator=BOOL)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StreamConfig:
        """Build from a mapping (e.g. parsed TOML/JSON); unknown keys raise ConfigError."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"StreamConfig must be a mapping, got {type(data).__name__}")
        known = {field.name for field in attrs.fields(cls)}
        unknown = sorted(str(key) for key in data if key not in known)
        if unknown:
            raise ConfigError(
                f"invalid StreamConfig: unknown key(s): {', '.join(unknown)}; "
                f"known keys: {', '.join(sorted(known))}"
            )
        return cls(**data)
