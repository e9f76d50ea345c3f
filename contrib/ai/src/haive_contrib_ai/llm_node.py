"""The LLM node: a prompt built from each event, answered by an LLM provider.

``mode="stream"`` emits :class:`LLMChunk` events downstream as the tokens arrive, then one
:class:`LLMResponse` with the whole text and usage; ``mode="whole"`` emits only the
response. Up to ``concurrency`` generations run at once (their chunks interleave; each chunk
names its request and its position). ``rate_limit`` holds requests back per key, ``cache``
(a :class:`~haive.dataflow.runtime.caching.ResultCache`) answers identical prompts from
memory, ``schema`` validates the answer as JSON into a typed object. :attr:`LLMNode.metrics`
counts requests, tokens, errors, time to first token and tokens per second.
"""

from __future__ import annotations

import itertools
import math
import string
from collections import deque
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, ClassVar

import attrs
import trio

from haive.dataflow.errors import ConfigError
from haive.dataflow.runtime.backpressure import BoundedBuffer
from haive.dataflow.runtime.caching import ResultCache
from haive.dataflow.runtime.nodes import NODE_ON_ERROR, Emit, Node, NodeContext
from haive.dataflow.runtime.retry import RetryPolicy
from haive.dataflow.runtime.schemas import Schema
from haive.dataflow.runtime.validation import (
    NON_EMPTY_STR,
    POSITIVE_INT,
    instance_of,
    invalid,
    one_of,
)

from .llm_limits import KeyedRateLimiter, RateLimit
from .llm_providers import GenerationOptions, LLMProvider, resolve_llm_provider
from .llm_records import ChatMessage, Generation, Usage, as_messages

MODES = ("stream", "whole")
_request_ids = itertools.count(1)


@attrs.frozen
class LLMChunk:
    """A piece of an answer, emitted as it arrives (``mode="stream"``).

    ``request_id`` names the generation, ``index`` counts its chunks from 0, ``event`` is
    the event the prompt was built from.

    Example::

        >>> LLMChunk("llm-1", 0, "Hel", {"q": "hi"}).text
        'Hel'
    """

    request_id: str
    index: int
    text: str
    event: Any = None


@attrs.frozen
class LLMResponse:
    """The whole answer to one event, after its chunks.

    ``structured`` is the answer validated by the node's ``schema`` (else ``None``);
    ``time_to_first_token`` and ``duration`` are seconds; ``cached`` says it came from the
    result cache (no request was sent).

    Example::

        >>> r = LLMResponse("llm-1", "Hello", Usage(3, 4), event=None, duration=2.0)
        >>> r.tokens_per_second
        2.0
    """

    request_id: str
    text: str
    usage: Usage
    event: Any = None
    finish_reason: str | None = None
    model: str | None = None
    structured: Any = None
    time_to_first_token: float | None = None
    duration: float = 0.0
    chunks: int = 0
    cached: bool = False

    @property
    def tokens_per_second(self) -> float:
        """Completion tokens per second of generation (0 when nothing was timed)."""
        return self.usage.completion_tokens / self.duration if self.duration > 0 else 0.0


@attrs.define
class LLMMetrics:
    """What an :class:`LLMNode` measured; :meth:`snapshot` is the dict for dashboards.

    Example::

        >>> LLMMetrics().snapshot()["requests"]
        0
    """

    requests: int = 0
    errors: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    generation_seconds: float = 0.0
    #: The last 1024 times to first token (bounded: a long-running node keeps no history).
    time_to_first_token: deque[float] = attrs.field(factory=lambda: deque(maxlen=1024))

    def record(self, response: LLMResponse) -> None:
        self.prompt_tokens += response.usage.prompt_tokens
        self.completion_tokens += response.usage.completion_tokens
        self.generation_seconds += response.duration
        if response.time_to_first_token is not None:
            self.time_to_first_token.append(response.time_to_first_token)

    def snapshot(self) -> dict[str, float]:
        ttft = sorted(self.time_to_first_token)

        def quantile(q: float) -> float:
            return ttft[min(len(ttft) - 1, math.floor(q * len(ttft)))] if ttft else 0.0

        return {
            "requests": self.requests,
            "errors": self.errors,
            "cache_hits": self.cache_hits,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "tokens_used": self.prompt_tokens + self.completion_tokens,
            "tokens_per_second": (
                self.completion_tokens / self.generation_seconds
                if self.generation_seconds > 0
                else 0.0
            ),
            "time_to_first_token_p50": quantile(0.5),
            "time_to_first_token_p99": quantile(0.99),
        }


PromptBuilder = Callable[[Any], Any]


def _fields_of(event: Any) -> Mapping[str, Any]:
    if isinstance(event, Mapping):
        return event
    if attrs.has(type(event)):
        return attrs.asdict(event, recurse=False)
    if hasattr(event, "__struct_fields__"):  # msgspec.Struct
        return {name: getattr(event, name) for name in event.__struct_fields__}
    if hasattr(event, "model_dump"):  # pydantic
        dumped: Mapping[str, Any] = event.model_dump()
        return dumped
    return {"event": event}


class PromptTemplate:
    """A ``str.format`` template filled from an event's fields (``{event}`` is the event).

    Example::

        >>> PromptTemplate("Summarize: {text}")({"text": "markets rose"})
        'Summarize: markets rose'
        >>> PromptTemplate("Summarize: {body}")({"text": "x"})
        Traceback (most recent call last):
        ...
        KeyError: "prompt template needs field 'body', the event has: text"
    """

    def __init__(self, template: str) -> None:
        self.template = template
        self.fields = [name for _, name, _, _ in string.Formatter().parse(template) if name]

    def __call__(self, event: Any) -> str:
        fields = _fields_of(event)
        values = {"event": event, **fields}
        missing = [name for name in self.fields if name.split(".")[0].split("[")[0] not in values]
        if missing:
            raise KeyError(
                f"prompt template needs field {missing[0]!r}, the event has: {', '.join(fields)}"
            )
        return self.template.format(**values)


class LLMNode(Node):
    """Asks an LLM about each event: prompt from the event, streamed or whole answer.

    ``prompt`` is a template (``"Summarize: {text}"``, filled from the event's fields) or a
    function from the event to a prompt (a string, or chat messages); ``system`` is an
    optional system message. The provider is ``provider=`` (an :class:`LLMProvider` or a
    registered name with ``model=``/options) or ``url=`` of an OpenAI-compatible server.

    ``mode="stream"`` emits :class:`LLMChunk` events as tokens arrive, then an
    :class:`LLMResponse`; ``mode="whole"`` only the response. ``concurrency`` bounds the
    generations in flight; ``rate_limit`` is a :class:`RateLimit` per key; ``cache`` a
    ``ResultCache`` for identical prompts (key: model, messages and options; failures are
    never cached); ``schema`` a msgspec Struct, pydantic model or attrs class the answer
    must match as JSON (``LLMResponse.structured``), a mismatch failing the event.

    Failures (the server refusing after the provider's retries, a broken stream, a schema
    mismatch) go to the pipeline's error policy; the node's ``retry`` policy retries an
    event only while none of its chunks has gone downstream.

    Example (a provider that answers by shouting the prompt back)::

        >>> from contextlib import asynccontextmanager
        >>> from haive_contrib_ai.llm_providers import TokenStream
        >>> from haive_contrib_ai.llm_records import TokenDelta
        >>> class Shout(LLMProvider):
        ...     model = "shout"
        ...     @asynccontextmanager
        ...     async def stream(self, messages, options=None):
        ...         async def deltas():
        ...             for word in messages[-1].content.upper().split():
        ...                 yield TokenDelta(word + " ")
        ...         yield TokenStream(lambda s: deltas(), started=trio.current_time())
        >>> node = LLMNode(provider=Shout(), prompt="say {text}")
        >>> out = trio.run(node.process_batch, [{"text": "hi there"}], NodeContext("llm"))
        >>> [type(e).__name__ for e in out], out[-1].text
        (['LLMChunk', 'LLMChunk', 'LLMChunk', 'LLMResponse'], 'SAY HI THERE ')
    """

    PLUGIN_NAME: ClassVar[str] = "llm"

    def __init__(
        self,
        name: str = "llm",
        *,
        prompt: str | PromptBuilder,
        provider: str | LLMProvider | None = None,
        url: str | None = None,
        system: str | None = None,
        mode: str = "stream",
        max_tokens: int | None = None,
        temperature: float | None = None,
        schema: type[Any] | None = None,
        concurrency: int = 4,
        rate_limit: RateLimit | None = None,
        cache: ResultCache | None = None,
        on_error: str | None = None,
        retry: RetryPolicy | None = None,
        **provider_options: Any,
    ) -> None:
        owner = type(self).__name__
        self.name = NON_EMPTY_STR.check(owner, "name", name)
        if isinstance(prompt, str):
            self.build_prompt: PromptBuilder = PromptTemplate(prompt)
        elif callable(prompt):
            self.build_prompt = prompt
        else:
            raise ConfigError(invalid(owner, "prompt", prompt, "a template string or a function"))
        if system is not None and not isinstance(system, str):
            raise ConfigError(invalid(owner, "system", system, "a string or None"))
        self.system = system
        self.mode = one_of(*MODES).check(owner, "mode", mode)
        self.options = GenerationOptions(max_tokens=max_tokens, temperature=temperature)
        self.schema = Schema(schema) if schema is not None else None
        self.concurrency = POSITIVE_INT.check(owner, "concurrency", concurrency)
        self.rate_limit = (
            instance_of(RateLimit, "a RateLimit").optional().check(owner, "rate_limit", rate_limit)
        )
        self.cache = (
            instance_of(ResultCache, "a ResultCache").optional().check(owner, "cache", cache)
        )
        self.on_error = NODE_ON_ERROR.check(owner, "on_error", on_error)
        self.retry = (
            instance_of(RetryPolicy, "a RetryPolicy").optional().check(owner, "retry", retry)
        )
        self.provider = resolve_llm_provider(provider, url=url, **provider_options)
        self._limiter = KeyedRateLimiter(rate_limit) if rate_limit is not None else None
        self._in_flight: dict[Hashable, trio.Event] = {}
        self.metrics = LLMMetrics()

    async def open(self) -> None:
        await self.provider.open()

    async def aclose(self) -> None:
        await self.provider.aclose()

    def messages_for(self, event: Any) -> tuple[ChatMessage, ...]:
        """The chat messages the prompt builder makes of ``event`` (with the system one)."""
        messages = as_messages(self.build_prompt(event))
        if self.system is not None:
            messages = (ChatMessage("system", self.system), *messages)
        return messages

    def _cache_key(self, messages: Sequence[ChatMessage]) -> Hashable:
        return (self.provider.model, tuple(messages), self.options)

    async def answer(self, event: Any, emit: Emit | None = None) -> LLMResponse:
        """Generate the answer to ``event``; in stream mode each chunk goes to ``emit``.

        Raises on failure; the chunks already emitted stay emitted (see :attr:`emitted`).
        """
        messages = self.messages_for(event)
        request_id = f"{self.name}-{next(_request_ids)}"
        key = self._cache_key(messages) if self.cache is not None else None
        if key is not None:
            response = await self._from_cache(key, request_id, event, emit)
            if response is not None:
                return response
            done = self._in_flight[key] = trio.Event()
        try:
            response = await self._generate(messages, request_id, event, emit)
            if key is not None and self.cache is not None:
                self.cache.put(key, response, namespace=self.name)
            return response
        finally:
            if key is not None:
                del self._in_flight[key]
                done.set()

    async def _from_cache(
        self, key: Hashable, request_id: str, event: Any, emit: Emit | None
    ) -> LLMResponse | None:
        assert self.cache is not None
        while (pending := self._in_flight.get(key)) is not None:
            await pending.wait()  # an identical prompt is being answered: share its answer
        hit, cached = self.cache.get(key, namespace=self.name)
        if not hit:
            return None
        self.metrics.cache_hits += 1
        if emit is not None and self.mode == "stream":
            await emit([LLMChunk(request_id, 0, cached.text, event)])
        response: LLMResponse = attrs.evolve(
            cached, request_id=request_id, event=event, cached=True, chunks=1
        )
        return response

    async def _generate(
        self, messages: Sequence[ChatMessage], request_id: str, event: Any, emit: Emit | None
    ) -> LLMResponse:
        rate_key = None
        if self._limiter is not None:
            rate_key = self._limiter.key_of(event)
            await self._limiter.acquire(rate_key)
        self.metrics.requests += 1
        started = trio.current_time()
        index = 0
        async with self.provider.stream(messages, self.options) as tokens:
            async for delta in tokens:
                if not delta.text:
                    continue
                if emit is not None and self.mode == "stream":
                    await emit([LLMChunk(request_id, index, delta.text, event)])
                index += 1
        generation: Generation | None = tokens.generation
        assert generation is not None
        if self._limiter is not None:
            self._limiter.spend_tokens(rate_key, generation.usage.total_tokens)
        structured = self.schema.validate(generation.text) if self.schema is not None else None
        response = LLMResponse(
            request_id,
            generation.text,
            generation.usage,
            event=event,
            finish_reason=generation.finish_reason,
            model=generation.model,
            structured=structured,
            time_to_first_token=tokens.time_to_first_token,
            duration=trio.current_time() - started,
            chunks=index,
        )
        self.metrics.record(response)
        return response

    async def _answer_one(self, event: Any, ctx: NodeContext, emit: Emit) -> None:
        emitted = [0]

        async def counted(batch: list[Any]) -> None:
            emitted[0] += len(batch)
            await emit(batch)

        attempts = 1
        while True:
            try:
                response = await self.answer(event, counted)
            except Exception as exc:
                self.metrics.errors += 1
                if emitted[0] == 0 and attempts < ctx.retry.attempts:
                    ctx.stats.retries += 1
                    await trio.sleep(ctx.retry.delay(attempts))
                    attempts += 1
                    continue
                await ctx.fail(event, exc, attempts=attempts)
                return
            await counted([response])
            return

    async def process_batch(self, batch: list[Any], ctx: NodeContext) -> list[Any]:
        """The outputs for ``batch`` (chunks and responses), generated ``concurrency`` at a
        time; a pipeline runs the node through :meth:`run`, which emits chunks as they come."""
        out: list[Any] = []

        async def collect(items: list[Any]) -> None:
            out.extend(items)

        limiter = trio.CapacityLimiter(self.concurrency)

        async def one(event: Any) -> None:
            async with limiter:
                await self._answer_one(event, ctx, collect)

        async with trio.open_nursery() as nursery:
            for event in batch:
                nursery.start_soon(one, event)
        return out

    async def run(self, ctx: NodeContext, inbox: BoundedBuffer[Any], emit: Emit) -> None:
        """``concurrency`` workers take events from the inbox and emit as tokens arrive."""
        jobs_send, jobs_recv = trio.open_memory_channel[Any](0)

        async def feed() -> None:
            async with jobs_send:
                while (batch := await ctx.next_batch(inbox)) is not None:
                    for event in batch:
                        await jobs_send.send(event)

        async def counted(batch: list[Any]) -> None:
            ctx.stats.items_out += len(batch)
            await emit(batch)

        async def work(jobs: trio.MemoryReceiveChannel[Any]) -> None:
            async with jobs:
                async for event in jobs:
                    await self._answer_one(event, ctx, counted)
                    ctx.stats.in_progress -= 1
                    ctx.stats.batches += 1
                    if ctx.on_progress is not None:
                        ctx.on_progress()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(feed)
            async with jobs_recv:
                for _ in range(self.concurrency):
                    nursery.start_soon(work, jobs_recv.clone())
