"""Auto-pipelining (RedisClient.command) against the real Redis server."""

from __future__ import annotations

import random
import threading
from typing import Any

import pytest
import trio
import trio.testing
from haive_plugin_redis._resp import pack
from haive_plugin_redis.autopipeline import AutoPipeline
from haive_plugin_redis.client import RedisClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.exceptions import ResponseError

from haive.dataflow.errors import ConfigError

pytestmark = pytest.mark.redis


class Recorded:
    """The client's real round trip, recording how many commands each one carried."""

    def __init__(self, client: RedisClient) -> None:
        self.client = client
        self.sizes: list[int] = []
        #: ``taken[i]`` is set when round trip i (from 0) takes its commands to write them.
        self.taken = [threading.Event() for _ in range(8)]

    def __call__(self, packed: bytes, replies: int) -> list[Any]:
        self.sizes.append(replies)
        if len(self.sizes) <= len(self.taken):
            self.taken[len(self.sizes) - 1].set()
        return self.client._send(packed, replies)


def test_parameters_are_validated():
    client = RedisClient(pool_size=1)
    try:
        with pytest.raises(ConfigError, match="buffer_size must be an int >= 1"):
            AutoPipeline(client._send, client.limiter, buffer_size=0)
        with pytest.raises(ConfigError, match="pipelines must be an int >= 1"):
            AutoPipeline(client._send, client.limiter, pipelines=True)
        with pytest.raises(ConfigError, match="pipelines must be an int >= 1"):
            RedisClient(pipelines=0)
    finally:
        client.close()


# One command of a random mix: (args, the reply it must get, or the error it must raise).
def _command(tag: str, i: int, kind: str) -> tuple[tuple[Any, ...], Any]:
    key = f"{{{tag}}}:k{i}"
    if kind == "echo":
        return ("ECHO", f"e{i}"), f"e{i}".encode()
    if kind == "set":
        return ("SET", key, f"v{i}"), b"OK"
    if kind == "incr_error":  # INCR of a string value: an error reply for this caller only
        return ("INCR", f"{{{tag}}}:text"), ResponseError
    if kind == "unknown":
        return ("NO-SUCH-COMMAND", i), ResponseError
    return ("INCRBY", f"{{{tag}}}:n{i}", i), i  # a key of its own: the exact new value


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    kinds=st.lists(
        st.sampled_from(["echo", "set", "incr_error", "unknown", "incrby"]),
        min_size=1,
        max_size=300,
    ),
    pipelines=st.integers(1, 3),
    buffer_size=st.integers(1, 64),
    seed=st.integers(0, 2**32),
)
def test_concurrent_callers_get_their_own_replies(tag, r, kinds, pipelines, buffer_size, seed):
    """Random command mixes (error replies among them), some callers cancelled at random."""
    r.set(f"{{{tag}}}:text", "not a number")
    rng = random.Random(seed)
    commands = [_command(tag, i, kind) for i, kind in enumerate(kinds)]
    delays = [rng.randrange(3) for _ in commands]
    cancel_after = [rng.randrange(6) if rng.random() < 0.2 else None for _ in commands]
    cancelled = object()

    async def main() -> tuple[list[Any], AutoPipeline, list[int], Any]:
        client = RedisClient(pool_size=4, pipelines=pipelines, buffer_size=buffer_size)
        recorded = Recorded(client)
        client.autopipeline = AutoPipeline(
            recorded, client.limiter, buffer_size=buffer_size, pipelines=pipelines
        )
        got: list[Any] = [None] * len(commands)

        async def caller(i: int, scope: trio.CancelScope) -> None:
            with scope:
                for _ in range(delays[i]):
                    await trio.lowlevel.checkpoint()
                try:
                    got[i] = await client.command(*commands[i][0])
                except ResponseError as exc:
                    got[i] = exc
            if scope.cancelled_caught:
                got[i] = cancelled

        async def canceller(after: int, scope: trio.CancelScope) -> None:
            for _ in range(after):
                await trio.lowlevel.checkpoint()
            scope.cancel()

        try:
            async with trio.open_nursery() as nursery:
                for i in range(len(commands)):
                    scope = trio.CancelScope()
                    nursery.start_soon(caller, i, scope)
                    after = cancel_after[i]
                    if after is not None:
                        nursery.start_soon(canceller, after, scope)
            final = await client.command("ECHO", "final")  # the connections are in step
        finally:
            client.close()
        return got, client.autopipeline, recorded.sizes, final

    got, pipe, sizes, final = trio.run(main)
    assert final == b"final"
    for i, ((args, expected), reply) in enumerate(zip(commands, got, strict=True)):
        if reply is cancelled:
            assert cancel_after[i] is not None
        elif expected is ResponseError:
            assert isinstance(reply, ResponseError), (args, reply)
        else:
            assert reply == expected, (args, reply)
    assert sum(sizes) == pipe.commands <= len(commands) + 1
    assert max(sizes) <= buffer_size  # the queue is bounded: so is every write
    assert not pipe._queue and pipe._in_flight == 0
    r.delete(*[f"{{{tag}}}:n{i}" for i in range(len(kinds))], f"{{{tag}}}:text")
    r.delete(*[f"{{{tag}}}:k{i}" for i in range(len(kinds))])


async def test_many_concurrent_commands_share_round_trips(tag):
    client = RedisClient(pool_size=2)
    try:
        async with trio.open_nursery() as nursery:
            for i in range(500):
                nursery.start_soon(client.command, "SET", f"{{{tag}}}:{i}", i)
        values = await client.send(pack("MGET", *[f"{{{tag}}}:{i}" for i in range(500)]), 1)
        assert values[0] == [str(i).encode() for i in range(500)]
        assert client.autopipeline.commands == 500
        assert client.autopipeline.round_trips < 100  # coalesced, not one per command
    finally:
        client.close()


async def test_cancelled_after_sending_keeps_the_connection_in_sync(tag, r):
    client = RedisClient(pool_size=1)  # one connection: every command shares it
    recorded = Recorded(client)
    pipe = client.autopipeline = AutoPipeline(recorded, client.limiter)
    first, second = f"{{{tag}}}:first", f"{{{tag}}}:second"
    results: dict[str, Any] = {}

    async def blpop(key: str) -> None:
        results[key] = await client.command("BLPOP", key, 10)

    async def echo_cancelled(scope_box: list[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            scope_box.append(scope)
            results["echo"] = await client.command("ECHO", "dropped")
        results["echo_cancelled"] = scope.cancelled_caught

    try:
        await client.command("PING")  # connect first
        async with trio.open_nursery() as nursery:
            nursery.start_soon(blpop, first)
            await trio.testing.wait_all_tasks_blocked()
            # BLPOP first is in flight: BLPOP second and ECHO wait in the queue.
            nursery.start_soon(blpop, second)
            await trio.testing.wait_all_tasks_blocked()
            box: list[trio.CancelScope] = []
            nursery.start_soon(echo_cancelled, box)
            await trio.testing.wait_all_tasks_blocked()
            assert pipe.round_trips == 2 and len(pipe._queue) == 2
            # Release the first BLPOP: [BLPOP second, ECHO] go out in one write and
            # block on the server; cancel ECHO's caller while its reply is pending.
            r.rpush(first, "x")
            await trio.to_thread.run_sync(recorded.taken[2].wait)
            assert not pipe._queue and pipe.commands == 4
            box[0].cancel()
            await trio.testing.wait_all_tasks_blocked()
            assert results["echo_cancelled"] and "echo" not in results
            assert second not in results  # still blocked on the server
            r.rpush(second, "y")
        assert results[first] == [first.encode(), b"x"]
        assert results[second] == [second.encode(), b"y"]
        # The dropped ECHO reply was read: the next command gets its own reply.
        assert await client.command("ECHO", "mine") == b"mine"
        assert await client.command("LLEN", first) == 0
    finally:
        client.close()


async def test_cancelled_before_sending_drops_the_command(tag, r):
    client = RedisClient(pool_size=1)
    pipe = client.autopipeline
    blocked = f"{{{tag}}}:blocked"
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.command, "BLPOP", blocked, 10)
            await trio.testing.wait_all_tasks_blocked()
            with trio.CancelScope() as scope:
                scope.cancel()
                await client.command("SET", f"{{{tag}}}:never", 1)  # queued, then cancelled
            assert scope.cancelled_caught and not pipe._queue
            r.rpush(blocked, "x")
        assert pipe.commands == 1  # only BLPOP was ever written
        assert r.exists(f"{{{tag}}}:never") == 0
        assert await client.command("ECHO", "after") == b"after"
    finally:
        client.close()


async def test_a_lone_command_goes_out_at_once(autojump_clock, tag):
    client = RedisClient(pool_size=2)
    recorded = Recorded(client)
    client.autopipeline = AutoPipeline(recorded, client.limiter)
    try:
        start = trio.current_time()
        for i in range(20):
            assert await client.command("SET", f"{{{tag}}}:{i}", i) == b"OK"
            # Each command was its own round trip, sent before the call returned ...
            assert recorded.sizes == [1] * (i + 1)
        # ... with no timer involved (under MockClock with autojump any wait would jump).
        assert trio.current_time() == start
    finally:
        client.close()


async def test_connection_errors_reach_every_caller_of_the_round_trip():
    client = RedisClient("redis://127.0.0.1:1/0", pool_size=1)  # nothing listens on port 1
    errors: list[BaseException] = []

    async def caller() -> None:
        try:
            await client.command("PING")
        except Exception as exc:
            errors.append(exc)

    try:
        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(caller)
        assert len(errors) == 5
        assert all(type(exc).__name__ == "ConnectionError" for exc in errors)
    finally:
        client.close()
