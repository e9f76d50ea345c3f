"""``haive worker``: consumer-group worker processes, including the SIGKILL fault test."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
import redis

pytestmark = pytest.mark.redis

PIPELINE = str(Path(__file__).with_name("keyed_count_pipeline.py"))


def produce(r: redis.Redis, stream: str, n: int, keys: int) -> None:
    for start in range(0, n, 10_000):
        pipe = r.pipeline(transaction=False)
        for seq in range(start, min(n, start + 10_000)):
            pipe.xadd(stream, {"data": orjson.dumps({"key": f"k{seq % keys}", "seq": seq})})
        pipe.execute()


def env_for(
    tag: str, delivery: str, claim_idle: str = "1s", extra: dict[str, str] | None = None
) -> dict[str, str]:
    return {
        **os.environ,
        **(extra or {}),
        "HAIVE_TEST_STREAM": f"{{{tag}}}:in",
        "HAIVE_TEST_OUT": f"{{{tag}}}:out",
        "HAIVE_TEST_DELIVERY": delivery,
        "HAIVE_TEST_CLAIM_IDLE": claim_idle,
    }


def start_worker(tag: str, delivery: str, consumer: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "haive.dataflow.cli",
            "worker",
            PIPELINE,
            "--group",
            "g",
            "--consumer",
            consumer,
        ],
        env=env_for(tag, delivery, **kw),
        stderr=subprocess.PIPE,
        text=True,
    )


def summary(stderr: str) -> dict:
    line = next(x for x in stderr.splitlines() if x.startswith("haive worker: {"))
    return json.loads(line.removeprefix("haive worker: "))


def outputs(r: redis.Redis, stream: str) -> list[dict]:
    out = []
    last = "-"
    while True:
        chunk = r.xrange(stream, min=last, count=20_000)
        if last != "-":
            chunk = chunk[1:]
        if not chunk:
            return out
        out.extend(orjson.loads(fields[b"data"]) for _, fields in chunk)
        last = chunk[-1][0]


def consumer_pending(r: redis.Redis, stream: str, name: str) -> int:
    for info in r.xinfo_consumers(stream, "g"):
        if info["name"] in (name, name.encode()):
            return info["pending"]
    return 0


def test_one_worker_via_the_haive_cli_drains_the_stream(tag, r):
    produce(r, f"{{{tag}}}:in", 3000, keys=7)
    done = subprocess.run(
        [sys.executable, "-m", "haive.dataflow.cli", "worker", PIPELINE, "--group", "g"],
        env=env_for(tag, "at_least_once"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    stats = summary(done.stderr)
    assert stats["processed"] == 3000 and stats["group"] == "g"
    assert sorted(o["seq"] for o in outputs(r, f"{{{tag}}}:out")) == list(range(3000))
    assert int(r.get(f"{{{tag}}}:in:state:counts:k0")) == 429  # ceil(3000 / 7)


def test_processes_option_supervises_n_workers(tag, r):
    produce(r, f"{{{tag}}}:in", 20_000, keys=10)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "haive.dataflow.cli",
            "worker",
            PIPELINE,
            "--group",
            "g",
            "--processes",
            "2",
            "--consumer",
            "pair",
        ],
        env=env_for(tag, "exactly_once"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    workers = [
        json.loads(x.removeprefix("haive worker: "))
        for x in done.stderr.splitlines()
        if x.startswith("haive worker: {")
    ]
    assert sorted(w["consumer"] for w in workers) == ["pair-1", "pair-2"]
    assert sum(w["processed"] for w in workers) >= 20_000
    out = [o["seq"] for o in outputs(r, f"{{{tag}}}:out")]
    assert sorted(out) == list(range(20_000))


def test_replay_from_then_stop_by_sigterm(tag, r):
    produce(r, f"{{{tag}}}:in", 100, keys=1)
    ids = [i for i, _ in r.xrange(f"{{{tag}}}:in")]
    r.xgroup_create(f"{{{tag}}}:in", "g", id="$")  # the group has seen everything
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "haive.dataflow.cli",
            "worker",
            PIPELINE,
            "--group",
            "g",
            "--replay-from",
            ids[90].decode(),
        ],
        env=env_for(tag, "at_least_once"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert [o["seq"] for o in outputs(r, f"{{{tag}}}:out")] == list(range(90, 100))


def test_sigterm_stops_a_worker_cleanly(tag, r):
    env = env_for(tag, "at_least_once")
    worker = subprocess.Popen(
        [
            sys.executable, "-m", "haive.dataflow.cli", "worker", PIPELINE, "--group", "g",
        ],
        # Endless: an empty stream does not end this worker, only the signal can.
        env={**env, "HAIVE_TEST_STREAM": f"{{{tag}}}:idle", "HAIVE_TEST_ENDLESS": "1"},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not r.exists(f"{{{tag}}}:idle"):
            assert worker.poll() is None, worker.communicate()[1]
            time.sleep(0.02)  # the worker creates the group (and stream) once it runs
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=60)
    finally:
        worker.kill()
    assert worker.returncode == 0, stderr
    assert summary(stderr)["stopped_by_signal"] is True, stderr


def wait_for(condition, what: str, procs: dict[str, subprocess.Popen], timeout: float = 300):
    """Poll ``condition`` until true; fail naming ``what`` if a worker exits or time runs out.

    The deadline is generous (a loaded machine) and never decides the outcome: the test
    waits for a state, not for a duration.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        for name, proc in procs.items():
            if proc.poll() is not None:
                pytest.fail(f"{name} exited while waiting for {what}: {proc.communicate()[1]}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def run_fault_test(tag, r, tmp_path, delivery, n, victims, fail_every, record_property, batch):
    """Three workers consume ``n`` keyed events, a processor failing on every
    ``fail_every``-th; each victim is stopped mid-batch (entries pending, state counted,
    outputs unwritten) once the output reaches its threshold, then SIGKILLed.

    While a victim is being stopped the other living workers pause before their next
    batch, so the victim is sure to get one (each worker holds at most ``5 * batch``
    unacknowledged entries, far fewer than are left).
    """
    keys = 50
    stream, out, dead = f"{{{tag}}}:in", f"{{{tag}}}:out", f"{{{tag}}}:in:dead"
    produce(r, stream, n, keys)
    r.xgroup_create(stream, "g", id="0")
    env = {
        "HAIVE_TEST_FAIL_EVERY": str(fail_every),
        "HAIVE_TEST_HANG_DIR": str(tmp_path),
        "HAIVE_TEST_BATCH": str(batch),
    }
    workers = {name: start_worker(tag, delivery, name, extra=env) for name in ("w1", "w2", "w3")}
    killed = []
    try:
        for victim, threshold in victims:
            alive = {name: proc for name, proc in workers.items() if proc.poll() is None}
            wait_for(lambda t=threshold: r.xlen(out) >= t, f"{threshold} outputs", alive)
            others = [name for name in alive if name != victim]
            for name in others:
                (tmp_path / f"pause-{name}").touch()
            (tmp_path / f"hang-{victim}").touch()
            wait_for((tmp_path / f"hanging-{victim}").exists, f"{victim} to stop mid-batch", alive)
            pending = consumer_pending(r, stream, victim)
            workers[victim].send_signal(signal.SIGKILL)
            workers[victim].wait()
            killed.append((victim, r.xlen(out), pending))
            for name in others:
                (tmp_path / f"pause-{name}").unlink()
        survivors = {}
        for name, proc in workers.items():
            if name not in {victim for victim, _ in victims}:
                _, stderr = proc.communicate(timeout=600)
                assert proc.returncode == 0, stderr
                survivors[name] = summary(stderr)
    finally:
        for proc in workers.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    seqs = [o["seq"] for o in outputs(r, out)]
    dead_seqs = [orjson.loads(f[b"entry.data"])["seq"] for _, f in r.xrange(dead)]
    poison = {seq for seq in range(n) if seq % fail_every == 0}
    per_key = {f"k{k}": int(r.get(f"{stream}:state:counts:k{k}") or 0) for k in range(keys)}
    copies = Counter(seqs)
    report = {
        "delivery": delivery,
        "killed (name, outputs then, its pending)": killed,
        "outputs": len(seqs),
        "dead_letters": len(dead_seqs),
        "lost": n - len(set(copies) | set(dead_seqs)),
        "duplicated": len(seqs) - len(copies),
        "dead_letters_duplicated": len(dead_seqs) - len(set(dead_seqs)),
        "counted_twice": sum(per_key.values()) - (n - len(poison)),
        "claimed_by_survivors": sum(w["claimed"] for w in survivors.values()),
        "aborted_commits": sum(w["aborted_commits"] for w in survivors.values()),
    }
    print(report)
    record_property("fault_test", report)
    assert all(p > 0 for _, _, p in killed)  # each victim died holding pending entries
    assert report["claimed_by_survivors"] > 0  # the victims' entries moved to the living
    # Nothing lost: every input is an output or a dead letter, never both.
    assert set(copies) == set(range(n)) - poison
    assert set(dead_seqs) == poison
    for _, fields in r.xrange(dead, count=5):
        assert b"ValueError: poison event" in fields[b"reason"]
        assert fields[b"node"] == b"reject_poison_0"
    info = next(g for g in r.xinfo_groups(stream) if g["name"] == b"g")
    assert info["pending"] == 0 and info["lag"] == 0
    per_key_expected = Counter(f"k{seq % keys}" for seq in range(n) if seq not in poison)
    if delivery == "exactly_once":
        assert report["duplicated"] == 0 and report["dead_letters_duplicated"] == 0
        assert per_key == dict(per_key_expected)
    else:
        # at-least-once: redelivered entries are counted again, never fewer. A killed worker
        # counted its last batch without writing its outputs, so the state can hold more
        # duplicates than the output stream.
        assert all(per_key[k] >= count for k, count in per_key_expected.items())
        assert report["counted_twice"] >= report["duplicated"]


@pytest.mark.parametrize("delivery", ["exactly_once", "at_least_once"])
def test_sigkill_of_a_worker_with_failing_items(tag, r, tmp_path, delivery, record_property):
    """20,000 events, 1 in 97 fails in a processor; one of three workers is SIGKILLed."""
    run_fault_test(
        tag, r, tmp_path, delivery, 20_000, [("w1", 2_000)], 97, record_property, batch=200
    )


@pytest.mark.slow
@pytest.mark.parametrize("delivery", ["exactly_once", "at_least_once"])
def test_sigkill_two_of_three_workers(tag, r, tmp_path, delivery, record_property):
    """100,000 keyed events, 3 workers, 1 in 97 failing; SIGKILL one mid-stream, later another."""
    run_fault_test(
        tag,
        r,
        tmp_path,
        delivery,
        100_000,
        [("w1", 20_000), ("w2", 50_000)],
        97,
        record_property,
        batch=1000,
    )


@pytest.mark.parametrize("delivery", ["exactly_once", "at_least_once"])
def test_sigterm_mid_batch_leaves_the_batch_pending_counted_then_redelivered(
    tag, r, tmp_path, delivery
):
    """Shutdown with items in flight: nothing of them is acknowledged, the summary counts
    them as left pending, and a restart under the same consumer name delivers them."""
    stream, out = f"{{{tag}}}:in", f"{{{tag}}}:out"
    produce(r, stream, 1000, keys=5)
    env = {"HAIVE_TEST_HANG_DIR": str(tmp_path), "HAIVE_TEST_BATCH": "100"}
    (tmp_path / "hang-w").touch()
    worker = start_worker(tag, delivery, "w", extra=env)
    try:
        wait_for((tmp_path / "hanging-w").exists, "the worker to stop mid-batch", {"w": worker})
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=120)
    finally:
        if worker.poll() is None:
            worker.kill()
        worker.wait()
    assert worker.returncode == 0, stderr
    stopped = summary(stderr)
    assert stopped["stopped_by_signal"] and stopped["left_pending"] > 0
    assert consumer_pending(r, stream, "w") == stopped["left_pending"]
    (tmp_path / "hang-w").unlink()
    done = subprocess.run(
        [
            *(sys.executable, "-m", "haive.dataflow.cli",
            "worker", PIPELINE),
            *("--group", "g", "--consumer", "w"),
        ],
        env=env_for(tag, delivery, extra=env),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert summary(done.stderr)["replayed"] == stopped["left_pending"]
    assert set(o["seq"] for o in outputs(r, out)) == set(range(1000))
    info = next(g for g in r.xinfo_groups(stream) if g["name"] == b"g")
    assert info["pending"] == 0 and info["lag"] == 0


def test_a_failed_worker_still_prints_its_summary_with_what_it_left_pending(tag, r):
    stream = f"{{{tag}}}:in"
    produce(r, stream, 500, keys=5)
    r.set(f"{{{tag}}}:out", "not a stream")  # the sink refuses to open: nothing written
    done = subprocess.run(
        [sys.executable, "-m", "haive.dataflow.cli",
            "worker", PIPELINE, "--group", "g"],
        env=env_for(tag, "at_least_once"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    failed = summary(done.stderr)
    assert "holds a string, not a stream" in failed["error"]
    assert failed["acknowledged"] == 0
    assert "haive: error: " in done.stderr
    info = next(g for g in r.xinfo_groups(stream) if g["name"] == b"g")
    assert info["pending"] == failed["left_pending"]
