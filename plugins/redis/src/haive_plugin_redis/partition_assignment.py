"""Which worker should own which partition: a pure, deterministic, balanced function.

Every worker computes the whole assignment from the same inputs (the sorted list of live
members read from Redis and the partition count), so all agree on it without talking to
each other; leases (:mod:`.partition_leases`) make the result safe while views differ for a
moment (a partition is only taken once its previous owner released it or its lease
expired). Partition ``p`` goes to the ``p % m``-th of the ``m`` members in sorted order:
each partition has exactly one owner and owners' shares differ by at most one.
"""

from __future__ import annotations

from collections.abc import Iterable

from haive.dataflow.errors import ConfigError


def assign(members: Iterable[str], partitions: int) -> dict[str, list[int]]:
    """Each member's partitions (every member appears, possibly with none).

    Example::

        >>> assign(["w2", "w1", "w3"], 7)
        {'w1': [0, 3, 6], 'w2': [1, 4], 'w3': [2, 5]}
        >>> assign([], 3)
        {}
    """
    if isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1:
        raise ConfigError(f"assign: partitions must be an int >= 1, got {partitions!r}")
    ordered = sorted(set(members))
    shares: dict[str, list[int]] = {member: [] for member in ordered}
    for partition in range(partitions if ordered else 0):
        shares[ordered[partition % len(ordered)]].append(partition)
    return shares


def share_of(member: str, members: Iterable[str], partitions: int) -> list[int]:
    """The partitions ``member`` should own (``member`` counts as live).

    Example::

        >>> share_of("w3", ["w1", "w2"], 6)
        [2, 5]
    """
    return assign([*members, member], partitions)[member]
