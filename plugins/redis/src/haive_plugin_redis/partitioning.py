"""Keyed partitions of a logical stream: names, the key hash and the stored partition count.

A partitioned stream ``orders`` with 12 partitions is 12 Redis streams ``{orders:p0}`` ...
``{orders:p11}``. Each partition name is its own hash tag, so a partition, its consumer
groups, its leases, its keyed state (``{orders:p3}:state:...``) and its exactly-once
outputs (``{orders:p3}:billed``) live in one Redis Cluster slot, and different partitions
spread over the cluster. An event goes to partition ``crc32(key) % partitions``
(:func:`partition_of`: CRC-32 as in zlib/PNG/Ethernet over the key's UTF-8 bytes, the same
in every process, language and Python version, unlike ``hash()``). The partition count is
fixed when the stream is created and stored in ``{orders}:partitions``; opening it with
another count is an error (:meth:`PartitionedStream.ensure`), because it would send the
same key to another partition and break per-key order and state.
"""

from __future__ import annotations

import zlib

import attrs
from redis.exceptions import ResponseError

from haive.dataflow.errors import ConfigError, HaiveError

from ._resp import pack
from .client import RedisClient

#: Partitions at most: one stream, group and lease per partition.
MAX_PARTITIONS = 4096


def key_bytes(key: object) -> bytes:
    """The bytes a key hashes as: ``bytes`` as they are, ``str`` UTF-8, ``int`` decimal.

    Example::

        >>> key_bytes("ada"), key_bytes(42), key_bytes(b"\\x00")
        (b'ada', b'42', b'\\x00')
    """
    if isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode()
    if isinstance(key, int) and not isinstance(key, bool):
        return str(key).encode()
    raise ConfigError(
        f"partition key must be str, bytes or int, got {type(key).__name__} ({key!r})"
    )


def partition_of(key: object, partitions: int) -> int:
    """The partition of ``key``: ``zlib.crc32(key_bytes(key)) % partitions``.

    Example::

        >>> partition_of("user-42", 12), partition_of(b"user-42", 12), partition_of(7, 12)
        (7, 7, 6)
    """
    return zlib.crc32(key_bytes(key)) % partitions


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name or "{" in name or "}" in name:
        raise ConfigError(
            f"PartitionedStream(name={name!r}): name must be a non-empty string without "
            "'{' or '}' (each partition's name becomes its hash tag)"
        )
    return name


def _check_partitions(partitions: object) -> int:
    if (
        isinstance(partitions, bool)
        or not isinstance(partitions, int)
        or not 1 <= partitions <= MAX_PARTITIONS
    ):
        raise ConfigError(
            f"PartitionedStream(partitions={partitions!r}): partitions must be an int "
            f"from 1 to {MAX_PARTITIONS}, got {partitions!r}"
        )
    return partitions


@attrs.frozen
class PartitionedStream:
    """The layout of a partitioned stream: ``name``, ``partitions`` and an optional ``suffix``.

    ``suffix`` names a stream kept *next to* each partition (an exactly-once output of a
    pipeline reading the partitions: ``PartitionedStream("orders", 12, suffix=":billed")``
    is ``{orders:p0}:billed`` ...), partitioned like its input.

    Example::

        >>> orders = PartitionedStream("orders", 12)
        >>> orders.stream(3), orders.partition_stream("user-42")
        ('{orders:p3}', '{orders:p7}')
        >>> orders.with_suffix(":billed").stream(3), orders.count_key
        ('{orders:p3}:billed', '{orders}:partitions')
    """

    name: str = attrs.field(converter=_check_name)
    partitions: int = attrs.field(converter=_check_partitions)
    suffix: str = ""

    def stream(self, partition: int) -> str:
        """The Redis stream of partition ``partition``."""
        if not 0 <= partition < self.partitions:
            raise ConfigError(
                f"{self!r}: partition must be from 0 to {self.partitions - 1}, got {partition}"
            )
        return f"{{{self.name}:p{partition}}}{self.suffix}"

    def streams(self) -> list[str]:
        """Every partition's stream, in partition order."""
        return [self.stream(p) for p in range(self.partitions)]

    def partition(self, key: object) -> int:
        """The partition of ``key`` (:func:`partition_of`)."""
        return partition_of(key, self.partitions)

    def partition_stream(self, key: object) -> str:
        """The stream that ``key``'s events go to."""
        return self.stream(self.partition(key))

    def with_suffix(self, suffix: str) -> PartitionedStream:
        """The streams named ``suffix`` kept next to each partition of this one."""
        return PartitionedStream(self.name, self.partitions, suffix)

    @property
    def count_key(self) -> str:
        """Where the partition count is stored (one per name, whatever the suffix)."""
        return f"{{{self.name}}}:partitions"

    async def ensure(self, client: RedisClient) -> None:
        """Store the partition count if this stream is new; refuse another stored count."""
        replies = await client.send(
            pack("SET", self.count_key, self.partitions, "NX") + pack("GET", self.count_key), 2
        )
        stored = replies[1]
        if isinstance(stored, ResponseError):
            raise HaiveError(f"reading {self.count_key!r} failed: {stored}")
        if stored is None or int(stored) != self.partitions:
            raise ConfigError(
                f"PartitionedStream({self.name!r}, partitions={self.partitions}): the stream "
                f"was created with {stored.decode() if stored else '?'} partitions (stored "
                f"in {self.count_key!r}); the count is fixed at creation, so open it with "
                "that count (or give the new layout another name)"
            )
