"""haive-plugin-redis: Redis state, Redis Streams source/sink, keyed partitions and ``haive worker``.

Example::

    >>> from haive.dataflow.plugins import get_registry
    >>> get_registry().source("redis_stream").__name__
    'RedisStreamSource'
"""

from .backend import RedisStateBackend
from .client import RedisClient
from .partitioned import PartitionedStreamSource
from .partitioned_sink import PartitionedStreamSink
from .partitioning import PartitionedStream
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
    "PartitionedStream",
    "PartitionedStreamSink",
    "PartitionedStreamSource",
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
