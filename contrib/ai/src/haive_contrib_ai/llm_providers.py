"""LLM providers: what turns a chat prompt into a stream of text deltas.

Providers plug in through the ``haive_register_llm_providers`` hook (kind ``llm_provider``).
Each has a ``PLUGIN_NAME``, takes keyword options and has :meth:`LLMProvider.stream`, an async
context manager yielding a :class:`TokenStream`::

    async with provider.stream(messages, max_tokens=64) as tokens:
        async for delta in tokens:
            print(delta.text, end="")
    print(tokens.generation.usage)

Leaving the ``async with`` early (a ``break``, an error, a cancelled scope) ends the
generation: the HTTP provider closes its response, so the server stops producing; the local
provider stops its ``generate`` at the next token.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, ClassVar

import attrs

from haive.dataflow.errors import ConfigError, UnknownPluginError
from haive.dataflow.plugins import CapabilityKind
from haive.dataflow.runtime.validation import NON_NEGATIVE_NUMBER, POSITIVE_INT, invalid

from . import hookspecs
from .llm_records import ChatMessage, Generation, TokenDelta, Usage


@attrs.frozen
class GenerationOptions:
    """Sampling settings sent with a request (``None``: the server's default).

    Example::

        >>> GenerationOptions(max_tokens=0)
        Traceback (most recent call last):
        ...
        haive.dataflow.errors.ConfigError: GenerationOptions(max_tokens=0): max_tokens must be an integer >= 1, or None, got 0
    """

    max_tokens: int | None = attrs.field(default=None, validator=POSITIVE_INT.optional())
    temperature: float | None = attrs.field(default=None, validator=NON_NEGATIVE_NUMBER.optional())
    #: Stop sequences.
    stop: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    seed: int | None = None


class TokenStream:
    """The deltas of one generation, in order; :attr:`generation` is set once they end.

    Providers build one from a function that, given the stream, returns the async iterator of
    deltas (it may set :attr:`reported_usage` as the server reports it). Providers call
    :meth:`aclose` when the generation ends. ``time_to_first_token`` (seconds, trio clock) is
    measured from the request to the first non-empty delta.

    Example::

        >>> import trio
        >>> async def deltas():
        ...     yield TokenDelta("a")
        ...     yield TokenDelta("b")
        >>> async def main():
        ...     stream = TokenStream(lambda s: deltas(), started=trio.current_time())
        ...     return [d.text async for d in stream], stream.generation.text
        >>> trio.run(main)
        (['a', 'b'], 'ab')
    """

    def __init__(
        self,
        deltas: Callable[[TokenStream], AsyncIterator[TokenDelta]],
        *,
        started: float,
        model: str | None = None,
    ) -> None:
        self._deltas = deltas(self)
        self.started = started
        self.model = model
        self.parts: list[str] = []
        self.time_to_first_token: float | None = None
        self.finish_reason: str | None = None
        #: What the server reported (None: not reported; the delta count is then used).
        self.reported_usage: Usage | None = None
        self.generation: Generation | None = None

    def __aiter__(self) -> TokenStream:
        return self

    async def __anext__(self) -> TokenDelta:
        import trio

        try:
            delta = await self._deltas.__anext__()
        except StopAsyncIteration:
            self._finish()
            raise
        if delta.text:
            if self.time_to_first_token is None:
                self.time_to_first_token = trio.current_time() - self.started
            self.parts.append(delta.text)
        if delta.finish_reason is not None:
            self.finish_reason = delta.finish_reason
        return delta

    async def aclose(self) -> None:
        """Finalize the delta iterator now (an async generator left unfinished would be
        finalized later, outside the provider's resources); safe to call twice."""
        import trio

        close = getattr(self._deltas, "aclose", None)
        if close is not None:
            with trio.CancelScope(shield=True):
                await close()

    def _finish(self) -> None:
        if self.generation is not None:
            return
        usage = self.reported_usage or Usage(0, len(self.parts), estimated=True)
        self.generation = Generation("".join(self.parts), usage, self.finish_reason, self.model)


class LLMProvider(abc.ABC):
    """Generates text from chat messages, streamed. Subclasses implement :meth:`stream`.

    ``open``/``aclose`` bracket use (load a model, open an HTTP client); :meth:`stream`
    opens lazily when they were not called. :meth:`generate` is the whole-text form.

    Example (a provider that echoes the prompt a word at a time)::

        >>> import trio
        >>> from contextlib import asynccontextmanager
        >>> class Echo(LLMProvider):
        ...     PLUGIN_NAME = "echo"
        ...     model = "echo"
        ...     @asynccontextmanager
        ...     async def stream(self, messages, options=None):
        ...         async def deltas():
        ...             for word in messages[-1].content.split():
        ...                 yield TokenDelta(word + " ")
        ...         yield TokenStream(lambda s: deltas(), started=trio.current_time())
        >>> trio.run(Echo().generate, [ChatMessage("user", "hello there")])
        Generation(text='hello there ', usage=Usage(prompt_tokens=0, completion_tokens=2, estimated=True), finish_reason=None, model=None)
    """

    PLUGIN_NAME: ClassVar[str] = ""
    model: str

    async def open(self) -> None:
        """Acquire the model or client."""

    async def aclose(self) -> None:
        """Release it."""

    @abc.abstractmethod
    def stream(
        self, messages: Sequence[ChatMessage], options: GenerationOptions | None = None
    ) -> AbstractAsyncContextManager[TokenStream]:
        """Start a generation; the context yields its deltas, leaving it ends the generation."""

    async def generate(
        self, messages: Sequence[ChatMessage], options: GenerationOptions | None = None
    ) -> Generation:
        """The whole text of a generation (streamed underneath, so timeouts still apply)."""
        async with self.stream(messages, options) as tokens:
            async for _ in tokens:
                pass
        assert tokens.generation is not None
        return tokens.generation


#: The ``llm_provider`` capability kind; its hook spec is in :mod:`.hookspecs`.
LLM_PROVIDER = CapabilityKind("llm_provider", LLMProvider, hookspecs.haive_register_llm_providers)


def _builtin_providers() -> dict[str, type[LLMProvider]]:
    from .llm_local import TransformersChatProvider
    from .llm_openai import OpenAIChatProvider

    return {cls.PLUGIN_NAME: cls for cls in (OpenAIChatProvider, TransformersChatProvider)}


def resolve_llm_provider(
    provider: str | LLMProvider | None = None, *, url: str | None = None, **options: Any
) -> LLMProvider:
    """The LLM provider meant by ``provider`` / ``url``.

    A provider object is used as is; a name is looked up in the plugin registry (kind
    ``llm_provider``); with neither, ``url`` means ``"openai"``.

    Example::

        >>> resolve_llm_provider(url="http://127.0.0.1:9/v1", model="m").PLUGIN_NAME
        'openai'
        >>> resolve_llm_provider("gpt-in-a-box")
        Traceback (most recent call last):
        ...
        haive.dataflow.errors.UnknownPluginError: no llm_provider named 'gpt-in-a-box' is installed. ...
    """
    if isinstance(provider, LLMProvider):
        if url is not None or options:
            raise ConfigError("give either a provider object or url=/options, not both")
        return provider
    if provider is None:
        if url is None:
            raise ConfigError(
                "an LLM needs provider= (a name such as 'openai' or 'transformers', or an "
                "LLMProvider) or url= of an OpenAI-compatible server"
            )
        provider = "openai"
    if not isinstance(provider, str):
        raise ConfigError(invalid("LLM", "provider", provider, "a name or an LLMProvider"))
    cls = _provider_class(provider)
    if url is not None:
        options["url"] = url
    try:
        instance = cls(**options)
    except TypeError as exc:
        raise ConfigError(
            f"llm provider {provider!r} does not accept these options: {exc}"
        ) from exc
    return instance


def _provider_class(name: str) -> type[LLMProvider]:
    from haive.dataflow.plugins import get_registry

    try:
        return get_registry().get(LLM_PROVIDER, name)
    except UnknownPluginError:
        # This module's own providers work even when the plugin's entry point is disabled.
        builtins = _builtin_providers()
        if name in builtins:
            return builtins[name]
        raise
