"""The seed's quick start with a real model: an AI agent streams its answer to a UI.

A client sends ``start_stream``; the server (a WebSocketManager with AgentStreams) asks an
LLM node about the request and streams the tokens as ``agent_response`` frames while they
are generated, then an ``analysis_update`` with what the generation measured. A second
``start_stream`` is stopped by the client (``stop_stream``): the model stops producing.

By default the model is a tiny random GPT-2 made on the spot (its text is gibberish; it
runs offline in seconds), generated locally token by token. Point it at any
OpenAI-compatible server (OpenAI, vLLM, llama.cpp, Ollama, ``transformers serve``)::

    LLM_URL=http://127.0.0.1:11434/v1 LLM_MODEL=llama3.2 python examples/llm_agent_stream.py
    LLM_URL=https://api.openai.com/v1 LLM_MODEL=gpt-4o-mini LLM_API_KEY=sk-... python ...
"""

from __future__ import annotations

import os
import tempfile

import trio

from haive.dataflow.streaming import (
    AgentStreams,
    ConnectionConfig,
    LLMChunk,
    LLMNode,
    StreamingClient,
    WebSocketManager,
)


def make_node(folder: str) -> LLMNode:
    prompt = "You watch {data_source} for agent {agent_id}. What should we do now?"
    if os.environ.get("LLM_URL"):
        return LLMNode(
            prompt=prompt,
            url=os.environ["LLM_URL"],
            model=os.environ.get("LLM_MODEL", "gpt-4o-mini"),
            api_key=os.environ.get("LLM_API_KEY"),
            max_tokens=200,
        )
    from haive_contrib_ai.llm_tiny import make_tiny_chat_model

    model = make_tiny_chat_model(folder)
    return LLMNode(prompt=prompt, provider="transformers", model=str(model), max_tokens=300)


async def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        node = make_node(folder)
        ws_manager = WebSocketManager(host="127.0.0.1", port=0)

        async def agent(request, push):
            async def to_ui(batch):
                for item in batch:
                    if isinstance(item, LLMChunk):
                        await push(item.text)

            answer = await node.answer(request, to_ui)
            await ws_manager.send_to_client(
                request["client_id"],
                {
                    "type": "analysis_update",
                    "agent_id": request["agent_id"],
                    "tokens": answer.usage.total_tokens,
                    "time_to_first_token": round(answer.time_to_first_token or 0.0, 4),
                    "tokens_per_second": round(answer.tokens_per_second, 1),
                },
            )

        streams = AgentStreams(ws_manager, agent)
        try:
            async with ws_manager.serving(), streams.running():
                await run_client(ws_manager)
        finally:
            await node.aclose()
        print("node metrics:", node.metrics.snapshot())


async def run_client(ws_manager: WebSocketManager) -> None:
    config = ConnectionConfig(
        url=f"ws://127.0.0.1:{ws_manager.port}/ws",
        reconnect_interval=5,
        max_reconnect_attempts=10,
        heartbeat_interval=30,
        compression="gzip",
    )
    client = StreamingClient(config)
    analysed = trio.Event()
    second_started = trio.Event()
    second: list[str] = []
    first_frame: dict[str, trio.Event] = {}
    finished: dict[str, trio.Event] = {}
    text: dict[str, list[str]] = {}

    @client.on_message("stream_started")
    async def on_started(data):
        first_frame[data["stream_id"]] = trio.Event()
        finished[data["stream_id"]] = trio.Event()
        if data["agent_id"] == "analyzer-002":
            second.append(data["stream_id"])
            second_started.set()

    @client.on_message("agent_response")
    async def handle_agent_response(data):
        stream_id = data["stream_id"]
        text.setdefault(stream_id, []).append(data["content"])
        first_frame[stream_id].set()
        if data["done"]:
            print(f"Agent {data['agent_id']} [{data['reason']}]: {''.join(text[stream_id])!r}")
            finished[stream_id].set()

    @client.on_message("analysis_update")
    async def handle_analysis(data):
        print(
            f"Analysis: {data['tokens']} tokens, first token after "
            f"{data['time_to_first_token']}s, {data['tokens_per_second']} tokens/s"
        )
        analysed.set()

    async with client.connect():
        # Send streaming request.
        await client.send_message(
            {
                "type": "start_stream",
                "agent_id": "analyzer-001",
                "data_source": "market_feed",
                "stream_config": {"chunk_size": 100, "frequency": "real-time"},
            }
        )
        with trio.fail_after(120):
            await analysed.wait()
        # A second stream, stopped by the UI after its first frame: the model stops.
        await client.send_message(
            {"type": "start_stream", "agent_id": "analyzer-002", "data_source": "news"}
        )
        with trio.fail_after(60):
            await second_started.wait()
            stream_id = second[0]
            await first_frame[stream_id].wait()
            await client.send_message({"type": "stop_stream", "stream_id": stream_id})
            await finished[stream_id].wait()


if __name__ == "__main__":
    trio.run(main)
