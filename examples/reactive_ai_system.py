"""The seed's "Advanced reactive patterns" snippet (ReactiveAISystem), on trio.

One input stream is split by type. Text is tokenized (flat_map), cut into windows of 100
tokens, each window analysed as it closes, and the result shared; images are preprocessed,
batched every few seconds (buffer_time) and processed per batch, also shared. The latest of
both is combined and fanned out to three subscribers: another reactive stream, a
"database" and a "UI".

The seed's 5 s image batches are scaled down so the example runs in about a second
(``HAIVE_EXAMPLE_QUICK=1``: shorter still).
"""

from __future__ import annotations

import os
from collections import Counter
from datetime import datetime

import trio

from haive.dataflow.streaming import Observable, ReactiveStream, Window

QUICK = os.environ.get("HAIVE_EXAMPLE_QUICK") == "1"
SECONDS = 0.6 if QUICK else 1.5
IMAGE_BATCH = 0.2  # the seed's buffer_time(5000), scaled

WORDS = [
    "streams",
    "flow",
    "through",
    "windows",
    "while",
    "models",
    "watch",
    "every",
    "token",
    "pass",
    "by",
]


def tokenize(content: str) -> list[str]:
    return content.lower().split()


async def analyze_text(tokens: Window[str]) -> dict:
    words = await tokens.to_list()  # the window's tokens, once it has closed
    return {"tokens": len(words), "top": Counter(words).most_common(1)[0][0]}


def preprocess_image(data: bytes) -> int:
    return len(data)  # e.g. decode and resize


async def batch_process_images(batch: list[int]) -> dict:
    await trio.sleep(0.001)  # e.g. one model call per batch
    return {"images": len(batch), "mean_size": sum(batch) // len(batch)}


class ReactiveAISystem:
    """Reactive AI system with complex stream processing."""

    def __init__(self) -> None:
        self.input_stream: ReactiveStream[dict] = ReactiveStream(name="input")
        self.processing_streams: dict[str, Observable] = {}
        self.output_stream: ReactiveStream[dict] = ReactiveStream(name="output")
        self.database: list[dict] = []
        self.ui_updates = 0

    def create_processing_pipeline(self) -> None:
        """Create complex reactive pipeline."""
        # Split stream by data type
        text_stream = self.input_stream.filter(lambda x: x["type"] == "text")
        image_stream = self.input_stream.filter(lambda x: x["type"] == "image")
        # Process text stream
        processed_text = (
            text_stream.flat_map(lambda x: tokenize(x["content"]))
            .window(100)  # process in windows of 100 tokens
            .flat_map(analyze_text)
            .share()  # share stream among subscribers
        )
        # Process image stream
        processed_images = (
            image_stream.map(lambda x: preprocess_image(x["data"]))
            .buffer_time(IMAGE_BATCH)
            .flat_map(batch_process_images)
            .share()
        )
        self.processing_streams = {"text": processed_text, "images": processed_images}
        # Combine streams
        combined = Observable.combine_latest(
            processed_text,
            processed_images,
            lambda text, image: {
                "text_analysis": text,
                "image_analysis": image,
                "timestamp": datetime.now(),
            },
        )
        # Output to multiple destinations (they start when the input stream opens)
        combined.subscribe(self.output_stream.emit)
        combined.subscribe(self.persist_to_database)
        combined.subscribe(self.update_ui)

    async def persist_to_database(self, record: dict) -> None:
        await trio.sleep(0.001)
        self.database.append(record)

    def update_ui(self, record: dict) -> None:
        self.ui_updates += 1


async def feed(system: ReactiveAISystem) -> None:
    deadline = trio.current_time() + SECONDS
    n = 0
    while trio.current_time() < deadline:
        n += 1
        sentence = " ".join(WORDS[(n + i) % len(WORDS)] for i in range(12))
        await system.input_stream.emit({"type": "text", "content": sentence})
        if n % 3 == 0:
            await system.input_stream.emit({"type": "image", "data": b"\x00" * (1000 + n)})
        await trio.sleep(0.005)


async def main() -> None:
    system = ReactiveAISystem()
    system.create_processing_pipeline()
    outputs: list[dict] = []
    system.output_stream.subscribe(outputs.append)
    async with system.output_stream, system.input_stream:
        await feed(system)
    print(f"{system.input_stream.emitted} inputs -> {len(outputs)} combined outputs")
    last = outputs[-1]
    print(f"latest: text {last['text_analysis']}, images {last['image_analysis']}")
    print(f"database rows: {len(system.database)}, UI updates: {system.ui_updates}")
    assert outputs and len(system.database) == len(outputs) == system.ui_updates


if __name__ == "__main__":
    trio.run(main)
