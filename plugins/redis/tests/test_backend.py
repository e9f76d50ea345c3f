"""RedisStateBackend against the real Redis server."""

from __future__ import annotations

import threading

import pytest
import trio
from haive_plugin_redis import RedisStateBackend
from haive_plugin_redis.client import RedisClient

from haive.dataflow.errors import ConfigError, InvalidMessageError
from haive.dataflow.plugins import get_registry
from haive.dataflow.state.store import StateStore

pytestmark = pytest.mark.redis


async def make(tag: str, **options) -> RedisStateBackend:
    backend = RedisStateBackend(prefix=f"{{{tag}}}:", **options)
    await backend.open()
    return backend


async def test_registered_for_redis_urls():
    registry = get_registry()
    cls = registry.state_backend("redis")
    assert cls is RedisStateBackend
    assert cls.URL_SCHEMES == ("redis", "rediss", "redis+cluster")
    backend = cls.from_url("redis://127.0.0.1:6379/0", prefix="p:", pool_size=3)
    assert backend.prefix == "p:" and backend.client.pool_size == 3
    await backend.aclose()


async def test_get_put_delete_and_ttls(tag, r):
    backend = await make(tag)
    try:
        assert await backend.get("missing") is None
        await backend.put("a", b"1")
        await backend.put("b", b"2", ttl=60)
        assert await backend.get("a") == b"1"
        assert await backend.get_many(["a", "zz", "b"]) == [b"1", None, b"2"]
        assert r.pttl(f"{{{tag}}}:a") == -1  # no expiry
        assert 0 < r.pttl(f"{{{tag}}}:b") <= 60_000
        # put without ttl clears an earlier one, like the memory backend
        await backend.put("b", b"3")
        assert r.pttl(f"{{{tag}}}:b") == -1
        await backend.put("short", b"x", ttl=0.001)  # Redis expires it on its own clock
        assert 0 <= r.pttl(f"{{{tag}}}:short") <= 1 or await backend.get("short") is None
        assert await backend.delete("a") is True
        assert await backend.delete("a") is False
        with pytest.raises(ConfigError, match="must be bytes"):
            await backend.put("a", "text")  # type: ignore[arg-type]
    finally:
        await backend.aclose()


async def test_scan_by_prefix_is_sorted_and_escapes_glob_characters(tag):
    backend = await make(tag)
    try:
        for key in ["u:b", "u:a", "u*x", "u[1]", "v:a"]:
            await backend.put(key, key.encode())
        assert await backend.scan("u:") == [("u:a", b"u:a"), ("u:b", b"u:b")]
        assert await backend.scan("u*") == [("u*x", b"u*x")]
        assert await backend.scan("u[") == [("u[1]", b"u[1]")]
        assert len(await backend.scan("")) == 5
        assert await backend.delete_prefix("u") == 4
        assert await backend.scan("") == [("v:a", b"v:a")]
    finally:
        await backend.aclose()


async def test_update_is_atomic_across_tasks_and_other_clients(tag, r):
    backend = await make(tag, pool_size=8)

    def bump(old: bytes | None) -> bytes:
        return b"%d" % (int(old or 0) + 1)

    # A plain redis-py client hammering the same key from another thread forces WATCH retries.
    stop = threading.Event()

    def other_client() -> None:
        while not stop.is_set():
            r.incr(f"{{{tag}}}:n")

    thread = threading.Thread(target=other_client)
    thread.start()
    try:
        async with trio.open_nursery() as nursery:
            for _ in range(40):
                nursery.start_soon(backend.update, "n", bump)
    finally:
        stop.set()
        thread.join()
    try:
        own = int(r.get(f"{{{tag}}}:n"))
        # every one of our 40 increments landed, on top of however many the other client made
        assert own >= 40
        assert await backend.update("n", lambda old: None) is None  # None deletes
        assert await backend.get("n") is None
    finally:
        await backend.aclose()


async def test_update_counts_exactly_under_contention(tag):
    a, b = await make(tag), await make(tag)
    try:

        def bump(old: bytes | None) -> bytes:
            return b"%d" % (int(old or 0) + 1)

        async with trio.open_nursery() as nursery:
            for backend in [a, b] * 25:
                nursery.start_soon(backend.update, "c", bump)
        assert await a.get("c") == b"50"
    finally:
        await a.aclose()
        await b.aclose()


async def test_write_batch_is_one_transaction_and_counters(tag, r):
    backend = await make(tag)
    try:
        await backend.put("gone", b"x")
        await backend.write_batch([("k1", b"1", None), ("k2", b"2", 30.0), ("gone", None, None)])
        assert await backend.get_many(["k1", "k2", "gone"]) == [b"1", b"2", None]
        assert 0 < r.pttl(f"{{{tag}}}:k2") <= 30_000
        assert await backend.incr("hits") == 1
        assert await backend.incr_many({"hits": 4, "other": 2}) == [5, 2]
        await backend.add_many({"hits": 1}, ttl=10)
        assert await backend.get("hits") == b"6"
        assert 0 < r.pttl(f"{{{tag}}}:hits") <= 10_000
        with pytest.raises(ConfigError, match="amount must be an int"):
            await backend.incr("hits", 1.5)  # type: ignore[arg-type]
        await backend.put("text", b"abc")
        with pytest.raises(InvalidMessageError, match="'text' does not hold an integer"):
            await backend.incr("text")
    finally:
        await backend.aclose()


async def test_typed_state_store_over_redis(tag):
    async with StateStore("redis://127.0.0.1:6379/0", namespace=f"{{{tag}}}", pool_size=4) as store:
        assert isinstance(store.backend, RedisStateBackend)
        await store.put("user:1", {"name": "ada", "visits": 1}, ttl="1h")
        await store.put("count", 41)
        await store.backend.incr(store.full_key("count"))  # JSON ints are INCRBY-compatible
        assert await store.get("count") == 42
        assert await store.scan("user:") == [("user:1", {"name": "ada", "visits": 1})]


async def test_calls_are_bounded_by_the_pool(tag):
    client = RedisClient(pool_size=2)
    backend = RedisStateBackend(client=client, prefix=f"{{{tag}}}:")
    running = 0
    peak = 0
    real_call = client.call

    async def counting_call(fn, *args):
        nonlocal running, peak
        running += 1
        peak = max(peak, client.limiter.borrowed_tokens)
        try:
            return await real_call(fn, *args)
        finally:
            running -= 1

    client.call = counting_call  # type: ignore[method-assign]
    try:
        async with trio.open_nursery() as nursery:
            for i in range(30):
                nursery.start_soon(backend.put, f"k{i}", b"v")
        assert peak <= 2
        assert len(await backend.scan("k")) == 30
    finally:
        client.close()


def test_bad_urls_and_options():
    with pytest.raises(ConfigError, match="redis:// or rediss://"):
        RedisStateBackend("http://127.0.0.1")
    with pytest.raises(ConfigError, match="pool_size"):
        RedisStateBackend(pool_size=0)
    with pytest.raises(ConfigError, match="prefix"):
        RedisStateBackend(prefix=3)  # type: ignore[arg-type]
