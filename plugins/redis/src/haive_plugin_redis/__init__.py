"""haive-plugin-redis: Redis state, Redis Streams source/sink and ``haive worker``.

Example::

    >>> from haive.dataflow.plugins import get_registry
    >>> get_registry().source("redis_stream").__name__
    'RedisStreamSource'
"""

from .backend import RedisStateBackend
from .client import RedisClient
from .streams import (
    DELIVERY_MODES,
    EntryCodec,
    RedisCommitError,
    RedisStreamSink,
    RedisStreamSource,
    StreamEntry,
    StreamSourceStats,
    TransactionalState,
    reset_group,
)

__all__ = [
    "DELIVERY_MODES",
    "EntryCodec",
    "RedisClient",
    "RedisCommitError",
    "RedisStateBackend",
    "RedisStreamSink",
    "RedisStreamSource",
    "StreamEntry",
    "StreamSourceStats",
    "TransactionalState",
    "reset_group",
]
