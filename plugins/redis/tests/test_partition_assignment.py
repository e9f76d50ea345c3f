"""Keyed partitions without Redis: the key hash and the assignment function."""

from __future__ import annotations

import random
import zlib

import pytest
from haive_plugin_redis.partition_assignment import assign, share_of
from haive_plugin_redis.partitioning import PartitionedStream, key_bytes, partition_of
from hypothesis import given
from hypothesis import strategies as st

from haive.dataflow.errors import ConfigError

names = st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=40, unique=True)


def test_hash_is_crc32_of_the_key_bytes_and_stable():
    # Fixed values: any change of the hash would move keys to other partitions.
    assert [partition_of(k, 12) for k in ("user-42", "ada", "", "é")] == [7, 0, 0, 2]
    assert partition_of("user-42", 12) == zlib.crc32(b"user-42") % 12
    assert partition_of(b"ada", 12) == partition_of("ada", 12)
    assert partition_of(42, 12) == partition_of("42", 12)
    with pytest.raises(ConfigError, match="partition key must be str, bytes or int, got float"):
        key_bytes(1.5)
    with pytest.raises(ConfigError, match="got bool"):
        key_bytes(True)


def test_keys_spread_evenly_over_partitions():
    counts = [0] * 12
    for n in range(12_000):
        counts[partition_of(f"key-{n}", 12)] += 1
    assert max(counts) < 1.15 * 1000 and min(counts) > 0.85 * 1000


def test_layout_validates_and_names_partitions():
    layout = PartitionedStream("orders", 3)
    assert layout.streams() == ["{orders:p0}", "{orders:p1}", "{orders:p2}"]
    assert layout.with_suffix(":out").stream(1) == "{orders:p1}:out"
    with pytest.raises(ConfigError, match=r"partitions must be an int from 1 to 4096, got 0"):
        PartitionedStream("orders", 0)
    with pytest.raises(ConfigError, match=r"name must be a non-empty string without"):
        PartitionedStream("{orders}", 3)
    with pytest.raises(ConfigError, match="partition must be from 0 to 2, got 3"):
        layout.stream(3)


@given(members=names, partitions=st.integers(min_value=1, max_value=300))
def test_assignment_is_balanced_with_one_owner_per_partition(members, partitions):
    shares = assign(members, partitions)
    owned = sorted(p for share in shares.values() for p in share)
    assert owned == list(range(partitions))  # each partition exactly once
    sizes = [len(share) for share in shares.values()]
    assert max(sizes) - min(sizes) <= 1
    assert set(shares) == set(members)


@given(members=names, partitions=st.integers(min_value=1, max_value=64), data=st.data())
def test_every_member_computes_the_same_assignment(members, partitions, data):
    shuffled = data.draw(st.permutations(members))
    assert assign(shuffled, partitions) == assign(members, partitions)
    for member in members:
        others = [m for m in shuffled if m != member]
        assert share_of(member, others, partitions) == assign(members, partitions)[member]


def owners(shares: dict[str, list[int]]) -> dict[int, str]:
    return {p: member for member, share in shares.items() for p in share}


def test_a_join_moves_few_partitions():
    before = owners(assign(["w1", "w2", "w3"], 12))
    after = owners(assign(["w1", "w2", "w3", "w4"], 12))
    assert sum(before[p] != after[p] for p in range(12)) == 4  # round-robin would move 9
    assert [p for p in range(12) if after[p] == "w4"] == [3, 4, 11]


def test_joins_and_leaves_move_close_to_the_minimum_on_average():
    """Over 100 fixed sets of names: 12 partitions, 3 workers to 4 and back."""
    rng = random.Random(17)
    moved = 0
    for _ in range(100):
        names = [f"host-{rng.randrange(10**6)}" for _ in range(4)]
        before, after = owners(assign(names[:3], 12)), owners(assign(names, 12))
        moved += sum(before[p] != after[p] for p in range(12))
    assert moved / 100 < 4.5  # at least 3 must move (the newcomer's share); round-robin: 9


def test_assignment_rejects_a_bad_partition_count():
    with pytest.raises(ConfigError, match="partitions must be an int >= 1, got 0"):
        assign(["a"], 0)
    assert assign([], 4) == {}
