"""The seed's "Real-Time Data Processing Pipelines" snippet, on trio.

An AIStreamingPipeline with processors, a source and a sink; results carry success, data and
error; metrics (``StreamMetrics``, from haive-plugin-observability) are emitted every 100
processed items. The document/embedding processors of the
seed live in haive-contrib-ai; here plain processors stand in so the example needs nothing else.
"""

from __future__ import annotations

import os

import trio

from haive.dataflow.streaming import (
    DataSource,
    JsonLinesSink,
    StreamingPipeline,
    StreamMetrics,
    StreamProcessor,
    StreamSink,
)


class ChunkProcessor(StreamProcessor):
    def __init__(self, chunk_size: int, overlap: int) -> None:
        super().__init__("chunker")
        self.chunk_size, self.overlap = chunk_size, overlap

    def process(self, doc: dict) -> dict:
        text, step = doc["text"], self.chunk_size - self.overlap
        chunks = [text[i : i + self.chunk_size] for i in range(0, max(len(text), 1), step)]
        return {**doc, "chunks": chunks}


class ValidateProcessor(StreamProcessor):
    def process(self, doc: dict) -> dict:
        if not doc["text"].strip():
            raise ValueError(f"document {doc['id']} is empty")
        return doc


class DocumentSource(DataSource):
    def __init__(self, count: int) -> None:
        self.count = count

    async def batches(self, chunk_size: int):
        docs = [
            {"id": n, "text": "" if n % 50 == 7 else f"document {n} " * 40}
            for n in range(self.count)
        ]
        for start in range(0, len(docs), chunk_size):
            yield docs[start : start + chunk_size]


class AIStreamingPipeline:
    """Advanced AI data streaming pipeline."""

    def __init__(self, name: str) -> None:
        self.pipeline = StreamingPipeline(name)
        self.processors: list[StreamProcessor] = []
        self.metrics = StreamMetrics()
        self.emitted: list[dict] = []
        self.errors: list[BaseException] = []

    def add_processor(self, processor: StreamProcessor) -> None:
        self.processors.append(processor)
        self.pipeline.add_node(processor)

    async def process_stream(self, source: DataSource, sink: StreamSink) -> None:
        self.pipeline.set_source(source)
        self.pipeline.set_sink(sink)  # successful items are written to the sink by the pipeline
        self.pipeline.add_monitor(self.metrics)
        async with self.pipeline.run() as stream:
            processed_count = 0
            error_count = 0
            async for result in stream:
                if result.success:
                    processed_count += 1
                else:
                    error_count += 1
                    await self.handle_error(result.error)
                if processed_count and processed_count % 100 == 0 and result.success:
                    await self.emit_metrics(
                        {
                            "processed": processed_count,
                            "errors": error_count,
                            "throughput": float(self.metrics.throughput),
                            "latency": self.metrics.avg_latency,
                        }
                    )

    async def handle_error(self, error: BaseException | None) -> None:
        assert error is not None
        self.errors.append(error)

    async def emit_metrics(self, metrics: dict) -> None:
        self.emitted.append(metrics)
        print(
            f"processed={metrics['processed']} errors={metrics['errors']} throughput={metrics['throughput']:,.0f}/s"
        )


async def main() -> None:
    count = 500 if os.environ.get("HAIVE_EXAMPLE_QUICK") else 5_000
    pipeline = AIStreamingPipeline("document-processor")
    pipeline.add_processor(ValidateProcessor("validate"))
    pipeline.add_processor(ChunkProcessor(chunk_size=100, overlap=20))
    out = trio.Path(os.environ.get("TMPDIR", "/tmp")) / "haive-example-chunks.jsonl"
    await pipeline.process_stream(DocumentSource(count), JsonLinesSink(str(out), mode="wb"))
    lines = len((await out.read_text()).splitlines())
    print(
        f"{lines} documents written to {out}, {len(pipeline.errors)} rejected: {pipeline.errors[0]}"
    )
    assert lines + len(pipeline.errors) == count
    await out.unlink()


if __name__ == "__main__":
    trio.run(main)
