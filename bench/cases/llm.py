"""LLM token streams: pipeline overhead on time to first token and tokens/s, in one run.

``transformers serve`` serves a tiny random GPT-2 made on the spot (contrib/ai's
``llm_tiny``) on this machine's CPU; every request asks for ``TOKENS`` tokens, one request
at a time, and the three clients alternate request by request (the machine is shared):

* ``llm.raw.*``: httpx alone, ``client.stream("POST", ...)``, the ``data:`` lines split and
  decoded with orjson by hand, no provider, no pipeline: the baseline.
* ``llm.provider.*``: ``OpenAIChatProvider.stream`` (httpx-sse, retries, timeouts).
* ``llm.pipeline.*``: a StreamingPipeline (MemorySource -> LLMNode in stream mode -> a sink
  timing what reaches it): the event is pushed into the source, the time to first token is
  when the first ``LLMChunk`` reaches the sink, tokens/s the completion tokens over the time
  until the ``LLMResponse`` reaches it.

Figures: median time to first token (ms) and median tokens/s of each; the ratios
``llm.pipeline.tokens_per_s.vs_raw`` and ``llm.pipeline.ttft.vs_raw`` (ours over raw: > 1 means
the pipeline takes longer to the first token), and ``llm.pipeline.ttft_overhead_ms``.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from typing import Any

import orjson
import trio

from bench.recorder import Recorder

DESCRIPTION = "LLM streaming: pipeline vs provider vs raw httpx SSE against transformers serve"

TOKENS = 200


BODY = {"role": "user", "content": "how is the market?"}


async def _raw(client: Any, url: str, model: str) -> tuple[float, float]:
    body = {
        "model": model,
        "messages": [BODY],
        "stream": True,
        "max_tokens": TOKENS,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first = None
    completion = 0
    async with client.stream("POST", url + "/chat/completions", json=body) as response:
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = orjson.loads(line[6:])
            if chunk.get("usage"):
                completion = chunk["usage"]["completion_tokens"]
            for choice in chunk["choices"]:
                if choice["delta"].get("content") and first is None:
                    first = time.perf_counter()
    ended = time.perf_counter()
    assert first is not None and completion == TOKENS
    return first - started, completion / (ended - started)


async def _provider(provider: Any) -> tuple[float, float]:
    from haive_contrib_ai.llm_providers import GenerationOptions
    from haive_contrib_ai.llm_records import ChatMessage

    started = time.perf_counter()
    first = None
    async with provider.stream(
        [ChatMessage(**BODY)], GenerationOptions(max_tokens=TOKENS)
    ) as tokens:
        async for delta in tokens:
            if delta.text and first is None:
                first = time.perf_counter()
    ended = time.perf_counter()
    assert first is not None and tokens.generation is not None
    return first - started, tokens.generation.usage.completion_tokens / (ended - started)


async def _alternate(url: str, model: str, rounds: int) -> dict[str, list[tuple[float, float]]]:
    """The three clients, one request at a time each in turn; the pipeline keeps running."""
    import httpx
    from haive_contrib_ai.llm_node import LLMChunk, LLMNode, LLMResponse
    from haive_contrib_ai.llm_openai import OpenAIChatProvider

    from haive.dataflow import StreamingPipeline
    from haive.dataflow.builtins.sources import MemorySource
    from haive.dataflow.io.sinks import StreamSink

    samples: dict[str, list[tuple[float, float]]] = {"raw": [], "provider": [], "pipeline": []}
    state: dict[str, Any] = {}

    class Timing(StreamSink):
        async def write_batch(self, items: list[Any]) -> None:
            now = time.perf_counter()
            for item in items:
                if isinstance(item, LLMChunk) and "first" not in state:
                    state["first"] = now
                elif isinstance(item, LLMResponse):
                    samples["pipeline"].append(
                        (
                            state["first"] - state["started"],
                            item.usage.completion_tokens / (now - state["started"]),
                        )
                    )
                    state["done"].set()
            await trio.lowlevel.checkpoint()

    source = MemorySource(buffer_size=16)
    node = LLMNode(prompt="{q}", url=url, model=model, max_tokens=TOKENS, concurrency=1)
    await node.open()  # the HTTP client exists before anything is timed, as for the others
    pipeline = StreamingPipeline("bench-llm")
    pipeline.set_source(source)
    pipeline.add_node(node)
    pipeline.set_sink(Timing())
    provider = OpenAIChatProvider(url=url, model=model)
    await provider.open()
    async with httpx.AsyncClient(timeout=None) as client, trio.open_nursery() as nursery:
        nursery.start_soon(pipeline.execute)
        for n in range(rounds + 1):
            raw = await _raw(client, url, model)
            ours = await _provider(provider)
            state.clear()
            state["done"] = trio.Event()
            state["started"] = time.perf_counter()
            await source.push({"q": BODY["content"]})
            await state["done"].wait()
            if n == 0:  # warm-up round: connections opened, server caches filled
                samples["pipeline"].clear()
                continue
            samples["raw"].append(raw)
            samples["provider"].append(ours)
        source.close()
    await provider.aclose()
    return samples


def run(rec: Recorder) -> None:
    try:
        import haive_contrib_ai.llm_tiny as tiny
        import transformers.cli.serve  # noqa: F401 - needs transformers[serving]
    except ImportError as exc:
        print(f"  haive-contrib-ai with transformers[serving] is not installed: llm skipped ({exc})")
        return
    rounds = 5 if rec.quick else 20
    with tempfile.TemporaryDirectory() as folder:
        model = str(tiny.make_tiny_chat_model(folder))
        with tiny.TransformersServer(model) as server:
            samples = trio.run(_alternate, server.url, model, rounds)
    raw, provider, pipeline = samples["raw"], samples["provider"], samples["pipeline"]

    def median(samples: list[tuple[float, float]], i: int) -> float:
        return statistics.median(s[i] for s in samples)

    raw_ttft = rec.figure("llm.raw.ttft_ms", median(raw, 0) * 1e3, "ms", "httpx alone")
    raw_tps = rec.figure("llm.raw.tokens_per_s", median(raw, 1), "tokens/s", f"{TOKENS} tokens")
    rec.figure("llm.provider.ttft_ms", median(provider, 0) * 1e3, "ms", "OpenAIChatProvider")
    provider_tps = rec.figure("llm.provider.tokens_per_s", median(provider, 1), "tokens/s")
    ttft = rec.figure("llm.pipeline.ttft_ms", median(pipeline, 0) * 1e3, "ms",
                      "source push -> first LLMChunk at the sink")
    tps = rec.figure("llm.pipeline.tokens_per_s", median(pipeline, 1), "tokens/s",
                     "source push -> LLMResponse at the sink")
    rec.figure("llm.pipeline.ttft_overhead_ms", ttft - raw_ttft, "ms", "pipeline minus raw")
    rec.ratio("llm.pipeline.ttft.vs_raw", ttft, raw_ttft, "time: lower is better")
    rec.ratio("llm.pipeline.tokens_per_s.vs_raw", tps, raw_tps)
    rec.ratio("llm.provider.tokens_per_s.vs_raw", provider_tps, raw_tps)
