"""One OpenTelemetry trace from a WebSocket client, through a server pipeline, a Redis
stream and a worker pipeline, back to the client.

A client sends readings over a WebSocket, each in a trace of its own (its span's
``traceparent`` goes with the message). The server pipeline reads them
(``WebSocketSource``), scales them and appends them to a Redis stream; the traceparent of
its send span travels as fields of each entry. A worker pipeline reads the stream as a
consumer group member and broadcasts results to a room the client joined; each result
carries the worker's trace context back. Tracing is on at a 100 % ratio here, with spans
kept in memory (the SDK's ``InMemorySpanExporter``) and printed as a tree: in production
leave out ``exporter=`` and spans go to an OTLP collector (``OTEL_EXPORTER_OTLP_ENDPOINT``),
sampled at ``sample_ratio``.

Needs Redis on 127.0.0.1:6379, haive-plugin-websocket, haive-plugin-redis and
haive-plugin-tracing.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import trio
from haive_plugin_tracing import enable_tracing, inject_trace_headers, span_of
from haive_plugin_websocket import (
    ConnectionConfig,
    StreamingClient,
    WebSocketManager,
    WebSocketRoomSink,
    WebSocketSource,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from haive.dataflow.streaming import RedisStreamSink, RedisStreamSource, StreamingPipeline

READINGS = 5 if os.environ.get("HAIVE_EXAMPLE_QUICK") else 50


def print_tree(spans: list[ReadableSpan], trace_id: int) -> None:
    """The spans of one trace, each under its parent."""
    mine = sorted((s for s in spans if s.context.trace_id == trace_id), key=lambda s: s.start_time or 0)
    children: dict[int | None, list[ReadableSpan]] = {}
    ids = {s.context.span_id for s in mine}
    for span in mine:
        parent = span.parent.span_id if span.parent and span.parent.span_id in ids else None
        children.setdefault(parent, []).append(span)

    def show(parent: int | None, depth: int) -> None:
        for span in children.get(parent, []):
            took = ((span.end_time or 0) - (span.start_time or 0)) / 1e6
            print(f"  {'  ' * depth}{span.name}  ({took:.2f} ms)")
            show(span.context.span_id, depth + 1)

    print(f"trace {trace_id:032x}:")
    show(None, 0)


async def main() -> None:
    exporter = InMemorySpanExporter()
    tracing = enable_tracing(1.0, exporter=exporter, simple_export=True, service_name="example")
    stream = f"{{example-{uuid.uuid4().hex[:8]}}}:readings"
    results: list[dict[str, Any]] = []
    all_back = trio.Event()
    try:
        manager = WebSocketManager(port=0)
        source = WebSocketSource(manager, types=["reading"])
        server = StreamingPipeline("server")
        server.set_source(source)
        server.add_processor(lambda message: {"value": message.data["value"] * 2})
        server.set_sink(RedisStreamSink(stream))

        worker = StreamingPipeline("worker")
        worker.set_source(RedisStreamSource(stream, group="workers", block="20ms"))
        worker.add_processor(lambda item: {"type": "result", "value": item["value"] + 1})
        worker.set_sink(WebSocketRoomSink(manager, "results"))

        client_tracer = tracing.provider.get_tracer("example-client")
        async with manager.serving(), trio.open_nursery() as nursery:
            nursery.start_soon(server.execute)
            nursery.start_soon(worker.execute)
            client = StreamingClient(ConnectionConfig(url=manager.url))

            @client.on_message("result")
            def on_result(message: dict[str, Any]) -> None:
                results.append(message)
                if len(results) == READINGS:
                    all_back.set()

            async with client.connect():
                await client.join("results")
                for value in range(READINGS):
                    with client_tracer.start_as_current_span("client send reading"):
                        message = inject_trace_headers({"type": "reading", "value": value})
                        await client.send_message(message)
                await client.flush()
                with trio.fail_after(60):
                    await all_back.wait()
            source.close()
            nursery.cancel_scope.cancel()
        client_redis = RedisStreamSink(stream)
        async with client_redis:
            await client_redis.client.execute("DEL", stream)
    finally:
        tracing.shutdown()

    spans = list(exporter.get_finished_spans())
    first = span_of(results[0])
    assert first is not None
    print(f"{len(results)} results back, {len(spans)} spans in {len({s.context.trace_id for s in spans})} traces")
    print_tree(spans, first.trace_id)
    names = {s.name for s in spans if s.context.trace_id == first.trace_id}
    assert {"client send reading", "server receive", "worker receive"} <= names, names


if __name__ == "__main__":
    trio.run(main)
