"""PartitionOwnership: what a Kafka source commits, checked without a broker (the
bookkeeping alone; test_faults.py checks the same against tansu)."""

from __future__ import annotations

from haive_plugin_kafka.offsets import (
    PartitionOwnership,
    ReadBatch,
    RecordColumns,
    UnackedRecords,
)
from haive_plugin_kafka.source import _position

T0 = ("t", 0)
T1 = ("t", 1)


def owned(*keys: tuple[str, int]) -> PartitionOwnership:
    ownership = PartitionOwnership()
    ownership.assign(list(keys))
    return ownership


def test_final_commit_repeats_the_highest_acknowledged_offset_even_when_committed() -> None:
    # librdkafka retries a commit whose connection dropped; landing after a newer one it
    # moves the group's offset back. The close commits the highest offset again to undo it.
    ownership = owned(T0, T1)
    epoch = ownership.epochs([T0, T1])
    ownership.acknowledged({T0: (100, epoch[T0]), T1: (40, epoch[T1])})
    first = ownership.take_commits()
    ownership.sent(first)
    ownership.acknowledged({T0: (200, epoch[T0])})
    second = ownership.take_commits()
    ownership.sent(second)
    assert ownership.outstanding == 2
    ownership.commit_result(T0, 200, failed=False)
    ownership.answered()
    ownership.commit_result(T0, 100, failed=False)  # the retried older commit, answered last
    ownership.commit_result(T1, 40, failed=False)
    ownership.answered()
    assert ownership.outstanding == 0
    assert ownership.take_commits() == {}
    assert ownership.take_final() == {T0: 200, T1: 40}


def test_final_commit_leaves_out_partitions_no_longer_owned_and_stale_acknowledgments() -> None:
    ownership = owned(T0, T1)
    epoch = ownership.epochs([T0, T1])
    ownership.acknowledged({T0: (10, epoch[T0]), T1: (7, epoch[T1])})
    assert ownership.revoke([T1]) == {T1: 7}
    ownership.assign([T1])  # back, read again from the committed offset: a new epoch
    ownership.acknowledged({T1: (9, epoch[T1])})  # read in the old epoch: stale
    assert ownership.stale == 1
    ownership.lose([T0])
    assert ownership.take_final() == {}


def test_revoke_commits_what_was_acknowledged_in_the_epoch_committed_or_not() -> None:
    ownership = owned(T0)
    epoch = ownership.epochs([T0])[T0]
    ownership.acknowledged({T0: (5, epoch)})
    ownership.sent(ownership.take_commits())
    ownership.commit_result(T0, 5, failed=False)
    ownership.answered()
    ownership.acknowledged({T0: (3, epoch)})  # an older position never lowers it
    assert ownership.revoke([T0]) == {T0: 5}
    assert ownership.revoke([T0]) == {}


def test_a_failed_last_commit_is_given_back_and_a_superseded_one_is_not() -> None:
    ownership = owned(T0)
    epoch = ownership.epochs([T0])[T0]
    ownership.acknowledged({T0: (5, epoch)})
    ownership.sent(ownership.take_commits())
    ownership.acknowledged({T0: (8, epoch)})
    ownership.sent(ownership.take_commits())
    assert not ownership.commit_result(T0, 5, failed=True)  # 8 is on its way
    assert ownership.commit_result(T0, 8, failed=True)
    assert ownership.take_commits() == {T0: 8}


def test_moved_names_the_partitions_revoked_since_a_batch_was_read() -> None:
    ownership = owned(T0, T1)
    epoch = ownership.epochs([T0, T1])
    ends = {T0: (10, epoch[T0]), T1: (7, epoch[T1])}
    assert ownership.moved(ends) == set()
    ownership.revoke([T1])
    assert ownership.moved(ends) == {T1}
    ownership.assign([T1])  # back in a new epoch: what was read before is still stale
    assert ownership.moved(ends) == {T1}


def test_record_columns_acknowledged_in_part_and_traced_to_their_record() -> None:
    # A batch read as columns (the messages dropped): a partial acknowledgment commits up
    # to the last record it covers, per partition, and a failed item finds its record.
    columns = RecordColumns(
        "t", [0, 1, 0, 1], [10, 20, 11, 21], [b"a", None, b"c", None],
        [b"v0", b"v1", b"v2", b"v3"], [None, [("h", b"1")], None, None],
    )
    first, second, _, last = items = [{"i": 0}, {"i": 1}, {"i": 2}, {"i": 3}]
    unacked = UnackedRecords()
    unacked.add(ReadBatch(items, columns, {T0: (12, 1), T1: (22, 1)}))
    record = unacked.origin(second)
    assert (record.topic(), record.partition(), record.offset()) == ("t", 1, 20)
    assert record.key() is None and record.value() == b"v1" and record.headers() == [("h", b"1")]
    assert unacked.take(3, position=_position) == {T0: (12, 1), T1: (21, 1)}
    assert unacked.item_count == 1 and unacked.origin(last).offset() == 21
    assert unacked.origin(first) is None
    assert unacked.take(1) == {T0: (12, 1), T1: (22, 1)}
    unacked.drop_released()
    assert not unacked
