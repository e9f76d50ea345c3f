"""A local transformers model as an LLM provider, streamed token by token.

``model.generate`` is blocking; it runs in the core's :class:`~haive.dataflow.runtime.bridge.
ThreadBridge` (one thread per provider: generations of one model run one after another, as
they would on the model anyway). A streamer inside ``generate`` decodes each new token and
hands the new text to trio through a bounded channel, so a consumer that does not read holds
the model back after ``buffer_size`` deltas instead of piling text up. Leaving the stream
sets a stop flag that ``generate``'s stopping criteria read before the next token.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, ClassVar

import trio

from haive.dataflow.errors import ConfigError
from haive.dataflow.runtime.bridge import ThreadBridge, open_thread_bridge
from haive.dataflow.runtime.validation import POSITIVE_INT, invalid

from .llm_providers import GenerationOptions, LLMProvider, TokenStream
from .llm_records import ChatMessage, LLMError, TokenDelta, Usage


class _Stopped(Exception):
    """Raised in the streamer to end ``generate`` once the consumer has left."""


class _Streamer:
    """transformers' streamer protocol (``put(token_ids)``, ``end()``): incremental decoding.

    The text of all generated tokens is decoded each time and the new suffix sent, unless it
    ends in an incomplete UTF-8 sequence (then it waits for the next token).
    """

    def __init__(
        self, tokenizer: Any, send: trio.MemorySendChannel[TokenDelta], token: Any
    ) -> None:
        self.tokenizer = tokenizer
        self.send = send
        self.trio_token = token
        self.prompt_seen = False
        self.ids: list[int] = []
        self.sent = 0

    def put(self, value: Any) -> None:
        if not self.prompt_seen:  # the first call carries the prompt
            self.prompt_seen = True
            return
        self.ids.extend(int(i) for i in value.reshape(-1).tolist())
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return
        self._deliver(text[self.sent :])
        self.sent = len(text)

    def end(self) -> None:
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if len(text) > self.sent:
            self._deliver(text[self.sent :])
            self.sent = len(text)

    def _deliver(self, text: str) -> None:
        if not text:
            return
        try:
            trio.from_thread.run(self.send.send, TokenDelta(text), trio_token=self.trio_token)
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.RunFinishedError):
            raise _Stopped from None


class TransformersChatProvider(LLMProvider):
    """A local transformers causal LM (a folder with its tokenizer and chat template).

    ``model`` is the folder; ``threads`` sets torch's intra-op threads in the generation
    thread (default 1: on shared cores more threads are slower); ``buffer_size`` bounds the
    deltas waiting for the consumer. Sampling follows the model's generation config unless
    ``temperature`` is given (0 means greedy).

    Example::

        >>> TransformersChatProvider(model="/nonexistent")
        Traceback (most recent call last):
        ...
        haive.dataflow.errors.ConfigError: TransformersChatProvider(model='/nonexistent'): model must be a local model folder, got '/nonexistent'
    """

    PLUGIN_NAME: ClassVar[str] = "transformers"

    def __init__(
        self,
        model: str | Path,
        *,
        device: str = "cpu",
        threads: int | None = 1,
        buffer_size: int = 64,
    ) -> None:
        owner = type(self).__name__
        if not isinstance(model, str | Path) or not Path(model).is_dir():
            raise ConfigError(invalid(owner, "model", str(model), "a local model folder"))
        self.model = str(model)
        self.device = device
        self.threads = POSITIVE_INT.optional().check(owner, "threads", threads)
        self.buffer_size = POSITIVE_INT.check(owner, "buffer_size", buffer_size)
        self._stack: contextlib.AsyncExitStack | None = None
        self._bridge: ThreadBridge | None = None
        self._model: Any = None
        self._tokenizer: Any = None
        #: Deltas waiting for the consumer now (the bound is buffer_size), for tests.
        self.waiting: Any = None

    def _load(self) -> tuple[Any, Any]:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        tokenizer = AutoTokenizer.from_pretrained(self.model, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(self.model, local_files_only=True)
        model.to(self.device).eval()
        return model, tokenizer

    async def open(self) -> None:
        if self._bridge is not None:
            return
        stack = contextlib.AsyncExitStack()
        self._bridge = await stack.enter_async_context(open_thread_bridge(name="transformers"))
        self._stack = stack
        self._model, self._tokenizer = await self._bridge.run(self._load)

    async def aclose(self) -> None:
        stack, self._stack, self._bridge = self._stack, None, None
        if stack is not None:
            with trio.CancelScope(shield=True):
                await stack.aclose()

    def _generate(
        self,
        messages: Sequence[ChatMessage],
        options: GenerationOptions | None,
        streamer: _Streamer,
        stop: threading.Event,
    ) -> tuple[int, int, str]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        class StopFlag(StoppingCriteria):  # type: ignore[misc]
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> bool:
                return stop.is_set()

        inputs = self._tokenizer.apply_chat_template(
            [m.as_dict() for m in messages],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        ).to(self.device)
        prompt_tokens = int(inputs["input_ids"].shape[1])
        kwargs: dict[str, Any] = {"streamer": streamer}
        kwargs["stopping_criteria"] = StoppingCriteriaList([StopFlag()])
        if options is not None:
            if options.max_tokens is not None:
                kwargs["max_new_tokens"] = options.max_tokens
            if options.temperature is not None:
                kwargs["do_sample"] = options.temperature > 0
                if options.temperature > 0:
                    kwargs["temperature"] = options.temperature
            if options.stop:
                kwargs["stop_strings"] = list(options.stop)
                kwargs["tokenizer"] = self._tokenizer
        try:
            with torch.inference_mode():
                output = self._model.generate(**inputs, **kwargs)
        except _Stopped:
            return prompt_tokens, len(streamer.ids), "stopped"
        completion = int(output.shape[1]) - prompt_tokens
        maximum = kwargs.get("max_new_tokens")
        finish = "length" if maximum is not None and completion >= maximum else "stop"
        return prompt_tokens, completion, finish

    @asynccontextmanager
    async def stream(
        self, messages: Sequence[ChatMessage], options: GenerationOptions | None = None
    ) -> AsyncIterator[TokenStream]:
        await self.open()
        bridge = self._bridge
        assert bridge is not None
        send, receive = trio.open_memory_channel[TokenDelta](self.buffer_size)
        self.waiting = receive
        stop = threading.Event()
        streamer = _Streamer(self._tokenizer, send, trio.lowlevel.current_trio_token())
        outcome: dict[str, Any] = {}

        async def generate() -> None:
            async with send:
                try:
                    outcome["result"] = await bridge.run(
                        self._generate, messages, options, streamer, stop
                    )
                except Exception as exc:
                    outcome["error"] = exc

        async def deltas(tokens: TokenStream) -> AsyncIterator[TokenDelta]:
            async for delta in receive:
                yield delta
            if "error" in outcome:
                raise LLMError(f"local model {self.model} failed: {outcome['error']!r}")
            prompt, completion, finish = outcome["result"]
            tokens.reported_usage = Usage(prompt, completion)
            tokens.finish_reason = finish

        async with trio.open_nursery() as nursery:
            nursery.start_soon(generate)
            tokens = TokenStream(deltas, started=trio.current_time(), model=self.model)
            try:
                yield tokens
            finally:
                # Leaving early: the model stops before its next token, and a streamer
                # waiting for room in the channel gets BrokenResourceError.
                stop.set()
                await tokens.aclose()
                await receive.aclose()
