"""The OpenAI-compatible HTTP embedding provider, against a real local HTTP server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import h11
import numpy as np
import pytest
import trio
from haive_contrib_ai.embeddings import (
    EmbeddingError,
    EmbeddingProcessor,
    EmbeddingTransform,
    HashingEmbeddingProvider,
    OpenAIEmbeddingProvider,
)
from haive_contrib_ai.records import Chunk

from haive.dataflow import StreamingPipeline
from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.builtins.sources import IterableSource


class EmbeddingServer:
    """A tiny OpenAI-style ``POST /v1/embeddings`` server (hashing vectors), on trio + h11."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.headers: list[dict[str, str]] = []
        self.port = 0

    def respond(self, target: bytes, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        if target != b"/v1/embeddings":
            return 404, b'{"error": "not found"}'
        request = json.loads(body)
        self.requests.append(request)
        self.headers.append(headers)
        texts = request["input"]
        if any("FAIL" in t for t in texts):
            return 500, b'{"error": {"message": "model crashed"}}'
        if any("MALFORMED" in t for t in texts):
            return 200, b'{"object": "list"}'
        dims = request.get("dimensions", 64)
        vectors = HashingEmbeddingProvider(dimensions=dims)._embed_sync(texts)
        data = [
            {"object": "embedding", "index": i, "embedding": vectors[i].tolist()}
            for i in reversed(range(len(texts)))  # out of order: the client must sort
        ]
        return 200, json.dumps({"object": "list", "data": data, "model": request["model"]}).encode()

    async def handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request = None
                body = b""
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(await stream.receive_some(65536))
                    elif isinstance(event, h11.Request):
                        request = event
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    elif isinstance(event, h11.ConnectionClosed):
                        return
                assert request is not None
                headers = {k.decode().lower(): v.decode() for k, v in request.headers}
                status, payload = self.respond(request.target, headers, body)
                response = h11.Response(
                    status_code=status,
                    headers=[
                        ("content-type", "application/json"),
                        ("content-length", str(len(payload))),
                    ],
                )
                await stream.send_all(conn.send(response))
                await stream.send_all(conn.send(h11.Data(data=payload)))
                await stream.send_all(conn.send(h11.EndOfMessage()))
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (trio.BrokenResourceError, h11.RemoteProtocolError):
            return


@asynccontextmanager
async def embedding_server() -> AsyncIterator[EmbeddingServer]:
    server = EmbeddingServer()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1"))
        server.port = listeners[0].socket.getsockname()[1]
        try:
            yield server
        finally:
            nursery.cancel_scope.cancel()


async def test_provider_batches_requests_sorts_rows_and_sends_options():
    async with embedding_server() as server:
        provider = OpenAIEmbeddingProvider(
            url=f"http://127.0.0.1:{server.port}/v1/",
            model="test-embed",
            api_key="secret-key",
            dimensions=32,
            batch_size=3,
        )
        texts = ["red apple", "red apples", "tax law", "a", "b", "c", "d"]
        try:
            matrix = await provider.embed(texts)
        finally:
            await provider.aclose()
    assert matrix.shape == (7, 32) and matrix.dtype == np.float32
    expected = HashingEmbeddingProvider(dimensions=32)._embed_sync(texts)
    np.testing.assert_allclose(matrix, expected, atol=1e-6)  # rows back in input order
    assert [len(r["input"]) for r in server.requests] == [3, 3, 1]
    assert all(r["model"] == "test-embed" and r["dimensions"] == 32 for r in server.requests)
    assert server.headers[0]["authorization"] == "Bearer secret-key"
    assert provider.dimensions == 32 and provider.requests == 3


async def test_embedding_processor_by_url_in_a_pipeline():
    async with embedding_server() as server:
        node = EmbeddingProcessor(url=f"http://127.0.0.1:{server.port}/v1", model="m")
        assert node.provider.PLUGIN_NAME == "openai"
        chunks = [
            Chunk(f"d:{i}", "d", i, text, 0, len(text))
            for i, text in enumerate(["red apple", "red apples", "tax law"])
        ]
        pipeline = StreamingPipeline("http")
        pipeline.set_source(IterableSource(chunks))
        pipeline.add_node(node)
        sink = MemorySink()
        pipeline.set_sink(sink)
        await pipeline.execute()
    vectors = [c.embedding for c in sink.items]
    assert all(v.shape == (64,) for v in vectors)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    assert len(server.requests) == 1  # one batch, one request


async def test_server_errors_and_malformed_answers_are_embedding_errors():
    async with embedding_server() as server:
        embed = EmbeddingTransform(url=f"http://127.0.0.1:{server.port}/v1")
        try:
            with pytest.raises(EmbeddingError, match=r"answered 500: .*model crashed"):
                await embed.transform("please FAIL")
            with pytest.raises(EmbeddingError, match="malformed response"):
                await embed.transform("MALFORMED reply")
            assert (await embed.transform("fine")).shape == (64,)
        finally:
            await embed.aclose()
    wrong_path = OpenAIEmbeddingProvider(url=f"http://127.0.0.1:{server.port}/nothing/embeddings")
    with pytest.raises(EmbeddingError, match="failed"):  # the server is gone now
        await wrong_path.embed(["x"])
    await wrong_path.aclose()


def test_url_must_be_http():
    from haive.dataflow import ConfigError

    with pytest.raises(ConfigError, match="url must start with http"):
        OpenAIEmbeddingProvider(url="ftp://host/v1")
