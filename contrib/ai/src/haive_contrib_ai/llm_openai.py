"""The OpenAI-compatible chat completions provider, streamed over server-sent events.

One client covers OpenAI, vLLM, llama.cpp's server, Ollama and ``transformers serve``: it
posts ``/chat/completions`` with ``stream: true`` and reads the ``data:`` events (httpx on
trio through AnyIO, events parsed by httpx-sse). A refused request (429, 5xx, a connection
that fails) is retried with exponential backoff, waiting at least what the server's
``Retry-After`` asks; once the first delta has arrived nothing is retried (the text is already
downstream), the stream fails with :class:`~haive_contrib_ai.llm_records.LLMError`.
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import orjson
import trio

from haive.dataflow.errors import ConfigError
from haive.dataflow.runtime.retry import RetryPolicy
from haive.dataflow.runtime.validation import instance_of, invalid, optional_duration

from .llm_providers import GenerationOptions, LLMProvider, TokenStream
from .llm_records import ChatMessage, LLMError, TokenDelta, Usage

#: Statuses worth another try: rate limited, or the server (or a proxy) failing.
RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
DEFAULT_RETRY = RetryPolicy(attempts=4, backoff=0.5, max_backoff=30.0)


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delta-seconds or an HTTP date).

    Example::

        >>> retry_after_seconds("2")
        2.0
        >>> retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0)
        10.0
        >>> retry_after_seconds("soon") is None
        True
    """
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class OpenAIChatProvider(LLMProvider):
    """Any server with OpenAI's chat completions API, streamed over server-sent events.

    ``url`` is the API base (``http://host:8000/v1``) or the full ``.../chat/completions``
    endpoint. Timeouts: ``connect_timeout`` to open the connection, ``idle_timeout`` between
    two events of the stream (a server that stops sending), ``timeout`` for the whole
    generation; each ``None`` for no limit. ``retry`` governs refused requests (429, 5xx,
    connection failures) before the first delta; the pause is the larger of the policy's
    backoff and the server's ``Retry-After``. ``include_usage`` asks the server for the
    token counts (``stream_options``); servers that do not send them get counted deltas.

    Example::

        >>> provider = OpenAIChatProvider(url="http://127.0.0.1:8000/v1", model="tiny")
        >>> provider.endpoint
        'http://127.0.0.1:8000/v1/chat/completions'
        >>> OpenAIChatProvider(url="127.0.0.1:8000", model="tiny")
        Traceback (most recent call last):
        ...
        haive.dataflow.errors.ConfigError: OpenAIChatProvider(url='127.0.0.1:8000'): url must be an http:// or https:// URL, got '127.0.0.1:8000'
    """

    PLUGIN_NAME: ClassVar[str] = "openai"

    def __init__(
        self,
        url: str,
        *,
        model: str,
        api_key: str | None = None,
        headers: dict[str, str] | None = None,
        timeout: Any = None,
        connect_timeout: Any = 10.0,
        idle_timeout: Any = 60.0,
        retry: RetryPolicy = DEFAULT_RETRY,
        include_usage: bool = True,
    ) -> None:
        owner = type(self).__name__
        if not isinstance(url, str) or not re.match(r"https?://", url):
            raise ConfigError(invalid(owner, "url", url, "an http:// or https:// URL"))
        if not isinstance(model, str) or not model:
            raise ConfigError(invalid(owner, "model", model, "a non-empty string"))
        instance_of(RetryPolicy, "a RetryPolicy").check(owner, "retry", retry)
        base = url.rstrip("/")
        self.endpoint = base if base.endswith("/chat/completions") else base + "/chat/completions"
        self.model = model
        self.timeout = optional_duration(owner, "timeout", timeout)
        self.connect_timeout = optional_duration(owner, "connect_timeout", connect_timeout)
        self.idle_timeout = optional_duration(owner, "idle_timeout", idle_timeout)
        self.retry = retry
        self.include_usage = include_usage
        self._headers = {"Content-Type": "application/json", **(headers or {})}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._client: Any = None
        #: HTTP requests sent (retries included) and retries taken, for tests and metrics.
        self.requests = 0
        self.retries = 0

    async def open(self) -> None:
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(
                    connect=self.connect_timeout,
                    read=self.idle_timeout,
                    write=self.idle_timeout,
                    pool=self.connect_timeout,
                ),
                # One connection per concurrent stream; the LLM node bounds how many.
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=32),
            )

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with trio.CancelScope(shield=True):
                await client.aclose()

    def body(self, messages: Sequence[ChatMessage], options: GenerationOptions | None) -> bytes:
        """The request's JSON body."""
        request: dict[str, Any] = {
            "model": self.model,
            "messages": [m.as_dict() for m in messages],
            "stream": True,
        }
        if self.include_usage:
            request["stream_options"] = {"include_usage": True}
        if options is not None:
            if options.max_tokens is not None:
                request["max_tokens"] = options.max_tokens
            if options.temperature is not None:
                request["temperature"] = options.temperature
            if options.stop:
                request["stop"] = list(options.stop)
            if options.seed is not None:
                request["seed"] = options.seed
        return orjson.dumps(request)

    @asynccontextmanager
    async def stream(
        self, messages: Sequence[ChatMessage], options: GenerationOptions | None = None
    ) -> AsyncIterator[TokenStream]:
        await self.open()
        started = trio.current_time()
        deadline = trio.current_time() + self.timeout if self.timeout is not None else math.inf
        with trio.CancelScope(deadline=deadline) as scope:
            async with self._connect(self.body(messages, options)) as source:
                tokens = TokenStream(
                    lambda stream: self._deltas(source, stream), started=started, model=self.model
                )
                try:
                    yield tokens
                finally:
                    await tokens.aclose()
        if scope.cancelled_caught:
            raise LLMError(
                f"generation from {self.endpoint} took longer than timeout={self.timeout}s"
            )

    @asynccontextmanager
    async def _connect(self, body: bytes) -> AsyncIterator[Any]:
        """An open SSE event source, after retrying refused attempts."""
        import httpx
        from httpx_sse import aconnect_sse

        attempt = 1
        streaming = False
        while True:
            self.requests += 1
            failure: LLMError
            try:
                async with aconnect_sse(
                    self._client, "POST", self.endpoint, content=body, headers=self._headers
                ) as source:
                    response = source.response
                    if response.status_code == 200:
                        streaming = True
                        yield source
                        return
                    await response.aread()
                    failure = LLMError(
                        f"chat server {self.endpoint} answered {response.status_code}: "
                        f"{response.text[:300]}",
                        status=response.status_code,
                        retryable=response.status_code in RETRYABLE_STATUSES,
                        retry_after=retry_after_seconds(response.headers.get("retry-after")),
                    )
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError) as exc:
                if streaming:  # raised while the caller read the stream: not ours to retry
                    raise
                # Nothing was generated for us yet: the server is down, restarting or
                # dropped the connection before answering.
                failure = LLMError(
                    f"chat request to {self.endpoint} failed: {exc!r}", retryable=True
                )
            if not failure.retryable or attempt >= self.retry.attempts:
                raise failure
            pause = max(self.retry.delay(attempt), failure.retry_after or 0.0)
            attempt += 1
            self.retries += 1
            await trio.sleep(pause)

    async def _deltas(self, source: Any, tokens: TokenStream) -> AsyncIterator[TokenDelta]:
        import httpx

        try:
            async for event in source.aiter_sse():
                data = event.data
                if data == "[DONE]":
                    return
                if not data:
                    continue
                try:
                    chunk = orjson.loads(data)
                except orjson.JSONDecodeError as exc:
                    raise LLMError(
                        f"chat server {self.endpoint} sent an event that is not JSON: {data[:200]!r}"
                    ) from exc
                if not isinstance(chunk, dict):
                    raise LLMError(f"chat server {self.endpoint} sent {data[:200]!r}")
                if "error" in chunk:
                    raise LLMError(
                        f"chat server {self.endpoint} failed mid-stream: {chunk['error']}"
                    )
                usage = chunk.get("usage")
                if isinstance(usage, dict):
                    tokens.reported_usage = Usage(
                        int(usage.get("prompt_tokens") or 0),
                        int(usage.get("completion_tokens") or 0),
                    )
                for choice in chunk.get("choices") or ():
                    delta = choice.get("delta") or {}
                    text = delta.get("content") or ""
                    finish = choice.get("finish_reason")
                    if text or finish:
                        yield TokenDelta(text, finish)
        except httpx.TimeoutException as exc:
            raise LLMError(
                f"chat server {self.endpoint} sent nothing for idle_timeout={self.idle_timeout}s"
            ) from exc
        except httpx.HTTPError as exc:
            raise LLMError(f"chat stream from {self.endpoint} broke off: {exc!r}") from exc
