"""Which worker should own which partition: a pure, deterministic, balanced, sticky function.

Every worker computes the whole assignment from the same inputs (the sorted list of live
members read from Redis and the partition count), so all agree on it without talking to
each other; leases (:mod:`.partition_leases`) make the result safe while views differ for a
moment (a partition is only taken once its previous owner released it or its lease
expired).

Rendezvous hashing with bounded loads: each member may own ``partitions // m`` partitions,
one more for the first ``partitions % m`` members in sorted order (so shares differ by at
most one and add up to ``partitions``); partition ``p`` goes to the member that ranks it
highest (``blake2b(f"{p}:{member}")``, the same in every process) among those with room
left, partitions taken in order. A member joining or leaving moves few partitions (12
partitions, 3 workers to 4: about 3.8 move on average, against 9 for round-robin), and
since each partition's state stays in Redis, a move costs a lease hand-over only.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable

from haive.dataflow.errors import ConfigError


def _rank(partition: int, member: str) -> bytes:
    return hashlib.blake2b(f"{partition}:{member}".encode(), digest_size=8).digest()


@functools.lru_cache(maxsize=16)
def _assign(members: tuple[str, ...], partitions: int) -> dict[str, tuple[int, ...]]:
    base, extra = divmod(partitions, len(members))
    room = {member: base + (1 if i < extra else 0) for i, member in enumerate(members)}
    shares: dict[str, list[int]] = {member: [] for member in members}
    for partition in range(partitions):
        ranked = sorted(members, key=lambda member: _rank(partition, member), reverse=True)
        owner = next(member for member in ranked if room[member])
        room[owner] -= 1
        shares[owner].append(partition)
    return {member: tuple(share) for member, share in shares.items()}


def assign(members: Iterable[str], partitions: int) -> dict[str, list[int]]:
    """Each member's partitions (every member appears, possibly with none).

    Example::

        >>> assign(["w2", "w1", "w3"], 7)
        {'w1': [0, 1, 6], 'w2': [2, 3], 'w3': [4, 5]}
        >>> assign([], 3)
        {}
    """
    if isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1:
        raise ConfigError(f"assign: partitions must be an int >= 1, got {partitions!r}")
    ordered = tuple(sorted(set(members)))
    if not ordered:
        return {}
    return {member: list(share) for member, share in _assign(ordered, partitions).items()}


def share_of(member: str, members: Iterable[str], partitions: int) -> list[int]:
    """The partitions ``member`` should own (``member`` counts as live).

    Example::

        >>> share_of("w3", ["w1", "w2"], 6)
        [4, 5]
    """
    return assign([*members, member], partitions)[member]
