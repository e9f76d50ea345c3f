"""RedisClient.send on trio-driven connections (no worker thread) against the real Redis."""

from __future__ import annotations

import pytest
import redis
import trio
from haive_plugin_redis._resp import pack
from haive_plugin_redis.client import RedisClient
from redis.exceptions import ResponseError

pytestmark = pytest.mark.redis

URL = "redis://127.0.0.1:6379/0"


async def test_send_runs_on_trio_connections_with_error_replies_in_the_list(r, tag):
    client = RedisClient(URL, pool_size=2)
    try:
        replies = await client.send(
            pack("SET", f"{{{tag}}}:k", "v")
            + pack("INCR", f"{{{tag}}}:k")
            + pack("GET", f"{{{tag}}}:k"),
            3,
        )
        assert client.native.usable
        assert replies[0] == b"OK" and replies[2] == b"v"
        assert isinstance(replies[1], ResponseError)
        # A big reply arrives in many reads and is parsed whole.
        value = b"x" * 1_000_000
        assert await client.send(
            pack("SET", f"{{{tag}}}:big", value) + pack("GET", f"{{{tag}}}:big"), 2
        ) == [b"OK", value]
    finally:
        client.close()


async def test_a_cancelled_caller_leaves_the_connection_in_sync(r, tag):
    client = RedisClient(URL, pool_size=1)
    try:
        with trio.move_on_after(0.05) as scope:
            # BLPOP answers after 0.3 s; the round trip is not abandoned halfway.
            await client.send(pack("BLPOP", f"{{{tag}}}:none", "0.3"), 1)
        assert not scope.cancelled_caught  # the round trip ran to its end, shielded
        # The one connection of the pool answers the next command, not the old BLPOP.
        assert await client.send(pack("ECHO", "after"), 1) == [b"after"]
    finally:
        client.close()


async def test_a_killed_connection_raises_connection_error_then_the_client_reconnects(r, tag):
    client = RedisClient(URL, pool_size=1)
    try:
        await client.send(pack("CLIENT", "SETNAME", f"{tag}-victim"), 1)
        for info in r.client_list():
            if info["name"] == f"{tag}-victim":
                r.client_kill_filter(_id=info["id"])
        with pytest.raises(redis.ConnectionError):
            await client.send(pack("PING"), 1)
        assert await client.send(pack("PING"), 1) == [b"PONG"]
    finally:
        client.close()


async def test_socket_timeout_applies_to_each_read(r, tag):
    client = RedisClient(URL, pool_size=1, socket_timeout=0.1)
    try:
        with pytest.raises(redis.TimeoutError):
            await client.send(pack("BLPOP", f"{{{tag}}}:none", "1"), 1)
        # The timed out connection was dropped, not reused with the BLPOP reply pending.
        assert await client.send(pack("ECHO", "fresh"), 1) == [b"fresh"]
    finally:
        client.close()


async def test_close_closes_idle_connections_and_the_client_stays_usable(r):
    client = RedisClient(URL, pool_size=2)
    try:
        (conn_id,) = await client.send(pack("CLIENT", "ID"), 1)
        client.close()
        # The server notices the close on its own time: wait until it does.
        for _ in range(1000):
            if str(conn_id) not in {info["id"] for info in r.client_list()}:
                break
            await trio.sleep(0.01)
        else:
            pytest.fail("the server still lists the connection close() closed")
        assert await client.send(pack("PING"), 1) == [b"PONG"]
    finally:
        client.close()
