"""PartitionOwnership: what a Kafka source commits, checked without a broker (the
bookkeeping alone; test_faults.py checks the same against tansu)."""

from __future__ import annotations

from haive_plugin_kafka.offsets import PartitionOwnership

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
