"""WebSocket transport: our trio server and client next to plain ``websockets`` on asyncio.

Every scenario runs twice in the same run, the same work each time: once with
haive-plugin-websocket (``WebSocketManager`` + ``StreamingClient``, trio) and once with plain
``websockets`` asyncio (``serve``/``connect``, ``websockets.broadcast``); the one-way and
broadcast rates are each side's best of ``ROUNDS`` (2) such alternations. The server and the
client are separate processes pinned to different cores (``os.sched_setaffinity``).
Compression is off on both sides (small JSON messages; deflate would dominate both), except
in ``broadcast100.deflate``. Both
sides encode and decode JSON with orjson, and the asyncio side sends orjson's bytes as text
frames (``send(data, text=True)``) and reads undecoded bytes (``recv(decode=False)``).

* ``rtt``: one client, sequential request/echo round trips; p50 and p99.
* ``one_way``: one client sends N messages as fast as it can; the server counts them; the
  rate is N / time until the server acknowledged the last one. Measured like for like twice:
  ``unbatched``, our client not offering the ``batch`` feature (``ConnectionConfig(features=
  ("recovery",))``: one frame per message) against the per-frame asyncio client; and
  ``batched``, our client's default (what is queued is coalesced into
  ``{"type":"batch","messages":[...]}`` frames of up to 64 KiB) against an asyncio client that
  builds the same batch frames with the same size rule, which the asyncio server unpacks as
  ours does (:func:`haive_plugin_websocket.protocol.parse_frame`).
* ``broadcast100``: 100 clients in one room; the server broadcasts N messages; deliveries/s
  = 100 * N / time until every client got all N. Our clients do not offer ``batch`` (one
  frame per message per client, as ``websockets.broadcast`` sends) and keep ``recovery``, so
  each member gets ``{"type":"t","i":I,"room":"bench","seq":I+1}``; the asyncio server
  sends byte-identical text frames (numbering each join's ``user_joined`` notice as ours
  does). ``broadcast100.batched`` is ours with the default
  features (batch frames to each client), without an asyncio counterpart.
  ``broadcast100.deflate`` is the same broadcast with permessage-deflate on on both sides
  (the server's and client's defaults: ours compresses a message once for every member,
  ``websockets.broadcast`` with websockets' default context takeover once per member).
* ``idle``: the server's RSS growth per idle connection (clients are plain asyncio
  ``websockets`` connections for both servers, so only the server differs).

Run a role by hand: ``python -m bench.cases.websocket server ours|asyncio`` prints its port;
``python -m bench.cases.websocket client ours|asyncio SCENARIO PORT N`` prints JSON.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

DESCRIPTION = "WebSocket rtt p99, one-way msgs/s, broadcast to 100 clients, KB per idle connection; vs websockets asyncio"

ROOT = Path(__file__).resolve().parents[2]
SERVER_CPU, CLIENT_CPU = 0, 1
ROOM = "bench"
#: What our client coalesces into one batch frame (``ConnectionConfig.max_batch_bytes``'s
#: default); the asyncio batching client uses the same bound.
MAX_BATCH_BYTES = 64 * 1024
#: The features our client offers: the default, and the default without ``batch``.
BATCHED_FEATURES = ("batch", "recovery")
UNBATCHED_FEATURES = ("recovery",)


# -- shared helpers ----------------------------------------------------------------------


def _pin(cpu: int) -> None:
    try:
        available = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {cpu} if cpu in available else available)
    except (AttributeError, OSError):  # not Linux: run unpinned
        pass


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- servers -----------------------------------------------------------------------------


def serve_ours(compression: str | None = None) -> None:
    import trio
    from haive_plugin_websocket import WebSocketManager

    async def main() -> None:
        manager = WebSocketManager(
            host="127.0.0.1",
            port=0,
            compression=compression,
            ping_interval=None,
            outbound_queue=1_000_000,
            history_size=1000,
            max_message_size="16MiB",
            # The benchmark's own clients send as fast as they can: the per-connection rate
            # limit (on by default, 100 messages/s) is off here, as the asyncio baseline has none.
            rate_limit=None,
            send_welcome=False,
        )
        state = {"count": 0}

        @manager.on_message("echo")
        def echo(client, message):
            return message

        @manager.on_message("m")
        def count(client, message):
            state["count"] += 1

        @manager.on_message("fin")
        def fin(client, message):
            reply = {"type": "fin_ack", "count": state["count"]}
            state["count"] = 0
            return reply

        @manager.on_message("go")
        async def go(client, message):
            for i in range(message["n"]):
                await manager.broadcast_to_room(ROOM, {"type": "t", "i": i})

        @manager.on_message("rss")
        def rss(client, message):
            return {"type": "rss", "kb": _rss_kb(), "connections": len(manager.clients)}

        async with manager.serving():
            print(f"PORT {manager.port}", flush=True)
            await trio.to_thread.run_sync(sys.stdin.read)  # until the parent closes stdin

    trio.run(main)


def serve_asyncio(compression: str | None = None) -> None:
    import asyncio

    import orjson
    import websockets
    from websockets.asyncio.server import broadcast, serve

    room: set[Any] = set()
    state = {"count": 0, "seq": 0}
    connections: set[Any] = set()
    dumps = orjson.dumps

    async def handle(ws: Any, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "m":
            state["count"] += 1
        elif kind == "echo":
            await ws.send(dumps(message), text=True)
        elif kind == "fin":
            await ws.send(dumps({"type": "fin_ack", "count": state["count"]}), text=True)
            state["count"] = 0
        elif kind == "join":
            room.add(ws)
            await ws.send(dumps({"type": "joined"}), text=True)
            # Our server announces a join to the room, which takes a room "seq" number.
            state["seq"] += 1
            notice = {"type": "user_joined", "user_id": ws.id.hex[:16], "room": ROOM}
            broadcast(room, dumps({**notice, "seq": state["seq"]}), text=True)
        elif kind == "go":
            # What our server sends each member (the "room" it sets, the per-room "seq" of
            # the recovery feature), byte for byte: {"type":"t","i":0,"room":"bench","seq":1}.
            for i in range(message["n"]):
                state["seq"] += 1
                data = dumps({"type": "t", "i": i, "room": ROOM, "seq": state["seq"]})
                broadcast(room, data, text=True)
                if i % 32 == 31:  # as our server does: let the writers run
                    await asyncio.sleep(0)
        elif kind == "rss":
            reply = {"type": "rss", "kb": _rss_kb(), "connections": len(connections)}
            await ws.send(dumps(reply), text=True)

    async def handler(ws: Any) -> None:
        connections.add(ws)
        loads = orjson.loads
        try:
            while True:
                message = loads(await ws.recv(decode=False))
                if message["type"] == "batch":  # a batch frame, as our server unpacks it
                    for item in message["messages"]:
                        await handle(ws, item)
                else:
                    await handle(ws, message)
        except websockets.ConnectionClosed:
            pass
        finally:
            room.discard(ws)
            connections.discard(ws)

    async def main() -> None:
        async with serve(
            handler, "127.0.0.1", 0, compression=compression, ping_interval=None, max_size=2**24
        ) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            print(f"PORT {port}", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

    asyncio.run(main())


# -- clients -----------------------------------------------------------------------------


def client_ours(scenario: str, port: int, n: int) -> dict[str, Any]:
    import trio
    from haive_plugin_websocket import ConnectionConfig, StreamingClient

    url = f"ws://127.0.0.1:{port}/"

    def config(
        features: tuple[str, ...] = BATCHED_FEATURES, compression: str | None = None
    ) -> ConnectionConfig:
        assert ConnectionConfig(url=url).max_batch_bytes == MAX_BATCH_BYTES
        return ConnectionConfig(
            url=url,
            compression=compression,
            heartbeat_interval=None,
            queue_size=65536,
            features=features,
        )

    async def rtt() -> dict[str, Any]:
        client = StreamingClient(config())
        got = trio.Event()
        client.on_message("echo")(lambda m: got.set())
        samples: list[float] = []
        async with client.connect():
            for i in range(n + 200):
                got = trio.Event()
                started = time.perf_counter()
                await client.send_message({"type": "echo", "i": i})
                await got.wait()
                if i >= 200:
                    samples.append(time.perf_counter() - started)
        return {
            "p50_ms": _percentile(samples, 0.5) * 1e3,
            "p99_ms": _percentile(samples, 0.99) * 1e3,
        }

    async def one_way(features: tuple[str, ...]) -> dict[str, Any]:
        client = StreamingClient(config(features))
        acked = trio.Event()
        result: dict[str, Any] = {}

        @client.on_message("fin_ack")
        def on_ack(message):
            result["count"] = message["count"]
            acked.set()

        async with client.connect():
            started = time.perf_counter()
            send = client.send_message
            for i in range(n):
                await send({"type": "m", "i": i})
            await send({"type": "fin"})
            await acked.wait()
            elapsed = time.perf_counter() - started
            frames = client.stats.frames_sent
        return {"msgs_per_s": n / elapsed, "received": result["count"], "frames": frames}

    async def broadcast(
        features: tuple[str, ...], compression: str | None = None
    ) -> dict[str, Any]:
        clients = [StreamingClient(config(features, compression)) for _ in range(100)]
        total = {"n": 0}
        done = trio.Event()
        expected = 100 * n

        def on_tick(message: dict[str, Any]) -> None:
            total["n"] += 1
            if total["n"] == expected:
                done.set()

        for c in clients:
            c.on_message("t")(on_tick)
        async with trio.open_nursery() as nursery:
            for c in clients:
                await nursery.start(c.run)
            for c in clients:
                await c.join(ROOM)
            started = time.perf_counter()
            await clients[0].send_message({"type": "go", "n": n})
            await done.wait()
            elapsed = time.perf_counter() - started
            for c in clients:
                await c.close()
        return {"deliveries_per_s": expected / elapsed, "deliveries": total["n"]}

    scenarios = {
        "rtt": rtt,
        "one_way": partial(one_way, UNBATCHED_FEATURES),
        "one_way_batched": partial(one_way, BATCHED_FEATURES),
        "broadcast": partial(broadcast, UNBATCHED_FEATURES),
        "broadcast_batched": partial(broadcast, BATCHED_FEATURES),
        "broadcast_deflate": partial(broadcast, UNBATCHED_FEATURES, "deflate"),
    }
    return trio.run(scenarios[scenario])


def client_asyncio(scenario: str, port: int, n: int) -> dict[str, Any]:
    import asyncio

    import orjson
    from websockets.asyncio.client import connect

    url = f"ws://127.0.0.1:{port}/"
    dumps, loads = orjson.dumps, orjson.loads

    compression = "deflate" if scenario.endswith("_deflate") else None

    def open_ws() -> Any:
        return connect(url, compression=compression, ping_interval=None, max_size=2**24)

    async def rtt() -> dict[str, Any]:
        samples: list[float] = []
        async with open_ws() as ws:
            for i in range(n + 200):
                started = time.perf_counter()
                await ws.send(dumps({"type": "echo", "i": i}), text=True)
                loads(await ws.recv(decode=False))
                if i >= 200:
                    samples.append(time.perf_counter() - started)
        return {
            "p50_ms": _percentile(samples, 0.5) * 1e3,
            "p99_ms": _percentile(samples, 0.99) * 1e3,
        }

    async def one_way() -> dict[str, Any]:
        async with open_ws() as ws:
            started = time.perf_counter()
            for i in range(n):
                await ws.send(dumps({"type": "m", "i": i}), text=True)
            await ws.send(dumps({"type": "fin"}), text=True)
            ack = loads(await ws.recv(decode=False))
            elapsed = time.perf_counter() - started
        return {"msgs_per_s": n / elapsed, "received": ack["count"], "frames": n + 1}

    async def one_way_batched() -> dict[str, Any]:
        # Our client's batch frames, built the same way (protocol.encode_frames): messages
        # joined into {"type":"batch","messages":[...]} up to MAX_BATCH_BYTES, a lone one
        # sent as itself.
        frames = 0
        async with open_ws() as ws:
            started = time.perf_counter()
            parts: list[bytes] = []
            size = 0

            async def flush() -> None:
                nonlocal size, frames
                if len(parts) == 1:
                    await ws.send(parts[0], text=True)
                elif parts:
                    frame = b'{"type":"batch","messages":[' + b",".join(parts) + b"]}"
                    await ws.send(frame, text=True)
                parts.clear()
                size = 0
                frames += 1

            for i in range(n + 1):
                data = dumps({"type": "m", "i": i} if i < n else {"type": "fin"})
                if parts and size + len(data) > MAX_BATCH_BYTES:
                    await flush()
                parts.append(data)
                size += len(data) + 1
            await flush()
            ack = loads(await ws.recv(decode=False))
            elapsed = time.perf_counter() - started
        return {"msgs_per_s": n / elapsed, "received": ack["count"], "frames": frames}

    async def broadcast() -> dict[str, Any]:
        expected = 100 * n
        total = {"n": 0}
        done = asyncio.Event()
        sockets = [await open_ws().__aenter__() for _ in range(100)]
        for ws in sockets:
            await ws.send(dumps({"type": "join"}), text=True)
            await ws.recv(decode=False)

        async def reader(ws: Any) -> None:
            got = 0
            while got < n:
                if loads(await ws.recv(decode=False))["type"] == "t":
                    got += 1
                    total["n"] += 1
            if total["n"] == expected:
                done.set()

        tasks = [asyncio.create_task(reader(ws)) for ws in sockets]
        started = time.perf_counter()
        await sockets[0].send(dumps({"type": "go", "n": n}), text=True)
        await done.wait()
        elapsed = time.perf_counter() - started
        await asyncio.gather(*tasks)
        for ws in sockets:
            await ws.close()
        return {"deliveries_per_s": expected / elapsed, "deliveries": total["n"]}

    scenarios = {
        "rtt": rtt,
        "one_way": one_way,
        "one_way_batched": one_way_batched,
        "broadcast": broadcast,
        "broadcast_deflate": broadcast,
    }
    return asyncio.run(scenarios[scenario]())


def client_idle(port: int, n: int) -> dict[str, Any]:
    """Open ``n`` idle connections (plain asyncio websockets) and read the server's RSS."""
    import asyncio

    from websockets.asyncio.client import connect

    url = f"ws://127.0.0.1:{port}/"

    async def main() -> dict[str, Any]:
        control = await connect(url, compression=None, ping_interval=None).__aenter__()

        async def rss() -> dict[str, Any]:
            await control.send(json.dumps({"type": "rss"}))
            while True:
                reply = json.loads(await control.recv())
                if reply.get("type") == "rss":
                    return reply

        await asyncio.sleep(0.5)
        before = await rss()
        opened: list[Any] = []
        started = time.perf_counter()
        semaphore = asyncio.Semaphore(100)

        async def one() -> None:
            async with semaphore:
                opened.append(
                    await connect(
                        url, compression=None, ping_interval=None, open_timeout=60
                    ).__aenter__()
                )

        await asyncio.gather(*(one() for _ in range(n)))
        connect_s = time.perf_counter() - started
        await asyncio.sleep(1.0)
        after = await rss()
        for ws in opened:
            ws.transport.abort()
        await asyncio.sleep(0.5)
        return {
            "kb_per_conn": (after["kb"] - before["kb"]) / n,
            "connections": after["connections"] - before["connections"],
            "connect_s": connect_s,
        }

    return asyncio.run(main())


# -- orchestration -------------------------------------------------------------------------


class _Server:
    def __init__(self, impl: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.cases.websocket", "server", impl],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.close()
            raise RuntimeError(f"{impl} server did not start: {line!r}")
        self.port = int(line.split()[1])

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> _Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _client(impl: str, scenario: str, port: int, n: int) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.cases.websocket",
            "client",
            impl,
            scenario,
            str(port),
            str(n),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{impl} {scenario} client failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _measure(impl: str, scenario: str, n: int) -> dict[str, Any]:
    # A *_deflate scenario runs against the same server with permessage-deflate on.
    with _Server(f"{impl}-deflate" if scenario.endswith("_deflate") else impl) as server:
        return _client(impl if scenario != "idle" else "idle", scenario, server.port, n)


#: Throughput scenarios run this many times, ours and the baseline alternating, and keep
#: each one's best: on the shared 2-core machine one sample often lands in another job's
#: burst (the same scenario moved 2-4x between runs minutes apart).
ROUNDS = 2


def _best_of(runs: list[tuple[str, str]], n: int, rate: str) -> list[dict[str, Any]]:
    """Each (impl, scenario) of ``runs`` measured ROUNDS times, alternating; the best of each."""
    best: list[dict[str, Any] | None] = [None] * len(runs)
    for _ in range(ROUNDS):
        for i, (impl, scenario) in enumerate(runs):
            result = _measure(impl, scenario, n)
            kept = best[i]
            if kept is None or result[rate] > kept[rate]:
                best[i] = result
    return [result for result in best if result is not None]


def run(rec: Any) -> None:
    quick = rec.quick
    rtt_n = 500 if quick else 5000
    one_way_n = 50_000 if quick else 300_000
    broadcast_n = 200 if quick else 3000
    idle_n = 500 if quick else 10_000

    ours = _measure("ours", "rtt", rtt_n)
    base = _measure("asyncio", "rtt", rtt_n)
    rec.figure("websocket.rtt.p50_ms", ours["p50_ms"], "ms")
    rec.figure("websocket.rtt.p99_ms", ours["p99_ms"], "ms", "target < 1 ms")
    rec.figure("websocket.rtt.asyncio_p99_ms", base["p99_ms"], "ms")
    rec.ratio(
        "websocket.rtt.vs_asyncio", ours["p99_ms"], base["p99_ms"], "p99 ratio, lower is better"
    )

    # One way, like for like: one frame per message on both sides, then batch frames on both.
    for label, ours_scenario, base_scenario, base_name in (
        ("unbatched", "one_way", "one_way", "asyncio"),
        ("batched", "one_way_batched", "one_way_batched", "asyncio_batched"),
    ):
        ours, base = _best_of(
            [("ours", ours_scenario), ("asyncio", base_scenario)], one_way_n, "msgs_per_s"
        )
        assert ours["received"] == one_way_n and base["received"] == one_way_n, (ours, base)
        prefix = f"websocket.one_way.{label}"
        rec.figure(f"{prefix}.msgs_per_s", ours["msgs_per_s"], "msgs/s", "target >= 100k")
        rec.figure(f"{prefix}.msgs_per_frame", one_way_n / max(1, ours["frames"]), "msgs")
        rec.figure(f"websocket.one_way.{base_name}_msgs_per_s", base["msgs_per_s"], "msgs/s")
        rec.figure(
            f"websocket.one_way.{base_name}_msgs_per_frame",
            one_way_n / max(1, base["frames"]),
            "msgs",
        )
        rec.ratio(f"{prefix}.vs_{base_name}", ours["msgs_per_s"], base["msgs_per_s"])

    # Broadcast, like for like: one frame per message per client, byte-identical payloads.
    ours, base, batched = _best_of(
        [("ours", "broadcast"), ("asyncio", "broadcast"), ("ours", "broadcast_batched")],
        broadcast_n,
        "deliveries_per_s",
    )
    assert ours["deliveries"] == base["deliveries"] == batched["deliveries"], (ours, base)
    rec.figure(
        "websocket.broadcast100.deliveries_per_s",
        ours["deliveries_per_s"],
        "deliveries/s",
        "one frame per message per client; target >= 150k",
    )
    rec.figure(
        "websocket.broadcast100.asyncio_deliveries_per_s", base["deliveries_per_s"], "deliveries/s"
    )
    rec.ratio(
        "websocket.broadcast100.vs_asyncio", ours["deliveries_per_s"], base["deliveries_per_s"]
    )
    rec.figure(
        "websocket.broadcast100.batched.deliveries_per_s",
        batched["deliveries_per_s"],
        "deliveries/s",
        "default features: batch frames to each client; no asyncio counterpart",
    )

    # The same broadcast with permessage-deflate on (websockets' defaults on the asyncio
    # side: context takeover, so websockets.broadcast compresses per member; ours
    # compresses each message once for every member).
    deflate, base_deflate = _best_of(
        [("ours", "broadcast_deflate"), ("asyncio", "broadcast_deflate")],
        broadcast_n,
        "deliveries_per_s",
    )
    assert deflate["deliveries"] == base_deflate["deliveries"] == ours["deliveries"]
    rec.figure(
        "websocket.broadcast100.deflate.deliveries_per_s",
        deflate["deliveries_per_s"],
        "deliveries/s",
        "permessage-deflate on both sides, one frame per message per client",
    )
    rec.figure(
        "websocket.broadcast100.deflate.asyncio_deliveries_per_s",
        base_deflate["deliveries_per_s"],
        "deliveries/s",
    )
    rec.ratio(
        "websocket.broadcast100.deflate.vs_uncompressed",
        deflate["deliveries_per_s"],
        ours["deliveries_per_s"],
        "ours compressed over ours uncompressed; target >= 0.5",
    )
    rec.ratio(
        "websocket.broadcast100.deflate.vs_asyncio_deflate",
        deflate["deliveries_per_s"],
        base_deflate["deliveries_per_s"],
        "target >= 2",
    )

    ours = _measure("ours", "idle", idle_n)
    base = _measure("asyncio", "idle", idle_n)
    note = f"{ours['connections']} connections held, RSS growth / count"
    rec.figure("websocket.idle.kb_per_conn", ours["kb_per_conn"], "KB", note + "; target <= 13 KB")
    rec.figure("websocket.idle.connections", ours["connections"], "conns")
    rec.figure("websocket.idle.asyncio_kb_per_conn", base["kb_per_conn"], "KB")
    rec.ratio(
        "websocket.idle.vs_asyncio", ours["kb_per_conn"], base["kb_per_conn"], "lower is better"
    )


def _main(argv: list[str]) -> None:
    role, impl = argv[0], argv[1]
    _raise_fd_limit()
    if role == "server":
        _pin(SERVER_CPU)
        serve = serve_ours if impl.startswith("ours") else serve_asyncio
        serve("deflate" if impl.endswith("-deflate") else None)
        return
    _pin(CLIENT_CPU)
    scenario, port, n = argv[2], int(argv[3]), int(argv[4])
    if impl == "idle":
        result = client_idle(port, n)
    elif impl == "ours":
        result = client_ours(scenario, port, n)
    else:
        result = client_asyncio(scenario, port, n)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    _main(sys.argv[1:])
