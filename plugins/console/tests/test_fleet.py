"""The fleet view: real ``haive worker`` processes sharing Redis publish their state; the
console lists them, and one killed with SIGKILL drops out when its key's TTL ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from haive_plugin_console import Console, FleetPublisher, FleetView, serving
from haive_plugin_redis import RedisClient

from haive.dataflow import ConfigError

pytestmark = pytest.mark.redis

WORKER_FILE = Path(__file__).with_name("fleet_worker_pipeline.py")


async def test_workers_listed_and_a_killed_one_expires(until: Any) -> None:
    stream = f"fleet-{uuid.uuid4().hex}"
    prefix = f"haive:fleet:test-{uuid.uuid4().hex}"
    env = {**os.environ, "FLEET_STREAM": stream, "FLEET_PREFIX": prefix, "HAIVE_NO_SERVICES": "1"}
    workers = [
        await trio.lowlevel.open_process(
            [sys.executable, "-m", "haive.dataflow.cli", "worker", str(WORKER_FILE),
             "--group", "g", "--consumer", name],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for name in ("w1", "w2")
    ]  # fmt: skip
    view = FleetView("redis://127.0.0.1:6379", prefix=prefix)
    client = RedisClient()
    try:
        async with (
            serving(Console(fleet=view)) as address,
            httpx.AsyncClient(base_url=address.url) as api,
        ):

            async def remote() -> list[dict[str, Any]]:
                listed = (await api.get("api/workers")).json()
                assert listed[0]["local"] is True
                return [w for w in listed if not w["local"]]

            async def both() -> list[dict[str, Any]] | None:
                found = await remote()
                return found if len(found) == 2 else None

            found = await until(both, within=60)
            assert sorted(w["membership"]["consumer"] for w in found) == ["w1", "w2"]
            assert {w["pid"] for w in found} == {p.pid for p in workers}
            assert all(w["pipelines"] == ["fleet-orders"] and w["running"] for w in found)
            workers[0].send_signal(signal.SIGKILL)  # no clean-up: its key must expire
            await workers[0].wait()

            async def one_left() -> bool:
                return [w["pid"] for w in await remote()] == [workers[1].pid]

            await until(one_left, within=10)
            workers[1].send_signal(signal.SIGTERM)  # a clean stop deletes its key at once
            with trio.fail_after(30):
                await workers[1].wait()
            assert await remote() == []
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.kill()
            with trio.CancelScope(shield=True):
                await proc.wait()
        view.close()
        await client.execute("DEL", stream, f"{{{stream}}}:dead", f"{stream}:dead")
        client.close()


def test_publisher_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="ttl must be longer than interval"):
        FleetPublisher("redis://127.0.0.1:6379", interval="2s", ttl="2s")
    with pytest.raises(ConfigError, match="url must be a non-empty string"):
        FleetPublisher("")
    with pytest.raises(ConfigError, match="fleet must be a FleetView"):
        Console(fleet="redis://x")  # type: ignore[arg-type]


async def test_partitions_listed_with_their_owner_and_lag(until: Any) -> None:
    stream = f"fleet-part-{uuid.uuid4().hex}"
    prefix = f"haive:fleet:test-{uuid.uuid4().hex}"
    env = {**os.environ, "FLEET_STREAM": stream, "FLEET_PREFIX": prefix, "HAIVE_NO_SERVICES": "1"}
    path = Path(__file__).with_name("fleet_partitioned_pipeline.py")
    workers = [
        await trio.lowlevel.open_process(
            [sys.executable, "-m", "haive.dataflow.cli", "worker", str(path),
             "--group", "g", "--consumer", name],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for name in ("p1", "p2")
    ]  # fmt: skip
    view = FleetView("redis://127.0.0.1:6379", prefix=prefix)
    try:
        async with (
            serving(Console(fleet=view)) as address,
            httpx.AsyncClient(base_url=address.url) as api,
        ):

            async def balanced() -> list[dict[str, Any]] | None:
                rows = (await api.get("api/partitions")).json()
                owners = {r["owner"] for r in rows}
                ok = [r["partition"] for r in rows] == [0, 1, 2, 3] and owners == {"p1", "p2"}
                return rows if ok and all(r["lag"] is not None for r in rows) else None

            rows = await until(balanced, within=60)
            assert {r["stream"] for r in rows} == {stream}
            assert all(r["lag"] == 0 and r["epoch"] >= 1 for r in rows)
            pids = {w["id"].rsplit(":", 1)[1] for w in (await api.get("api/workers")).json()}
            assert {str(p.pid) for p in workers} <= pids
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        with trio.CancelScope(shield=True), trio.move_on_after(30):
            for proc in workers:
                await proc.wait()
        for proc in workers:
            if proc.poll() is None:
                proc.kill()
                with trio.CancelScope(shield=True):
                    await proc.wait()
        view.close()
        client = RedisClient()
        keys = await client.execute("KEYS", f"*{stream}*")
        if keys:
            await client.execute("DEL", *keys)
        client.close()
