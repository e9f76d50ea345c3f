"""The seed's "Quick Start: WebSocket Streaming", on trio.

A WebSocketManager plays the agent backend on 127.0.0.1: a ``start_stream`` request makes it
stream ``agent_response`` chunks and ``analysis_update`` messages back. A StreamingClient
(reconnecting, heartbeat, compression) routes them to its ``on_message`` handlers; high
confidence recommendations trigger an action, and every response is forwarded to a "ui"
room that a second client (the UI) watches.
"""

from __future__ import annotations

import os

import trio

from haive.dataflow.streaming import ConnectionConfig, StreamingClient, WebSocketManager

QUICK = bool(os.environ.get("HAIVE_EXAMPLE_QUICK"))
CHUNKS = 5 if QUICK else 20


async def main() -> None:
    # Initialize WebSocket manager (the backend the client talks to).
    ws_manager = WebSocketManager(host="127.0.0.1", port=0)
    async with trio.open_nursery() as nursery, ws_manager.serving():

        @ws_manager.on_message("start_stream")
        async def start_stream(client, request):
            nursery.start_soon(stream_agent, client, request)
            return {"type": "stream_started", "agent_id": request["agent_id"]}

        async def stream_agent(client, request) -> None:
            chunk_size = request["stream_config"]["chunk_size"]
            for n in range(CHUNKS):
                client.send(
                    {
                        "type": "agent_response",
                        "agent_id": request["agent_id"],
                        "content": f"chunk {n} of {request['data_source']} ({chunk_size} ticks)",
                    }
                )
                client.send(
                    {
                        "type": "analysis_update",
                        "confidence": 0.5 + 0.1 * n,
                        "recommendation": f"rebalance #{n}",
                    }
                )
                await trio.sleep(0.01)
            client.send({"type": "stream_end"})

        # Configure connection.
        config = ConnectionConfig(
            url=f"ws://127.0.0.1:{ws_manager.port}/ws",
            reconnect_interval=5,
            max_reconnect_attempts=10,
            heartbeat_interval=30,
            compression="gzip",  # permessage-deflate, negotiated with the server
        )
        # Create streaming client.
        client = StreamingClient(config)
        ui = StreamingClient(ConnectionConfig(url=config.url, heartbeat_interval=30))
        finished = trio.Event()
        actions: list[str] = []
        ui_updates: list[dict] = []

        async def broadcast_to_ui(data: dict) -> None:
            await client.publish("ui", {"type": "ui_update", "content": data["content"]})

        async def trigger_action(recommendation: str) -> None:
            actions.append(recommendation)
            print(f"  -> acting on: {recommendation}")

        # Define message handlers.
        @client.on_message("agent_response")
        async def handle_agent_response(data):
            """Handle streaming agent responses."""
            print(f"Agent: {data['agent_id']}")
            print(f"Response: {data['content']}")
            # Stream to UI in real-time.
            await broadcast_to_ui(data)

        @client.on_message("analysis_update")
        async def handle_analysis(data):
            """Handle real-time analysis updates."""
            if data["confidence"] > 0.8:
                await trigger_action(data["recommendation"])

        client.on_message("stream_end")(lambda data: finished.set())
        ui_done = trio.Event()

        @ui.on_message("ui_update")
        def show(update):
            ui_updates.append(update)
            if len(ui_updates) == CHUNKS:
                ui_done.set()

        # Connect and start streaming.
        async with client.connect(), ui.connect():
            await ui.join("ui")
            await client.join("ui")
            # Send streaming request.
            await client.send_message(
                {
                    "type": "start_stream",
                    "agent_id": "analyzer-001",
                    "data_source": "market_feed",
                    "stream_config": {"chunk_size": 100, "frequency": "real-time"},
                }
            )
            with trio.fail_after(10):
                await finished.wait()
                await ui_done.wait()
            print(f"negotiated: {sorted(client.features)} + {client.extensions}")
            print(f"actions triggered: {len(actions)}; UI got {len(ui_updates)} updates")


if __name__ == "__main__":
    trio.run(main)
