"""End-to-end latency at a steady 10,000 msgs/s, next to the same path on the plain libraries.

Two paths a user builds first, each measured from the moment the producer hands a message
to its client library until the consumer has decoded the result:

- ``ws``: a WebSocket client sends ``{"type":"reading",...}`` messages to a server, a
  pipeline transforms each one and the result is broadcast to a room; a second client, a
  member of that room, receives it. Ours: ``StreamingClient`` -> ``WebSocketManager`` +
  ``WebSocketSource`` -> ``StreamingPipeline`` -> ``WebSocketRoomSink`` -> ``StreamingClient``
  (default client features: what is queued goes out coalesced into batch frames). Plain:
  ``websockets`` asyncio clients and server, the handler transforms the message and calls
  ``websockets.broadcast`` on the room's connections, one frame per message. Both sides
  orjson, compression off, no rate limit.
- ``redis``: a producer XADDs to an input stream, a worker reads it as a consumer group,
  transforms, XADDs to an output stream and acknowledges (at-least-once), a consumer XREADs
  the output. Ours: ``RedisStreamSource`` -> ``StreamingPipeline`` -> ``source.sink``.
  Plain: a redis-py (hiredis) worker loop, ``XREADGROUP COUNT 1000 BLOCK 100`` then one
  pipeline with the XADDs and the XACK. The producer/consumer process is the same code for both workers.

Timestamps are ``time.perf_counter()`` (CLOCK_MONOTONIC, shared by the processes of this
machine). The producer paces itself on a 1 ms tick (10 messages per tick); the first second
is warm-up. Each side runs twice, alternating; the figures are each side's better run (by
p99), and every message must arrive.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

DESCRIPTION = "end-to-end latency at 10k msgs/s: WebSocket->pipeline->room, Redis Streams in->pipeline->out; vs plain libraries"

ROOT = Path(__file__).resolve().parents[2]
RATE = 10_000
TICK_S = 0.001
WARMUP_S = 1.0
ROOM = "out"
REDIS_URL = "redis://127.0.0.1:6379"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _summary(latencies: list[float], sent: int, received: int, elapsed: float) -> dict[str, Any]:
    return {
        "p50_ms": _percentile(latencies, 0.5) * 1e3,
        "p99_ms": _percentile(latencies, 0.99) * 1e3,
        "max_ms": max(latencies) * 1e3,
        "sent": sent,
        "received": received,
        "rate": sent / elapsed,
    }


def _schedule(seconds: float) -> tuple[int, int]:
    """Ticks to run and messages per tick for ``RATE`` over ``seconds``."""
    per_tick = round(RATE * TICK_S)
    return round(seconds / TICK_S), per_tick


# -- WebSocket servers -------------------------------------------------------------------


def ws_serve_ours() -> None:
    import trio
    from haive_plugin_websocket import WebSocketManager, WebSocketRoomSink, WebSocketSource

    from haive.dataflow import StreamingPipeline

    async def main() -> None:
        manager = WebSocketManager(
            host="127.0.0.1",
            port=0,
            compression=None,
            ping_interval=None,
            rate_limit=None,  # the plain server has none; 10k msgs/s from one client
            send_welcome=False,
        )
        source = WebSocketSource(manager, types=["reading"])
        pipeline = StreamingPipeline("e2e-ws")
        pipeline.set_source(source)
        pipeline.add_processor(lambda m: {"type": "score", "t": m.data["t"], "v": m.data["v"] * 2})
        pipeline.set_sink(WebSocketRoomSink(manager, ROOM))
        async with manager.serving(), trio.open_nursery() as nursery:
            nursery.start_soon(pipeline.execute)
            print(f"PORT {manager.port}", flush=True)
            await trio.to_thread.run_sync(sys.stdin.read)  # until the parent closes stdin
            source.close()

    trio.run(main)


def ws_serve_plain() -> None:
    import asyncio

    import orjson
    import websockets
    from websockets.asyncio.server import broadcast, serve

    room: set[Any] = set()
    dumps, loads = orjson.dumps, orjson.loads

    async def handler(ws: Any) -> None:
        try:
            async for frame in ws:
                message = loads(frame)
                if message["type"] == "reading":
                    result = {"type": "score", "t": message["t"], "v": message["v"] * 2}
                    broadcast(room, dumps(result), text=True)
                elif message["type"] == "join":
                    room.add(ws)
                    await ws.send(dumps({"type": "joined"}), text=True)
        except websockets.ConnectionClosed:
            pass
        finally:
            room.discard(ws)

    async def main() -> None:
        async with serve(handler, "127.0.0.1", 0, compression=None, ping_interval=None) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            print(f"PORT {port}", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

    asyncio.run(main())


# -- WebSocket clients: a producer and a room member in one process ----------------------


def ws_client_ours(port: int, seconds: float) -> dict[str, Any]:
    import trio
    from haive_plugin_websocket import ConnectionConfig, StreamingClient

    url = f"ws://127.0.0.1:{port}/"
    ticks, per_tick = _schedule(seconds)
    expected = ticks * per_tick
    clock = time.perf_counter
    latencies: list[float] = []
    state = {"received": 0}
    done = trio.Event()

    def config() -> ConnectionConfig:
        return ConnectionConfig(url=url, compression=None, heartbeat_interval=None)

    async def main() -> dict[str, Any]:
        member, producer = StreamingClient(config()), StreamingClient(config())

        @member.on_message("score")
        def on_score(message: dict[str, Any]) -> None:
            now = clock()
            state["received"] += 1
            if message["t"] >= warm_until:
                latencies.append(now - message["t"])
            if state["received"] == expected:
                done.set()

        async with member.connect(), producer.connect():
            await member.join(ROOM)
            send = producer.send_message
            started = clock()
            warm_until = started + WARMUP_S
            i = 0
            for tick in range(ticks):
                await trio.sleep(max(0.0, started + tick * TICK_S - clock()))
                for _ in range(per_tick):
                    await send({"type": "reading", "t": clock(), "v": i})
                    i += 1
            elapsed = clock() - started
            with trio.move_on_after(30):
                await done.wait()
        return _summary(latencies, expected, state["received"], elapsed)

    return trio.run(main)


def ws_client_plain(port: int, seconds: float) -> dict[str, Any]:
    import asyncio

    import orjson
    from websockets.asyncio.client import connect

    url = f"ws://127.0.0.1:{port}/"
    ticks, per_tick = _schedule(seconds)
    expected = ticks * per_tick
    clock = time.perf_counter
    dumps, loads = orjson.dumps, orjson.loads

    async def main() -> dict[str, Any]:
        latencies: list[float] = []
        received = 0
        async with (
            connect(url, compression=None, ping_interval=None) as member,
            connect(url, compression=None, ping_interval=None) as producer,
        ):
            await member.send(dumps({"type": "join"}), text=True)
            assert loads(await member.recv(decode=False))["type"] == "joined"
            started = clock()
            warm_until = started + WARMUP_S

            async def read() -> None:
                nonlocal received
                while received < expected:
                    message = loads(await member.recv(decode=False))
                    now = clock()
                    received += 1
                    if message["t"] >= warm_until:
                        latencies.append(now - message["t"])

            reader = asyncio.create_task(read())
            i = 0
            for tick in range(ticks):
                await asyncio.sleep(max(0.0, started + tick * TICK_S - clock()))
                for _ in range(per_tick):
                    await producer.send(dumps({"type": "reading", "t": clock(), "v": i}), text=True)
                    i += 1
            elapsed = clock() - started
            try:
                await asyncio.wait_for(reader, 30)
            except TimeoutError:
                pass
        return _summary(latencies, expected, received, elapsed)

    return asyncio.run(main())


# -- Redis workers -----------------------------------------------------------------------


def redis_worker_ours(inp: str, out: str) -> None:
    import trio
    from haive_plugin_redis import RedisStreamSource

    from haive.dataflow import StreamingPipeline

    async def main() -> None:
        source = RedisStreamSource(inp, group="e2e", consumer="w1", url=REDIS_URL)
        pipeline = StreamingPipeline("e2e-redis")
        pipeline.set_source(source)
        pipeline.add_processor(lambda e: {"t": e["t"], "v": e["v"] * 2})
        pipeline.set_sink(source.sink(out))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pipeline.execute)
            print("READY", flush=True)
            await trio.to_thread.run_sync(sys.stdin.read)
            nursery.cancel_scope.cancel()

    trio.run(main)


def redis_worker_plain(inp: str, out: str) -> None:
    import threading

    import orjson
    import redis

    r = redis.Redis.from_url(REDIS_URL)
    stopped = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stopped.set()), daemon=True).start()
    print("READY", flush=True)
    loads, dumps = orjson.loads, orjson.dumps
    while not stopped.is_set():
        reply = r.xreadgroup("e2e", "w1", {inp: ">"}, count=1000, block=100)
        if not reply:
            continue
        entries = reply[0][1]
        pipe = r.pipeline(transaction=False)
        for _, fields in entries:
            e = loads(fields[b"data"])
            pipe.xadd(out, {"data": dumps({"t": e["t"], "v": e["v"] * 2})})
        pipe.xack(inp, "e2e", *[entry_id for entry_id, _ in entries])
        pipe.execute()
    r.close()


def redis_load(inp: str, out: str, seconds: float) -> dict[str, Any]:
    """Producer and consumer of both workers: paced XADDs in, blocking XREAD out.

    Two threads with their own connections (redis-py with hiredis): each waits on its
    socket most of the time, so neither delays the other by more than a GIL switch.
    """
    import threading

    import orjson
    import redis

    ticks, per_tick = _schedule(seconds)
    expected = ticks * per_tick
    clock = time.perf_counter
    latencies: list[float] = []
    received = 0
    started = clock()
    warm_until = started + WARMUP_S

    def read() -> None:
        nonlocal received
        consumer = redis.Redis.from_url(REDIS_URL)
        last = "0"
        deadline = started + seconds + 30
        while received < expected and clock() < deadline:
            reply = consumer.xread({out: last}, count=1000, block=1000)
            if not reply:
                continue
            now = clock()
            for entry_id, fields in reply[0][1]:
                last = entry_id
                t = orjson.loads(fields[b"data"])["t"]
                received += 1
                if t >= warm_until:
                    latencies.append(now - t)
        consumer.close()

    reader = threading.Thread(target=read)
    reader.start()
    producer = redis.Redis.from_url(REDIS_URL)
    i = 0
    for tick in range(ticks):
        time.sleep(max(0.0, started + tick * TICK_S - clock()))
        pipe = producer.pipeline(transaction=False)
        for _ in range(per_tick):
            pipe.xadd(inp, {"data": orjson.dumps({"t": clock(), "v": i})})
            i += 1
        pipe.execute()
    elapsed = clock() - started
    reader.join()
    producer.close()
    return _summary(latencies, expected, received, elapsed)


# -- orchestration -------------------------------------------------------------------------


def _child(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.cases.e2e", *args],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.stdin:
        proc.stdin.close()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _run_client(*args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.cases.e2e", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if out.returncode != 0:
        raise RuntimeError(f"e2e {args} failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _ws_once(impl: str, seconds: float) -> dict[str, Any]:
    server = _child("ws-server", impl)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"{impl} WebSocket server did not start: {line!r}")
        return _run_client("ws-client", impl, line.split()[1], str(seconds))
    finally:
        _stop(server)


def _redis_once(impl: str, seconds: float) -> dict[str, Any]:
    import redis

    tag = uuid.uuid4().hex[:8]
    inp, out = f"{{e2e-{tag}}}:in", f"{{e2e-{tag}}}:out"
    r = redis.Redis.from_url(REDIS_URL)
    r.xgroup_create(inp, "e2e", id="0", mkstream=True)
    worker = _child("redis-worker", impl, inp, out)
    try:
        assert worker.stdout is not None
        line = worker.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError(f"{impl} Redis worker did not start: {line!r}")
        return _run_client("redis-load", inp, out, str(seconds))
    finally:
        _stop(worker)
        r.delete(inp, out, f"{inp}:dead")
        r.close()


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    for run in runs:
        assert run["received"] == run["sent"], run  # nothing lost on either side
    return min(runs, key=lambda run: run["p99_ms"])


def _record(
    rec: Any, prefix: str, ours: dict[str, Any], plain: dict[str, Any], plain_name: str
) -> None:
    note = f"{ours['sent']:,} msgs at {ours['rate']:,.0f}/s"
    rec.figure(f"{prefix}.p50_ms", ours["p50_ms"], "ms", note)
    rec.figure(f"{prefix}.p99_ms", ours["p99_ms"], "ms")
    rec.figure(f"{prefix}.{plain_name}_p50_ms", plain["p50_ms"], "ms", f"{plain['rate']:,.0f}/s")
    rec.figure(f"{prefix}.{plain_name}_p99_ms", plain["p99_ms"], "ms")
    rec.ratio(f"{prefix}.p99.vs_{plain_name}", ours["p99_ms"], plain["p99_ms"], "lower is better")


def run(rec: Any) -> None:
    seconds = 2.0 if rec.quick else 6.0
    rounds = 1 if rec.quick else 2
    for prefix, once, plain_name in (
        ("e2e.ws_room", _ws_once, "websockets"),
        ("e2e.redis_streams", _redis_once, "redispy"),
    ):
        ours: list[dict[str, Any]] = []
        plain: list[dict[str, Any]] = []
        for _ in range(rounds):
            ours.append(once("ours", seconds))
            plain.append(once("plain", seconds))
        _record(rec, prefix, _best(ours), _best(plain), plain_name)


def _main(argv: list[str]) -> None:
    role = argv[0]
    if role == "ws-server":
        (ws_serve_ours if argv[1] == "ours" else ws_serve_plain)()
    elif role == "ws-client":
        client = ws_client_ours if argv[1] == "ours" else ws_client_plain
        print(json.dumps(client(int(argv[2]), float(argv[3]))))
    elif role == "redis-worker":
        (redis_worker_ours if argv[1] == "ours" else redis_worker_plain)(argv[2], argv[3])
    elif role == "redis-load":
        print(json.dumps(redis_load(argv[1], argv[2], float(argv[3]))))
    else:
        raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    _main(sys.argv[1:])
