"""One trace from a WebSocket client through a server pipeline, Redis Streams and a worker
pipeline back to the client: real servers on 127.0.0.1, spans in the SDK's in-memory
exporter."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from haive_plugin_redis import RedisStreamSink, RedisStreamSource
from haive_plugin_tracing import inject_trace_headers, span_of
from haive_plugin_websocket import (
    ConnectionConfig,
    StreamingClient,
    WebSocketManager,
    WebSocketRoomSink,
    WebSocketSource,
)

from haive.dataflow import StreamingPipeline

URL = "redis://127.0.0.1:6379/0"
MESSAGES = 5


@pytest.mark.redis
def test_a_trace_crosses_websocket_server_redis_worker_and_back(traced, tag):
    tracing, exporter = traced()
    stream = f"{{{tag}}}:readings"
    received: list[dict[str, Any]] = []
    sent_contexts: list[Any] = []

    async def main() -> None:
        all_back = trio.Event()
        manager = WebSocketManager(port=0)
        source = WebSocketSource(manager, types=["reading"])
        server = StreamingPipeline("server")
        server.set_source(source)
        server.add_processor(lambda m: {"client": m.client_id, "value": m.data["value"]})
        server.set_sink(RedisStreamSink(stream, url=URL))

        worker_source = RedisStreamSource(stream, url=URL, group="workers", block="20ms")
        worker = StreamingPipeline("worker")
        worker.set_source(worker_source)
        worker.add_processor(lambda item: {"type": "result", "value": item["value"] * 10})
        worker.set_sink(WebSocketRoomSink(manager, "results"))

        client_tracer = tracing.provider.get_tracer("test-client")
        async with manager.serving(), trio.open_nursery() as nursery:
            nursery.start_soon(server.execute)
            nursery.start_soon(worker.execute)
            client = StreamingClient(ConnectionConfig(url=manager.url))

            @client.on_message("result")
            def result(message: dict[str, Any]) -> None:
                received.append(message)
                if len(received) == MESSAGES:
                    all_back.set()

            async with client.connect():
                await client.join("results")
                for value in range(MESSAGES):
                    # Each reading is its own trace, started by the client.
                    with client_tracer.start_as_current_span("client send") as span:
                        sent_contexts.append(span.get_span_context())
                        await client.send_message(
                            inject_trace_headers({"type": "reading", "value": value})
                        )
                await client.flush()
                with trio.fail_after(30):
                    await all_back.wait()
            source.close()
            nursery.cancel_scope.cancel()

    trio.run(main)

    assert sorted(m["value"] for m in received) == [v * 10 for v in range(MESSAGES)]
    spans = exporter.get_finished_spans()
    by_trace: dict[int, list[str]] = {}
    for span in spans:
        by_trace.setdefault(span.context.trace_id, []).append(span.name)
    for sent in sent_contexts:
        names = by_trace[sent.trace_id]
        # The client's span, the server's receive/process/send, the worker's likewise.
        for expected in (
            "client send",
            "server receive",
            "server process <lambda>_0",
            "server send sink:RedisStreamSink",
            "worker receive",
            "worker process <lambda>_0",
            "worker send sink:WebSocketRoomSink",
        ):
            assert expected in names, (expected, names)
    # What came back to the client carries the context of the worker's send span, in the
    # trace the client started for that reading.
    sends = {
        s.context.span_id: s.context.trace_id
        for s in spans
        if s.name == "worker send sink:WebSocketRoomSink"
    }
    value_trace = {m["value"] // 10: span_of(m).trace_id for m in received}  # type: ignore[union-attr]
    for value, sent in enumerate(sent_contexts):
        assert value_trace[value] == sent.trace_id
    for message in received:
        context = span_of(message)
        assert context is not None and sends[context.span_id] == context.trace_id
    # Every span of the worker continues a trace some client started: nothing new.
    assert set(by_trace) == {s.trace_id for s in sent_contexts}
