"""StateStore over the memory and SQLite backends: CRUD, prefixes, TTLs, atomic updates."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import textwrap
import uuid

import attrs
import pytest
import trio
import trio.testing

from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.errors import ConfigError, UnknownPluginError
from haive.dataflow.plugins import reset_registry
from haive.dataflow.state import (
    CorruptStateError,
    MemoryStateBackend,
    SQLiteStateBackend,
    StateStore,
    state_backend_classes,
)


@attrs.define
class Profile:
    user: str
    visits: int = 0
    tags: list[str] = attrs.field(factory=list)
    seen: dt.datetime | None = None


@pytest.fixture(params=["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def make_store(request, tmp_path, require):
    """A store factory per backend; Redis runs when a redis:// backend is installed."""
    if request.param == "redis":
        require("redis" in state_backend_classes(), "needs haive-plugin-redis (redis://)")
    if request.param == "redis" and "autojump_clock" in request.fixturenames:
        # Redis expires keys on its own clock, not trio's MockClock: see test_redis_ttl_expires.
        pytest.fail("use a real-time test for Redis TTLs")
    prefix = f"haive-test-{uuid.uuid4().hex[:10]}"
    made = []

    def make(**kwargs):
        if request.param == "memory":
            store = StateStore(MemoryStateBackend(), **kwargs)
        elif request.param == "sqlite":
            backend = SQLiteStateBackend(tmp_path / "state.db", clock=trio.current_time)
            store = StateStore(backend, **kwargs)
        else:
            kwargs["namespace"] = f"{prefix}-{kwargs.get('namespace', 'haive')}"
            store = StateStore("redis://127.0.0.1:6379/0", **kwargs)
        made.append(store)
        return store

    yield make
    if request.param == "redis":

        async def cleanup():
            for store in made:
                async with StateStore("redis://127.0.0.1:6379/0", namespace="") as raw:
                    await raw.forget(store.namespace)
                    await raw.forget(f"__dead_letter__:{store.namespace}")

        trio.run(cleanup)


async def test_crud_and_typed_values(make_store):
    seen = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC)
    async with make_store(namespace="t") as store:
        assert await store.get("missing") is None
        assert await store.get("missing", default=7) == 7
        await store.put("p:ada", Profile("ada", 2, ["x"], seen))
        got = await store.get("p:ada", Profile)
        assert got == Profile("ada", 2, ["x"], seen)
        assert await store.get("p:ada") == {
            "user": "ada",
            "visits": 2,
            "tags": ["x"],
            "seen": "2024-05-01T12:30:00+00:00",
        }
        assert await store.delete("p:ada") is True
        assert await store.delete("p:ada") is False
        assert await store.get("p:ada", Profile) is None


async def test_scan_by_prefix_sorted_and_forget(make_store):
    async with make_store(namespace="app") as store:
        for key in ["u:2", "u:1", "u:10", "v:1", "u"]:
            await store.put(key, {"k": key})
        assert [k for k, _ in await store.scan("u:")] == ["u:1", "u:10", "u:2"]
        assert await store.keys("v") == ["v:1"]
        assert await store.forget("u:") == 3
        assert await store.keys() == ["u", "v:1"]
        # Another namespace on the same backend is untouched by forget and scan.
        other = StateStore(store.backend, namespace="other")
        await other.put("u:1", 1)
        assert await store.forget("") == 2
        assert await other.get("u:1") == 1


@pytest.fixture(params=["memory", "sqlite"])
def make_local_store(request, tmp_path):
    """Backends whose expiry follows trio's clock (so MockClock drives it)."""

    def make(**kwargs):
        if request.param == "memory":
            return StateStore(MemoryStateBackend(), **kwargs)
        backend = SQLiteStateBackend(tmp_path / "state.db", clock=trio.current_time)
        return StateStore(backend, **kwargs)

    return make


@pytest.mark.redis
async def test_redis_ttl_expires():
    """Redis keeps time itself (MockClock cannot drive it): check the TTLs the server holds,
    then poll until the short one has expired, with a deadline no loaded machine reaches."""
    import redis

    store = StateStore("redis://127.0.0.1:6379/0", namespace=f"haive-test-{uuid.uuid4().hex[:10]}")
    raw = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        async with store:
            await store.put("short", 1, ttl=2)
            (short_key,) = raw.scan_iter(match=f"{store.namespace}*short")
            assert 0 < raw.pttl(short_key) <= 2000  # stored, expiring; 2 s of slack for load
            await store.put("long", 2, ttl="1h")
            (long_key,) = raw.scan_iter(match=f"{store.namespace}*long")
            # The TTL is the one asked for, in milliseconds, however slow this machine is.
            assert 3_500_000 < raw.pttl(long_key) <= 3_600_000
            assert await store.get("long") == 2
            with trio.fail_after(30):
                # Polling: the server expires the key, there is no event to wait for.
                while await store.get("short") is not None:  # noqa: ASYNC110
                    await trio.sleep(0.05)
            assert await store.get("long") == 2
            assert await store.forget("") == 1
    finally:
        raw.close()


async def test_ttl_follows_trio_clock(make_local_store, autojump_clock):
    make_store = make_local_store
    async with make_store(default_ttl="1m") as store:
        await store.put("short", 1, ttl=5)
        await store.put("default", 2)
        await store.put("long", 3, ttl="1h")
        await trio.sleep(4.9)
        assert await store.get("short") == 1
        await trio.sleep(0.2)
        assert await store.get("short") is None
        assert await store.get("default") == 2
        await trio.sleep(60)
        assert await store.get("default") is None
        assert [k for k, _ in await store.scan("")] == ["long"]
        with pytest.raises(ConfigError, match="ttl"):
            await store.put("bad", 1, ttl=0)


async def test_atomic_update_under_concurrency(make_store):
    async with make_store() as store:

        async def bump(n: int) -> None:
            for _ in range(n):
                await store.update("counter", lambda old: (old or 0) + 1)

        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(bump, 20)
        assert await store.get("counter") == 200
        assert await store.update("counter", lambda old: None) is None
        assert await store.get("counter") is None


async def test_update_fn_error_leaves_value(make_store):
    async with make_store() as store:
        await store.put("k", 1)

        def boom(old):
            raise ValueError("no")

        with pytest.raises(ValueError, match="no"):
            await store.update("k", boom)
        assert await store.get("k") == 1


async def test_get_many_and_put_many(make_store):
    async with make_store() as store:
        await store.put_many({"a": 1, "b": {"x": [1, 2]}, "c": "s"})
        assert await store.get_many(["c", "zz", "a"]) == {"c": "s", "a": 1}
        assert await store.get_many([]) == {}


async def test_corrupt_record_goes_to_dead_letter_and_processing_continues(make_store):
    async with make_store(namespace="ns") as store:
        await store.put("p:good", Profile("good"))
        await store.backend.put(store.full_key("p:bad"), b"{not json")
        await store.backend.put(store.full_key("p:wrong"), b'{"user": 3}')
        assert await store.get("p:bad", Profile) is None
        assert [k for k, _ in await store.scan("p:", Profile)] == ["p:good"]
        letters = {letter.key: letter for letter in await store.dead_letters()}
        assert set(letters) == {"p:bad", "p:wrong"}
        assert "invalid JSON" in letters["p:bad"].reason
        assert letters["p:bad"].raw == b"{not json"
        assert "user" in letters["p:wrong"].reason
        assert store.stats.corrupt == 2
        # Quarantined records left the live keyspace; an update starts afresh.
        assert await store.backend.get(store.full_key("p:bad")) is None
        await store.backend.put(store.full_key("p:bad"), b"\xff")
        new = await store.update(
            "p:bad", lambda old: Profile("fresh") if old is None else old, Profile
        )
        assert new == Profile("fresh")
        assert store.stats.corrupt == 3


async def test_corrupt_record_to_sink_or_raise():
    sink = MemorySink()
    store = StateStore(namespace="ns", dead_letter=sink)
    await store.backend.put("ns:k", b"]")
    assert await store.get("k") is None
    assert sink.items[0]["key"] == "k" and "invalid JSON" in sink.items[0]["reason"]
    strict = StateStore(namespace="ns", on_corrupt="raise")
    await strict.backend.put("ns:k", b"]")
    with pytest.raises(CorruptStateError, match="'k'"):
        await strict.get("k")
    with pytest.raises(CorruptStateError):
        await strict.update("k", lambda old: 1)


async def test_unencodable_value_is_a_clear_error():
    store = StateStore()
    with pytest.raises(Exception, match="cannot encode object"):
        await store.put("k", object())
    assert await store.get("k") is None


def test_url_resolution(tmp_path):
    assert isinstance(StateStore().backend, MemoryStateBackend)
    assert isinstance(StateStore("memory://").backend, MemoryStateBackend)
    by_path = StateStore(tmp_path / "a.db").backend
    assert isinstance(by_path, SQLiteStateBackend) and by_path.path == str(tmp_path / "a.db")
    absolute = StateStore(f"sqlite:///{tmp_path}/b.db?synchronous=full").backend
    assert absolute.path == f"{tmp_path}/b.db" and absolute.synchronous == "FULL"
    assert StateStore("sqlite:///rel.db").backend.path == "rel.db"
    assert StateStore("sqlite://").backend.path == ":memory:"
    with pytest.raises(UnknownPluginError, match="no state backend serves nosuch://"):
        StateStore("nosuch://x")
    with pytest.raises(ConfigError, match="host"):
        StateStore("sqlite://somehost/x.db")
    with pytest.raises(ConfigError, match="synchronous"):
        StateStore("sqlite:///x.db?synchronous=sometimes")
    assert {"memory", "sqlite"} <= set(state_backend_classes())


def test_redis_url_without_plugin_names_the_package(monkeypatch):
    monkeypatch.setenv("HAIVE_DISABLE_PLUGINS", "redis,haive_plugin_redis")
    reset_registry()
    try:
        with pytest.raises(UnknownPluginError, match="pip install haive-plugin-redis"):
            StateStore("redis://127.0.0.1:6379")
    finally:
        monkeypatch.delenv("HAIVE_DISABLE_PLUGINS")
        reset_registry()


async def test_redis_url_uses_registered_backend(require):
    backends = state_backend_classes()
    require("redis" in backends, "needs haive-plugin-redis (redis://)")
    store = StateStore("redis://127.0.0.1:6379/0", namespace=f"haive-test-{os.getpid()}")
    assert isinstance(store.backend, backends["redis"])


async def test_sqlite_group_commit_batches_concurrent_ops(tmp_path):
    backend = SQLiteStateBackend(tmp_path / "g.db")
    async with StateStore(backend) as store:

        async def writer(i: int) -> None:
            for j in range(20):
                await store.put(f"k{i}:{j}", j)

        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(writer, i)
        assert len(await store.keys()) == 400
        assert backend.operations >= 400
        assert backend.calls < backend.operations  # several ops per thread hop


async def test_sqlite_failed_op_does_not_undo_its_group(tmp_path):
    backend = SQLiteStateBackend(tmp_path / "g.db")
    async with StateStore(backend) as store:
        results = {}

        async def good(i):
            await store.put(f"ok{i}", i)
            results[i] = True

        async def bad():
            with pytest.raises(ZeroDivisionError):
                await store.update("bad", lambda old: 1 // 0)

        async with trio.open_nursery() as nursery:
            for i in range(5):
                nursery.start_soon(good, i)
            nursery.start_soon(bad)
            for i in range(5, 10):
                nursery.start_soon(good, i)
        assert sorted(await store.keys()) == sorted(f"ok{i}" for i in range(10))


_CHILD = textwrap.dedent(
    """
    import os, sys, trio
    from haive.dataflow.state import StateStore

    async def main(path, n):
        store = StateStore(path, namespace="d")
        for i in range(n):
            await store.update("count", lambda old: (old or 0) + 1)
            await store.put(f"item:{i}", {"i": i})
        # Die without closing anything: committed writes must survive.
        os._exit(0)

    trio.run(main, sys.argv[1], int(sys.argv[2]))
    """
)


async def test_sqlite_durable_across_process_restarts(tmp_path):
    path = str(tmp_path / "durable.db")
    for _ in range(2):
        proc = await trio.run_process(
            [sys.executable, "-c", _CHILD, path, "50"], capture_stderr=True, check=False
        )
        assert proc.returncode == 0, proc.stderr.decode()
    async with StateStore(path, namespace="d") as store:
        assert await store.get("count") == 100
        assert len(await store.scan("item:")) == 50


def test_sqlite_file_is_wal(tmp_path):
    path = tmp_path / "w.db"

    async def main():
        async with StateStore(path) as store:
            await store.put("k", 1)

    trio.run(main)
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sqlite3; print(sqlite3.connect({str(path)!r}).execute('PRAGMA journal_mode').fetchone()[0])",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "wal"
