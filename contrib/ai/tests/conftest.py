"""Fixtures for haive-contrib-ai's tests: the real model, loaded once per test session."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio
from haive_contrib_ai.embeddings import EmbeddingTransform, SentenceTransformerProvider
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def minilm() -> SentenceTransformerProvider:
    """The packaged all-MiniLM-L6-v2, loaded once (about 5 s) and shared by every test."""
    provider = SentenceTransformerProvider()
    trio.run(provider.open)
    return provider


@pytest.fixture
def embedder(minilm: SentenceTransformerProvider) -> EmbeddingTransform:
    """An EmbeddingTransform over the session's model."""
    return EmbeddingTransform(provider=minilm)


@pytest.fixture(scope="session")
def intents() -> list[dict[str, str]]:
    """The labeled set: 64 customer messages, 16 each of billing/shipping/technical/account."""
    with open(DATA / "intents.jsonl") as f:
        return [json.loads(line) for line in f]


#: Accuracy figures the classification tests measure, printed in pytest's summary.
ACCURACY: dict[str, str] = {}


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    if ACCURACY:
        terminalreporter.section(
            "haive-contrib-ai classification accuracy (tests/data/intents.jsonl)"
        )
        for name, line in ACCURACY.items():
            terminalreporter.write_line(f"{name}: {line}")


@pytest.fixture
def accuracy_report() -> dict[str, str]:
    """Where a test puts an accuracy line for the end-of-run summary."""
    return ACCURACY


@pytest.fixture(scope="session")
def tiny_chat_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A GPT-2 of ~10k random weights with a BPE tokenizer trained here (llm_tiny)."""
    from haive_contrib_ai.llm_tiny import make_tiny_chat_model

    return make_tiny_chat_model(tmp_path_factory.mktemp("tiny-chat-model"))


@pytest.fixture(scope="session")
def chat_server(tiny_chat_model: Path):  # type: ignore[no-untyped-def]
    """``transformers serve`` on the tiny model, on a free port, for the whole session."""
    from haive_contrib_ai.llm_tiny import TransformersServer

    with TransformersServer(tiny_chat_model) as server:
        yield server


# -- a real HTTP gateway in front of the chat server, for the tests of refusals ---------------
#
# Starlette on Hypercorn (trio): it answers the first ``refuse`` requests with ``status`` (and a
# ``Retry-After`` header when given), like a rate-limited API or an overloaded proxy, then
# forwards requests to the upstream server and streams its answer back unchanged.


class Gateway:
    def __init__(self, upstream: str, *, refuse: int, status: int, retry_after: str | None) -> None:
        self.upstream = upstream.rstrip("/")
        self.refuse = refuse
        self.status = status
        self.retry_after = retry_after
        self.arrivals: list[float] = []
        self.port = 0
        self.client = httpx.AsyncClient(timeout=None)

    async def completions(self, request: Request) -> Response:
        self.arrivals.append(trio.current_time())
        body = await request.body()
        if len(self.arrivals) <= self.refuse:
            headers = {"Retry-After": self.retry_after} if self.retry_after else {}
            return Response(b'{"error": {"message": "slow down"}}', self.status, headers)
        upstream = self.client.build_request(
            "POST",
            self.upstream + "/chat/completions",
            content=body,
            headers={"content-type": "application/json"},
        )
        answer = await self.client.send(upstream, stream=True)

        async def relay() -> AsyncIterator[bytes]:
            try:
                async for piece in answer.aiter_raw():
                    yield piece
            finally:
                await answer.aclose()

        return StreamingResponse(relay(), answer.status_code, media_type="text/event-stream")


@asynccontextmanager
async def gateway(
    upstream: str, *, refuse: int, status: int = 429, retry_after: str | None = None
) -> AsyncIterator[Gateway]:
    proxy = Gateway(upstream, refuse=refuse, status=status, retry_after=retry_after)
    app = Starlette(routes=[Route("/v1/chat/completions", proxy.completions, methods=["POST"])])
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve, app, config)  # type: ignore[arg-type]
        proxy.port = int(binds[0].rsplit(":", 1)[1])
        try:
            yield proxy
        finally:
            nursery.cancel_scope.cancel()
            with trio.CancelScope(shield=True):
                await proxy.client.aclose()


@pytest.fixture
def chat_gateway() -> Callable[..., AbstractAsyncContextManager[Gateway]]:
    """``async with chat_gateway(upstream_url, refuse=2, status=429, retry_after="1")``."""
    return gateway
