"""State store latency per backend: put, get and atomic update, p50 and p99.

Each operation goes through ``StateStore`` (JSON encoding of a small dict included), one at
a time from one task, over 1,000 distinct keys; every operation is timed on its own. The
memory backend is reported in microseconds, the others in milliseconds. Backends: memory,
SQLite (a file in a temporary directory, WAL, ``synchronous=NORMAL``) and, when a plugin
registers a backend for ``redis://`` (haive-plugin-redis), Redis on 127.0.0.1:6379 (keys
under a random namespace, deleted afterwards). For SQLite the throughput of 64 concurrent
writers is also measured: its group commit runs the operations queued behind a busy worker
thread in one transaction. For Redis the same 64 writers (``state.redis.concurrent64``: the
client auto-pipelines their commands) run next to ``redis-benchmark -q -t set -c 64`` (64
connections, no encoding, no pipelining) in the same run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid

import trio

from bench.recorder import Recorder
from haive.dataflow.state import StateStore, state_backend_classes

DESCRIPTION = "StateStore get/put/update p50/p99 per backend (memory, SQLite, Redis if installed)"

KEYS = 1000


def _percentile(samples: list[int], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _latencies(store: StateStore, n: int) -> dict[str, list[int]]:
    clock = time.perf_counter_ns
    out: dict[str, list[int]] = {"put": [], "get": [], "update": []}
    value = {"user": "ada", "count": 0, "tags": ["a", "b"]}

    def bump(old: dict[str, object] | None) -> dict[str, object]:
        new = dict(old or value)
        new["count"] = int(new["count"]) + 1  # type: ignore[call-overload]
        return new

    for phase in ("warm", "measure"):
        rounds = max(200, n // 10) if phase == "warm" else n
        for i in range(rounds):
            key = f"user:{i % KEYS}"
            t0 = clock()
            await store.put(key, value)
            t1 = clock()
            await store.get(key)
            t2 = clock()
            await store.update(key, bump)
            t3 = clock()
            if phase == "measure":
                out["put"].append(t1 - t0)
                out["get"].append(t2 - t1)
                out["update"].append(t3 - t2)
    return out


async def _concurrent_puts(store: StateStore, n: int, writers: int = 64) -> float:
    per_writer = max(1, n // writers)

    async def writer(w: int) -> None:
        for i in range(per_writer):
            await store.put(f"c:{w}:{i % 50}", {"w": w, "i": i})

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for w in range(writers):
            nursery.start_soon(writer, w)
    return per_writer * writers / (time.perf_counter() - started)


def _redis_benchmark_set_64(n: int) -> float | None:
    """SET/s of ``redis-benchmark -c 64`` (None when it is not installed)."""
    tool = shutil.which("redis-benchmark")
    if tool is None:
        print(
            "  redis-benchmark is not installed: state.redis.concurrent64.vs_redis_benchmark skipped"
        )
        return None
    out = subprocess.run(
        [tool, "-q", "-t", "set", "-c", "64", "-n", str(n)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    match = re.search(r"SET: ([\d.]+) requests per second", out.replace("\r", "\n"))
    if match is None:
        raise RuntimeError(f"unexpected redis-benchmark output: {out[-200:]!r}")
    return float(match.group(1))


def _report(rec: Recorder, name: str, lat: dict[str, list[int]], unit: str) -> None:
    scale, suffix = (1e3, "us") if unit == "us" else (1e6, "ms")
    for op, samples in lat.items():
        for label, q in (("p50", 0.5), ("p99", 0.99)):
            rec.figure(
                f"state.{name}.{op}.{label}_{suffix}", _percentile(samples, q) / scale, suffix
            )


def run(rec: Recorder) -> None:
    n = 2_000 if rec.quick else 20_000
    backends: list[tuple[str, str, str]] = [("memory", "memory://", "us")]
    tmp = tempfile.mkdtemp(prefix="haive-bench-state-")
    backends.append(("sqlite", os.path.join(tmp, "state.db"), "ms"))
    if "redis" in state_backend_classes():
        backends.append(("redis", "redis://127.0.0.1:6379/0", "ms"))
    else:
        print("  no backend for redis:// is installed (haive-plugin-redis): redis skipped")

    for name, url, unit in backends:

        async def main(name: str = name, url: str = url, unit: str = unit) -> None:
            namespace = f"haive-bench-{uuid.uuid4().hex[:8]}"
            async with StateStore(url, namespace=namespace) as store:
                try:
                    _report(rec, name, await _latencies(store, n), unit)
                    if name == "sqlite":
                        rate = await _concurrent_puts(store, n)
                        rec.figure(f"state.{name}.put_64_writers.ops_per_s", rate, "ops/s")
                    elif name == "redis":
                        rate = await _concurrent_puts(store, 5 * n)
                        rec.figure("state.redis.concurrent64.ops_per_s", rate, "ops/s")
                        baseline = _redis_benchmark_set_64(5 * n)
                        if baseline is not None:
                            rec.figure(
                                "state.redis.baseline_redis_benchmark_c64.ops_per_s",
                                baseline,
                                "ops/s",
                            )
                            rec.figure(
                                "state.redis.concurrent64.vs_redis_benchmark", rate / baseline, "x"
                            )
                finally:
                    await store.forget("")

        trio.run(main)
