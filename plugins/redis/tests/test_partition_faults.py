"""Keyed partitions under faults, with real worker processes (``haive worker``) on real Redis.

Three workers share 12 partitions of keyed events; mid-stream one is killed with SIGKILL
(at a known point: in the middle of a batch, state staged or counted and outputs not
written), one joins and one is stopped cleanly (SIGTERM). Exactly-once: every event is in
the output once, per-key counts are exact. At-least-once: every event is in the output
(duplicates counted). Both: per-key order kept. And a paused worker (SIGSTOP past its
lease, then SIGCONT) cannot commit after its partitions moved.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis

pytestmark = pytest.mark.redis

PIPELINE = str(Path(__file__).with_name("partitioned_pipeline.py"))


@pytest.fixture
def name(r: redis.Redis) -> Iterator[str]:
    value = f"haive-test-{uuid.uuid4().hex[:12]}"
    yield value
    keys = list(r.scan_iter(match=f"*{value}*", count=1000))
    if keys:
        r.delete(*keys)


def partition_stream(name: str, partition: int, suffix: str = "") -> str:
    return f"{{{name}:p{partition}}}{suffix}"


def produce(r: redis.Redis, name: str, partitions: int, events: list[dict]) -> None:
    """Writes like PartitionedStreamSink: crc32(key) % partitions, count stored first."""
    r.set(f"{{{name}}}:partitions", partitions, nx=True)
    pipe = r.pipeline(transaction=False)
    for n, event in enumerate(events, 1):
        p = zlib.crc32(event["key"].encode()) % partitions
        pipe.xadd(partition_stream(name, p), {"data": orjson.dumps(event)})
        if n % 10_000 == 0:
            pipe.execute()
    pipe.execute()


def start_worker(name: str, consumer: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "haive.dataflow.cli", "worker", PIPELINE,
         "--group", "g", "--consumer", consumer],
        env={**os.environ, "HAIVE_TEST_NAME": name, **env},
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def summary(stderr: str) -> dict:
    line = next(x for x in stderr.splitlines() if x.startswith("haive worker: {"))
    return json.loads(line.removeprefix("haive worker: "))


def output_count(r: redis.Redis, name: str, partitions: int) -> int:
    return sum(r.xlen(partition_stream(name, p, ":out")) for p in range(partitions))


def outputs(r: redis.Redis, name: str, partitions: int) -> list[list[dict]]:
    return [
        [orjson.loads(f[b"data"]) for _, f in r.xrange(partition_stream(name, p, ":out"))]
        for p in range(partitions)
    ]


def order_violations(per_partition: list[list[dict]]) -> int:
    """Per key, events whose first appearance comes after a later event's."""
    violations = 0
    for entries in per_partition:
        last: dict[str, int] = {}
        seen: set[int] = set()
        for out in entries:
            if out["seq"] in seen:
                continue  # a redelivery (at least once): its first appearance counts
            seen.add(out["seq"])
            if out["seq"] < last.get(out["key"], -1):
                violations += 1
            last[out["key"]] = out["seq"]
    return violations


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def finish(worker: subprocess.Popen, timeout: float) -> dict:
    _, err = worker.communicate(timeout=timeout)
    assert worker.returncode == 0, err[-3000:]
    return summary(err)


EVENTS = int(os.environ.get("HAIVE_TEST_PARTITION_EVENTS", "100000"))


@pytest.mark.slow
@pytest.mark.parametrize("delivery", ["exactly_once", "at_least_once"])
def test_kill_join_and_clean_stop_mid_stream(name, r, tmp_path, delivery):
    """Events are produced in 20 chunks while the workers run (each chunk after the
    previous one is mostly processed), and the faults happen between chunks."""
    partitions, keys, chunks = 12, 600, 20
    events = [{"key": f"k{n % keys}", "seq": n} for n in range(EVENTS)]
    size = EVENTS // chunks
    env = {
        "HAIVE_TEST_PARTITIONS": str(partitions),
        "HAIVE_TEST_DELIVERY": delivery,
        "HAIVE_TEST_LEASE_TTL": "2s",
        "HAIVE_TEST_BATCH": "200",
        "HAIVE_TEST_HANG_DIR": str(tmp_path),
        "HAIVE_TEST_ENDLESS": "1",
    }
    members_key = f"{{{name}}}:members:g"
    r.set(f"{{{name}}}:partitions", partitions)
    workers = {c: start_worker(name, c, env) for c in ("w1", "w2", "w3")}
    summaries: dict[str, dict] = {}
    progress = lambda: output_count(r, name, partitions)  # noqa: E731
    killed_at = -1
    try:
        wait_for(lambda: r.zcard(members_key) == 3, 60, "three live workers")
        for chunk in range(chunks):
            if chunk == 4:  # SIGKILL w1 in the middle of a batch (counted, not written)
                (tmp_path / "hang-w1").touch()
            produce(r, name, partitions, events[chunk * size : (chunk + 1) * size])
            if chunk == 4:
                wait_for((tmp_path / "hanging-w1").exists, 60, "w1 to hang mid-batch")
                workers["w1"].kill()
                workers["w1"].communicate(timeout=10)
                killed_at = progress()
            if chunk == 8:  # w4 joins
                workers["w4"] = start_worker(name, "w4", env)
                wait_for(lambda: r.zscore(members_key, "w4") is not None, 60, "w4 to join")
            if chunk == 12:  # w2 stops cleanly
                workers["w2"].send_signal(signal.SIGTERM)
                summaries["w2"] = finish(workers["w2"], 30)
            wait_for(lambda c=chunk: progress() >= (c + 0.5) * size, 90, f"chunk {chunk}")
        wait_for(lambda: len(set(o["seq"] for e in outputs(r, name, partitions) for o in e))
                 >= EVENTS, 90, "every event in the output")  # fmt: skip
        for consumer in ("w3", "w4"):
            workers[consumer].send_signal(signal.SIGTERM)
            summaries[consumer] = finish(workers[consumer], 30)
    finally:
        for consumer, worker in workers.items():
            if worker.returncode is None:
                worker.kill()
                _, err = worker.communicate()
                print(f"{consumer} (killed at the end): {err[-1500:]}")
    # SIGTERM: w2 finished and committed its batch, then handed its partitions over.
    assert summaries["w2"]["stopped_by_signal"] and summaries["w2"]["owned"] == []
    assert summaries["w2"]["left_pending"] == 0 and summaries["w2"]["lost"] == 0
    assert summaries["w2"]["processed"] == summaries["w2"]["read"]
    assert summaries["w4"]["acquired"] > 0, "w4 never got a partition"
    per_partition = outputs(r, name, partitions)
    seqs = Counter(out["seq"] for entries in per_partition for out in entries)
    lost = EVENTS - len(seqs)
    duplicated = sum(seqs.values()) - len(seqs)
    violations = order_violations(per_partition)
    print(
        f"\n{delivery}: {EVENTS} events, lost {lost}, duplicated {duplicated}, "
        f"per-key order violations {violations}; w1 killed at {killed_at} outputs; "
        + ", ".join(
            f"{c}: rebalances {s['rebalances']} acquired {s['acquired']} read {s['read']}"
            for c, s in summaries.items()
        )
    )
    assert lost == 0 and set(seqs) == set(range(EVENTS))
    assert violations == 0
    expected = Counter(e["key"] for e in events)
    stored = {}
    for key in expected:
        p = zlib.crc32(key.encode()) % partitions
        stored[key] = int(r.get(partition_stream(name, p, f":state:counts:{key}")) or 0)
    for p in range(partitions):
        info = r.xinfo_groups(partition_stream(name, p))[0]
        assert info["pending"] == 0 and info["lag"] == 0
    if delivery == "exactly_once":
        assert duplicated == 0
        assert stored == dict(expected)  # per-key state totals exact
    else:
        assert all(stored[k] >= n for k, n in expected.items())


def test_a_paused_worker_cannot_commit_after_its_lease_moved(name, r, tmp_path):
    partitions = 4
    events = [{"key": f"k{n % 20}", "seq": n} for n in range(400)]
    events.insert(200, {"key": "pause", "seq": 400})
    produce(r, name, partitions, events)
    env = {
        "HAIVE_TEST_PARTITIONS": str(partitions),
        "HAIVE_TEST_DELIVERY": "exactly_once",
        "HAIVE_TEST_LEASE_TTL": "1s",
        "HAIVE_TEST_BATCH": "50",
    }
    mark = tmp_path / "paused"
    zombie = start_worker(
        name, "zombie", {**env, "HAIVE_TEST_PAUSE_MARK": str(mark),
                         "HAIVE_TEST_PAUSE_SECONDS": "1"}
    )  # fmt: skip
    other = None
    try:
        wait_for(mark.exists, 60, "the zombie to reach the pause event")
        zombie.send_signal(signal.SIGSTOP)  # mid-batch: state and outputs staged
        other = start_worker(name, "other", {**env, "HAIVE_TEST_ENDLESS": "1"})
        # The other worker takes every partition (the zombie's leases expire) and
        # processes everything, including the batch the zombie holds.
        wait_for(lambda: output_count(r, name, partitions) >= len(events), 60, "all outputs")
        zombie.send_signal(signal.SIGCONT)
        zombie_summary = finish(zombie, 60)
        other.send_signal(signal.SIGTERM)
        other_summary = finish(other, 30)
    finally:
        for worker in (zombie, other):
            if worker is not None and worker.poll() is None:
                os.kill(worker.pid, signal.SIGCONT)
                worker.kill()
                worker.communicate()
    print(f"\nzombie: {zombie_summary}\nother: {other_summary}")
    assert zombie_summary["fenced_commits"] >= 1  # its commit was refused
    assert zombie_summary["lost"] >= 1
    seqs = Counter(o["seq"] for entries in outputs(r, name, partitions) for o in entries)
    assert sorted(seqs) == list(range(401)) and max(seqs.values()) == 1  # nothing twice
    p = zlib.crc32(b"pause") % partitions
    assert int(r.get(partition_stream(name, p, ":state:counts:pause"))) == 1
