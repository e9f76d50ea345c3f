"""Counters of a :class:`~haive_plugin_redis.streams.RedisStreamSource`, shared by its parts.

Every part of the source (reader, claimer, acknowledger, committer, dead-letter writer,
failure handler) is given the one :class:`StreamSourceStats` and counts what it did in it.
"""

from __future__ import annotations

import attrs


@attrs.define
class StreamSourceStats:
    """Counters of one :class:`~haive_plugin_redis.streams.RedisStreamSource`.

    ``dead_lettered``: entries written to the dead-letter stream (undecodable, failed in a
    processor, corrupt counters); ``left_for_redelivery``: failures left pending
    (``on_failure="redeliver"``); ``left_pending``: entries read but not acknowledged when
    the source closed (a stop mid-batch, a failed sink), which Redis redelivers;
``fenced_commits``: commits refused because this owner's partition lease had moved.

    Example::

        >>> StreamSourceStats().dead_lettered
        0
    """

    read: int = 0
    acknowledged: int = 0
    claimed: int = 0
    replayed: int = 0
    dead_lettered: int = 0
    left_for_redelivery: int = 0
    left_pending: int = 0
    missing: int = 0
    commits: int = 0
    aborted_commits: int = 0
    #: Commits (or at-least-once XACKs) refused because the partition's lease moved to
    #: another owner (keyed partitions, :mod:`.partitioned`).
    fenced_commits: int = 0
