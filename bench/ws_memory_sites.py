"""Where an idle WebSocket connection's memory goes: tracemalloc by allocation site.

``python -m bench.ws_memory_sites [N]`` starts the bench's own server (``ours``, the
configuration of ``bench/cases/websocket.py``) with tracemalloc on, opens ``N`` idle plain
asyncio ``websockets`` connections from a client process, and prints the bytes per
connection by allocation site: each allocation is charged to the innermost frame in our
package (else websockets, else trio, else the innermost frame), then the innermost frames.
A diagnosis tool, not a benchmark case: tracemalloc slows and inflates the server, and
RSS also counts the allocator's overhead and free lists, which tracemalloc does not see.
``WS_SITES_DIR`` names where the two snapshots go (``/tmp/ws_memory_sites``); with
``PYTHONPATH`` set to another checkout's ``plugins/websocket/src`` it measures that one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEPTH = 25
SNAPSHOTS = Path(os.environ.get("WS_SITES_DIR", "/tmp/ws_memory_sites"))
#: Path fragments naming the code an allocation is charged to, most specific first.
OWNERS = ("haive_plugin_websocket", "haive/dataflow", "websockets/", "trio/", "")


def _owner_frame(traceback: tracemalloc.Traceback) -> tracemalloc.Frame:
    # tracemalloc tracebacks are oldest call first.
    for owner in OWNERS:
        for frame in reversed(traceback):
            if owner in frame.filename:
                return frame
    return traceback[-1]


def _short(filename: str) -> str:
    for marker in ("site-packages/", "src/", "lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def _server() -> None:
    """The bench server with a ``sites`` message answering the allocation report."""
    import trio

    from bench.cases import websocket as case

    tracemalloc.start(DEPTH)
    original = case.serve_ours

    def dump(name: str) -> None:
        import gc

        gc.collect()
        tracemalloc.take_snapshot().dump(str(SNAPSHOTS / name))

    # Wrap the bench server's manager: a "mark" message takes the baseline snapshot, a
    # "sites" message answers the report.
    from haive_plugin_websocket import WebSocketManager

    serving = WebSocketManager.serving

    def patched(self: WebSocketManager):  # type: ignore[no-untyped-def]
        @self.on_message("mark")
        def mark(client, message):  # type: ignore[no-untyped-def]
            dump("before")
            return {"type": "marked"}

        @self.on_message("sites")
        def sites(client, message):  # type: ignore[no-untyped-def]
            dump("after")
            return {"type": "sites"}

        return serving(self)

    WebSocketManager.serving = patched  # type: ignore[method-assign]
    del trio
    original()


def _client(port: int, n: int) -> None:
    import asyncio

    from websockets.asyncio.client import connect

    url = f"ws://127.0.0.1:{port}/"

    async def main() -> None:
        control = await connect(
            url, compression=None, ping_interval=None, max_size=2**24
        ).__aenter__()

        async def ask(kind: str, **extra: object) -> dict[str, object]:
            await control.send(json.dumps({"type": kind, **extra}))
            while True:
                reply = json.loads(await control.recv())
                if reply.get("type") in ("marked", "sites"):
                    return reply  # type: ignore[no-any-return]

        await asyncio.sleep(0.5)
        await ask("mark")
        semaphore = asyncio.Semaphore(100)
        opened = []

        async def one() -> None:
            async with semaphore:
                opened.append(
                    await connect(
                        url, compression=None, ping_interval=None, open_timeout=60
                    ).__aenter__()
                )

        await asyncio.gather(*(one() for _ in range(n)))
        await asyncio.sleep(1.0)
        print(json.dumps(await ask("sites", n=n)), flush=True)
        for ws in opened:
            ws.transport.abort()

    asyncio.run(main())


def _report(n: int) -> dict[str, Any]:
    before = tracemalloc.Snapshot.load(str(SNAPSHOTS / "before"))
    after = tracemalloc.Snapshot.load(str(SNAPSHOTS / "after"))
    by_owner = Counter[str]()
    innermost = Counter[str]()
    total = 0
    for diff in after.compare_to(before, "traceback"):
        if not diff.size_diff:
            continue
        frame = _owner_frame(diff.traceback)
        by_owner[f"{_short(frame.filename)}:{frame.lineno}"] += diff.size_diff
        inner = diff.traceback[-1]
        innermost[f"{_short(inner.filename)}:{inner.lineno}"] += diff.size_diff
        total += diff.size_diff
    return {
        "total_per_conn": total / n,
        "by_owner": [(k, v / n) for k, v in by_owner.most_common(30)],
        "innermost": [(k, v / n) for k, v in innermost.most_common(25)],
    }


def main(argv: list[str]) -> None:
    if argv and argv[0] == "server":
        _server()
        return
    if argv and argv[0] == "client":
        _client(int(argv[1]), int(argv[2]))
        return
    n = int(argv[0]) if argv else 2000
    SNAPSHOTS.mkdir(parents=True, exist_ok=True)
    # ROOT for the bench package, after what the caller put first (another checkout's
    # plugin source, to measure it with the same tool).
    paths = [p for p in (os.environ.get("PYTHONPATH"), str(ROOT)) if p]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.ws_memory_sites", "server"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert server.stdout is not None and server.stdin is not None
    try:
        port = int(server.stdout.readline().split()[1])
        out = subprocess.run(
            [sys.executable, "-m", "bench.ws_memory_sites", "client", str(port), str(n)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
        )
        if out.returncode:
            raise SystemExit(out.stderr[-3000:])
    finally:
        server.stdin.close()
        server.wait(timeout=30)
    result = _report(n)
    print(f"{n} idle connections: {result['total_per_conn']:.0f} B per connection (tracemalloc)")
    print("\nby owner (innermost frame in haive_plugin_websocket, haive, websockets, trio):")
    for site, size in result["by_owner"]:
        if abs(size) >= 16:
            print(f"  {size:8.0f} B  {site}")
    print("\ninnermost frame:")
    for site, size in result["innermost"]:
        if abs(size) >= 16:
            print(f"  {size:8.0f} B  {site}")


if __name__ == "__main__":
    main(sys.argv[1:])
