"""HTTP webhook source and HTTP sink (haive-plugin-http) next to bare Hypercorn + Starlette
and a raw httpx loop, in the same run.

* ``http.source.requests_per_s``: a server process running a StreamingPipeline whose
  source is ``WebhookSource`` (``ack="accepted"``: 202 once buffered; one JSON event per
  request, parsed with orjson; a processor reads a field; a counting sink), against
  ``http.baseline_raw_starlette.requests_per_s``: a server process running a bare
  Hypercorn + Starlette endpoint doing the same read + orjson parse + field read, answering
  202, no pipeline. The load comes from another process over 32 keep-alive connections,
  each sending its requests one after the other: ``wrk`` (one thread, a POST script) when
  it is on PATH (Debian package ``wrk``), else an httpx ``AsyncClient`` on trio, which
  spends more CPU per request than the servers do, so it saturates first and the ratio
  then says little (the figure's note names the generator).
  ``http.source.vs_raw`` is ours over the baseline (target >= 0.8). The two processes are
  pinned to different cores where there are two. ``http.source.server_cpu_us_per_request``
  and ``http.baseline_raw_starlette.server_cpu_us_per_request`` are the server process's
  CPU time per request, the cost independent of whether the client or the server saturates
  first.
* ``http.sink.events_per_s``: ``HttpSink.write_batch`` of 1,000 items at a time (JSON
  arrays of 500 per POST, each answered before the batch counts as written), against
  ``http.baseline_raw_httpx.events_per_s``: a raw httpx loop POSTing the same arrays of
  500 (orjson-encoded) with no pipeline; both to the same bare Hypercorn + Starlette
  receiver in another process. ``http.sink.vs_raw``; ``http.sink.cpu_vs_raw`` compares the
  sending process's CPU time per event, which the machine's other load disturbs less.

Run a role by hand: ``python -m bench.cases.http server ours|raw`` prints its port and
serves until its stdin closes; ``python -m bench.cases.http load PORT N`` prints JSON.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DESCRIPTION = "webhook source requests/s vs bare Hypercorn+Starlette; HTTP sink vs raw httpx"

ROOT = Path(__file__).resolve().parents[2]
SERVER_CPU, CLIENT_CPU = 0, 1
CONNECTIONS = 32
EVENT = b'{"user": "u-17", "action": "click", "v": 0.5, "tags": ["a", "b"]}'


def _pin(cpu: int) -> None:
    try:
        available = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {cpu} if cpu in available and len(available) > 1 else available)
    except (AttributeError, OSError):  # not Linux: run unpinned
        pass


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- servers (one process each) --------------------------------------------------------------


def _hypercorn_config(port: int = 0) -> Any:
    import logging

    from hypercorn.config import Config

    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("bench.http")
    config.graceful_timeout = 1
    return config


async def _until_stdin_closes() -> None:
    import trio

    await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)


def serve_raw() -> None:
    """Bare Hypercorn + Starlette: read the body, parse it, read a field, answer 202."""
    import orjson
    import trio
    from hypercorn.trio import serve
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    received: list[float] = []

    async def ingest(request: Request) -> Response:
        data = orjson.loads(await request.body())
        if isinstance(data, list):
            received.extend(item["v"] for item in data)
        else:
            received.append(data["v"])
        return Response(b'{"accepted": 1}', 202, media_type="application/json")

    app = Starlette(routes=[Route("/webhook", ingest, methods=["POST"])])

    async def main() -> None:
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(lambda task_status: serve(
                app, _hypercorn_config(), shutdown_trigger=stop.wait, task_status=task_status))
            cpu = _cpu_seconds()
            print("PORT", binds[0].rsplit(":", 1)[1], flush=True)
            await _until_stdin_closes()
            print(json.dumps({"received": len(received), "cpu": _cpu_seconds() - cpu}),
                  flush=True)
            stop.set()

    trio.run(main)


def serve_ours() -> None:
    """A StreamingPipeline reading WebhookSource (accepted mode), a processor, a counter."""
    import trio
    from haive_plugin_http import WebhookEvent, WebhookSource

    from haive.dataflow.io.sinks import StreamSink
    from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline

    count = [0]

    class Counter(StreamSink):
        async def write_batch(self, items: list[Any]) -> None:
            count[0] += len(items)

    source = WebhookSource(port=0, buffer_size=10_000)
    pipeline = StreamingPipeline("bench-webhook")
    pipeline.set_source(source)

    def value(event: WebhookEvent) -> Any:
        return event.data["v"]

    pipeline.add_processor(value)
    pipeline.set_sink(Counter())

    async def main() -> None:
        async with source.serving() as url, trio.open_nursery() as nursery:
            nursery.start_soon(pipeline.execute)
            cpu = _cpu_seconds()
            print("PORT", url.rsplit(":", 1)[1].split("/")[0], flush=True)
            await _until_stdin_closes()
            source.stop()
        print(json.dumps({"received": count[0], "cpu": _cpu_seconds() - cpu}), flush=True)

    trio.run(main)


# -- load (another process) -------------------------------------------------------------------


def load(port: int, n: int) -> dict[str, Any]:
    """``n`` POSTs of one event over CONNECTIONS keep-alive connections; all must be 202."""
    import httpx
    import trio

    url = f"http://127.0.0.1:{port}/webhook"
    headers = {"Content-Type": "application/json"}
    statuses: dict[int, int] = {}

    async def worker(client: httpx.AsyncClient, count: int) -> None:
        for _ in range(count):
            answer = await client.post(url, content=EVENT, headers=headers)
            statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1

    async def main() -> float:
        limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
        async with httpx.AsyncClient(limits=limits) as client:
            for _ in range(CONNECTIONS):  # warm: open every connection
                await client.post(url, content=EVENT, headers=headers)
            statuses.clear()
            started = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for i in range(CONNECTIONS):
                    share = n // CONNECTIONS + (1 if i < n % CONNECTIONS else 0)
                    nursery.start_soon(worker, client, share)
            return time.perf_counter() - started

    elapsed = trio.run(main)
    return {"requests": n, "elapsed": elapsed, "statuses": statuses}


# -- orchestration ----------------------------------------------------------------------------


class _Server:
    def __init__(self, impl: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.cases.http", "server", impl],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.close()
            raise RuntimeError(f"{impl} server did not start: {line!r}")
        self.port = int(line.split()[1])
        self.result: dict[str, Any] = {}

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            assert self.proc.stdout is not None
            out = self.proc.stdout.read()
            self.proc.wait(timeout=30)
            if out.strip():
                self.result = json.loads(out.strip().splitlines()[-1])
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> _Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


WRK_SCRIPT = (
    'wrk.method = "POST"\n'
    f"wrk.body = '{EVENT.decode()}'\n"
    'wrk.headers["Content-Type"] = "application/json"\n'
)


def _measure_with_wrk(impl: str, seconds: float) -> tuple[float, float]:
    import shutil
    import tempfile

    wrk = shutil.which("wrk")
    assert wrk is not None
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT)
    try:
        with _Server(impl) as server:
            out = subprocess.run(
                [wrk, "-t1", f"-c{CONNECTIONS}", f"-d{seconds:g}s", "-s", script.name,
                 f"http://127.0.0.1:{server.port}/webhook"],
                capture_output=True, text=True, timeout=120,
                preexec_fn=lambda: _pin(CLIENT_CPU),
            )
            if out.returncode != 0:
                raise RuntimeError(f"wrk against {impl} failed:\n{out.stderr[-3000:]}")
    finally:
        os.unlink(script.name)
    text = out.stdout
    assert "Non-2xx" not in text and "Socket errors" not in text, text
    rate = float(text.split("Requests/sec:")[1].split()[0])
    received = server.result["received"]
    return rate, 1e6 * server.result["cpu"] / received


def _measure_source(impl: str, n: int) -> tuple[float, float]:
    """Requests/s and server CPU microseconds per request (httpx load)."""
    with _Server(impl) as server:
        out = subprocess.run(
            [sys.executable, "-m", "bench.cases.http", "load", str(server.port), str(n)],
            cwd=ROOT, capture_output=True, text=True, timeout=600,
        )
        if out.returncode != 0:
            raise RuntimeError(f"load against {impl} failed:\n{out.stderr[-3000:]}")
        result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["statuses"] == {"202": n}, result
    received = server.result["received"]
    assert received == n + CONNECTIONS, (impl, received)  # the warm-up requests count too
    return n / result["elapsed"], 1e6 * server.result["cpu"] / received


async def _sink_ours(url: str, items: list[dict[str, Any]]) -> tuple[float, float]:
    from haive_plugin_http import HttpSink

    async with HttpSink(url, batch_size=500) as sink:
        await sink.write_batch(items[:500])  # warm the connection
        started, cpu = time.perf_counter(), time.process_time()
        for start in range(0, len(items), 1000):
            await sink.write_batch(items[start : start + 1000])
        return _rate_and_cpu(len(items), started, cpu)


async def _sink_raw(url: str, items: list[dict[str, Any]]) -> tuple[float, float]:
    import httpx
    import orjson

    headers = {"Content-Type": "application/json"}
    async with httpx.AsyncClient() as client:
        (await client.post(url, content=orjson.dumps(items[:500]), headers=headers)
         ).raise_for_status()
        started, cpu = time.perf_counter(), time.process_time()
        for start in range(0, len(items), 500):
            body = orjson.dumps(items[start : start + 500])
            (await client.post(url, content=body, headers=headers)).raise_for_status()
        return _rate_and_cpu(len(items), started, cpu)


def _rate_and_cpu(count: int, started: float, cpu: float) -> tuple[float, float]:
    """Events/s (wall clock) and this process's CPU microseconds per event."""
    return (count / (time.perf_counter() - started),
            1e6 * (time.process_time() - cpu) / count)


def run(rec: Any) -> None:
    try:
        import haive_plugin_http  # noqa: F401
    except ImportError:
        print("  haive-plugin-http is not installed: http skipped")
        return
    import trio

    n = 3_000 if rec.quick else 20_000
    runs = 2 if rec.quick else 3
    import shutil

    generator = "wrk" if shutil.which("wrk") else "httpx"
    seconds = 3.0 if rec.quick else 8.0
    ours_rate, raw_rate, ours_cpu, raw_cpu = [], [], [], []
    for _ in range(runs):  # alternating, best of each (the machine is shared)
        for impl, rates, cpus in (("ours", ours_rate, ours_cpu), ("raw", raw_rate, raw_cpu)):
            if generator == "wrk":
                rate, cpu = _measure_with_wrk(impl, seconds)
            else:
                rate, cpu = _measure_source(impl, n)
            rates.append(rate)
            cpus.append(cpu)
    ours = rec.figure("http.source.requests_per_s", max(ours_rate), "requests/s",
                      f"WebhookSource pipeline, 1 event per POST, 202 once buffered; {generator}")
    raw = rec.figure("http.baseline_raw_starlette.requests_per_s", max(raw_rate), "requests/s",
                     f"bare Hypercorn + Starlette endpoint, same parse; {generator}")
    rec.ratio("http.source.vs_raw", ours, raw)
    ours_cpu_source = rec.figure("http.source.server_cpu_us_per_request", min(ours_cpu), "us")
    raw_cpu_source = rec.figure("http.baseline_raw_starlette.server_cpu_us_per_request",
                                min(raw_cpu), "us")
    rec.ratio("http.source.cpu_vs_raw", raw_cpu_source, ours_cpu_source,
              "raw server CPU per request over ours")

    items = [{"user": f"u-{i % 100}", "seq": i, "v": i * 0.5} for i in range(n * 5)]
    ours_sink: list[tuple[float, float]] = []
    raw_sink: list[tuple[float, float]] = []
    with _Server("raw") as receiver:
        url = f"http://127.0.0.1:{receiver.port}/webhook"
        for _ in range(runs + 2):
            ours_sink.append(trio.run(_sink_ours, url, items))
            raw_sink.append(trio.run(_sink_raw, url, items))
    ours = rec.figure("http.sink.events_per_s", max(r for r, _ in ours_sink), "events/s",
                      "HttpSink, 1,000 per write_batch, 500 per POST")
    raw = rec.figure("http.baseline_raw_httpx.events_per_s", max(r for r, _ in raw_sink),
                     "events/s", "httpx AsyncClient POST loop, 500 per POST")
    rec.ratio("http.sink.vs_raw", ours, raw)
    ours_cpu_sink = rec.figure("http.sink.client_cpu_us_per_event",
                               min(c for _, c in ours_sink), "us")
    raw_cpu_sink = rec.figure("http.baseline_raw_httpx.client_cpu_us_per_event",
                              min(c for _, c in raw_sink), "us")
    rec.ratio("http.sink.cpu_vs_raw", raw_cpu_sink, ours_cpu_sink,
              "raw CPU per event over ours: >= 0.8 means ours costs at most 1.25x")


def _main(argv: list[str]) -> None:
    role = argv[0]
    if role == "server":
        _pin(SERVER_CPU)
        (serve_ours if argv[1] == "ours" else serve_raw)()
        return
    _pin(CLIENT_CPU)
    print(json.dumps(load(int(argv[1]), int(argv[2]))), flush=True)


if __name__ == "__main__":
    _main(sys.argv[1:])
