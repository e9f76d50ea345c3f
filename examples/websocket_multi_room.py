"""The seed's "Advanced WebSocket Patterns" (multi-room WebSocket), on trio.

A MultiRoomWebSocket serves on 127.0.0.1. Client ``client-123`` connects and the server
joins it to ``market_analysis`` (members get a ``user_joined`` notice); a dashboard joins the
same room itself, and also a second room. ``stream_to_room`` then streams market data to
every member as ``stream_chunk`` messages, each with the room's sequence number.
"""

from __future__ import annotations

import os
import random

import trio

from haive.dataflow.streaming import ConnectionConfig, MultiRoomWebSocket, StreamingClient

QUICK = bool(os.environ.get("HAIVE_EXAMPLE_QUICK"))
TICKS = 5 if QUICK else 30


def get_current_price() -> float:
    return round(190 + random.uniform(-2, 2), 2)


def get_volume() -> int:
    return random.randint(1_000, 50_000)


def analyze_sentiment() -> str:
    return random.choice(["bullish", "neutral", "bearish"])


async def market_data_stream():
    """Generate real-time market data (a bounded run here, so the example ends)."""
    for _ in range(TICKS):
        yield {
            "symbol": "AAPL",
            "price": get_current_price(),
            "volume": get_volume(),
            "sentiment": analyze_sentiment(),
        }
        await trio.sleep(0.01 if QUICK else 0.1)


async def main() -> None:
    # Use multi-room WebSocket.
    room_ws = MultiRoomWebSocket(host="127.0.0.1", port=0)
    async with room_ws.serving():
        url = f"ws://127.0.0.1:{room_ws.port}/"
        analyst = StreamingClient(ConnectionConfig(url=url, client_id="client-123"))
        dashboard = StreamingClient(ConnectionConfig(url=url, client_id="dashboard"))
        received = {"client-123": 0, "dashboard": 0}
        all_in = trio.Event()

        def counter(name: str):
            def on_chunk(message: dict) -> None:
                received[name] += 1
                data = message["data"]
                print(
                    f"[{name}] #{message['seq']} {data['symbol']} {data['price']} "
                    f"vol={data['volume']} {data['sentiment']}"
                )
                if all(n == TICKS for n in received.values()):
                    all_in.set()

            return on_chunk

        analyst.on_message("stream_chunk")(counter("client-123"))
        dashboard.on_message("stream_chunk")(counter("dashboard"))
        dashboard.on_message("user_joined")(
            lambda m: print(f"[dashboard] {m['user_id']} joined {m['room']}")
        )

        async with analyst.connect(), dashboard.connect():
            await dashboard.join("market_analysis")
            await dashboard.join("alerts")  # a client may be in several rooms
            # Join analysis room (server side, for a connected client).
            await room_ws.join_room("client-123", "market_analysis")
            print("rooms:", {room: sorted(members) for room, members in room_ws.rooms.items()})
            print("client_rooms:", {c: sorted(r) for c, r in room_ws.client_rooms.items()})
            # Stream market data to room.
            sent = await room_ws.stream_to_room("market_analysis", market_data_stream())
            with trio.fail_after(10):
                await all_in.wait()
            print(f"streamed {sent} chunks to {len(room_ws.rooms['market_analysis'])} members")


if __name__ == "__main__":
    trio.run(main)
