"""ChunkProcessor: sizes, overlaps, word boundaries, offsets and ids."""

from __future__ import annotations

import itertools
import re

import pytest
from haive_contrib_ai.chunking import ChunkProcessor, chunk_spans_chars, chunk_spans_tokens
from haive_contrib_ai.records import Chunk, Document
from haive_contrib_ai.tokenization import ModelTokenizer, WordTokenizer
from hypothesis import given, settings
from hypothesis import strategies as st

from haive.dataflow import ConfigError, StreamingPipeline
from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.builtins.sources import IterableSource
from haive.dataflow.runtime.nodes import NodeContext

TEXT = (
    "Trio is a library for async concurrency and I/O. It makes structured concurrency the "
    "default, so every task has an owner.\n\nNurseries own tasks. A nursery does not exit "
    "until all of its children are done, and an error in one child cancels the others.\n\n"
    "Cancellation is level-triggered and scoped: a cancel scope covers a block of code, and "
    "timeouts are just cancel scopes with a deadline. Memory channels connect tasks and "
    "bound how much may be buffered between them."
)


def words_whole(text: str, start: int, end: int) -> bool:
    """Neither end of text[start:end] falls inside a word."""
    inside_start = start > 0 and not text[start - 1].isspace() and not text[start].isspace()
    inside_end = end < len(text) and not text[end - 1].isspace() and not text[end].isspace()
    return not inside_start and not inside_end


async def chunks_of(processor: ChunkProcessor, *items) -> list[Chunk]:
    return await processor.process_batch(list(items), NodeContext(processor.name))


@pytest.mark.parametrize("size,overlap", [(80, 0), (80, 20), (120, 40), (200, 60), (1000, 200)])
async def test_char_chunks_respect_size_words_and_offsets(size, overlap):
    doc = Document("trio.md", TEXT, "/docs/trio.md", {"format": "markdown"})
    chunks = await chunks_of(ChunkProcessor(chunk_size=size, overlap=overlap), doc)
    assert chunks, "a non-empty document gives chunks"
    for index, chunk in enumerate(chunks):
        assert chunk.id == f"trio.md:{index}" and chunk.doc_id == "trio.md" and chunk.index == index
        assert TEXT[chunk.start : chunk.end] == chunk.text
        assert len(chunk.text) <= size
        assert chunk.text == chunk.text.strip()
        assert words_whole(TEXT, chunk.start, chunk.end), chunk.text
        assert chunk.metadata == {"format": "markdown", "source": "/docs/trio.md"}
    for before, after in itertools.pairwise(chunks):
        assert after.start > before.start
        assert before.end - after.start <= overlap  # shared characters, at most `overlap`
    # Every word of the document is in some chunk.
    covered = set()
    for chunk in chunks:
        covered.update(range(chunk.start, chunk.end))
    assert all(i in covered for i, ch in enumerate(TEXT) if not ch.isspace())


async def test_chunks_prefer_paragraph_then_sentence_ends():
    chunks = await chunks_of(ChunkProcessor(chunk_size=200, overlap=0), Document("d", TEXT))
    assert chunks[0].text.endswith("every task has an owner.")  # the paragraph break
    assert all(re.search(r"[.!?]$", c.text) for c in chunks[:-1])
    assert chunks[-1].text.endswith("between them.")


async def test_overlap_repeats_the_end_of_the_previous_chunk():
    chunks = await chunks_of(ChunkProcessor(chunk_size=100, overlap=40), Document("d", TEXT))
    shared = [TEXT[b.start : a.end] for a, b in itertools.pairwise(chunks) if b.start < a.end]
    assert shared, "with overlap some chunks share text"
    assert all(0 < len(s) <= 40 for s in shared)


async def test_a_word_longer_than_a_chunk_is_cut_only_then():
    text = "short " + "x" * 50 + " tail words here"
    chunks = await chunks_of(ChunkProcessor(chunk_size=20, overlap=0), Document("d", text))
    assert all(len(c.text) <= 20 for c in chunks)
    assert chunks[0].text == "short"
    assert [c.text for c in chunks[1:3]] == ["x" * 20, "x" * 20]  # cut: no space to end at
    run = range(6, 56)  # where the long word lies
    for chunk in chunks:
        if not words_whole(text, chunk.start, chunk.end):
            assert chunk.start in run or chunk.end in run
    assert "".join(c.text for c in chunks).replace(" ", "") == text.replace(" ", "")


@settings(max_examples=400, deadline=None)
@given(
    st.text(alphabet=st.sampled_from("ab cd.\n!é"), max_size=400),
    st.integers(1, 60),
    st.data(),
)
def test_char_chunking_properties(text, size, data):
    overlap = data.draw(st.integers(0, size - 1))
    spans = chunk_spans_chars(text, size, overlap)
    covered = set()
    previous = None
    for start, end in spans:
        assert 0 <= start < end <= len(text)
        assert end - start <= size
        assert not text[start].isspace() and not text[end - 1].isspace()
        covered.update(range(start, end))
        if previous is not None:
            assert start > previous[0] and end > previous[1]
            assert previous[1] - start <= overlap
        previous = (start, end)
    assert all(i in covered for i, ch in enumerate(text) if not ch.isspace())


@settings(max_examples=400, deadline=None)
@given(
    st.text(alphabet=st.sampled_from("ab cd.\n!,"), max_size=300),
    st.integers(1, 30),
    st.data(),
)
def test_token_chunking_properties(text, size, data):
    overlap = data.draw(st.integers(0, size - 1))
    offsets = WordTokenizer().tokenize(text).offsets
    spans = chunk_spans_tokens(text, offsets, size, overlap)
    previous = None
    for start, end, t0, t1 in spans:
        assert 0 < t1 - t0 <= size
        assert (start, end) == (offsets[t0][0], offsets[t1 - 1][1])
        if previous is not None:
            assert t0 > previous[0] and t1 > previous[1]
            assert previous[1] - t0 <= overlap
        previous = (t0, t1)
    assert (spans[-1][3] if spans else 0) == len(offsets)


async def test_token_chunks_with_the_model_tokenizer_keep_words_whole():
    tokenizer = ModelTokenizer()
    processor = ChunkProcessor(
        chunk_size=24, overlap=6, unit="tokens", tokenizer="all-MiniLM-L6-v2"
    )
    chunks = await chunks_of(processor, Document("d", TEXT))
    assert len(chunks) > 3
    for chunk in chunks:
        assert TEXT[chunk.start : chunk.end] == chunk.text
        assert len(tokenizer.tokenize(chunk.text)) <= 24
        assert words_whole(TEXT, chunk.start, chunk.end), chunk.text
        assert chunk.metadata["token_end"] - chunk.metadata["token_start"] <= 24
    # Word-piece words like "Cancellation" -> "cancel", "##lation" are never split.
    assert any("Cancellation" in c.text for c in chunks)


async def test_token_chunks_with_words():
    processor = ChunkProcessor(chunk_size=10, overlap=3, unit="tokens")
    chunks = await chunks_of(processor, Document("d", TEXT))
    for chunk in chunks:
        assert len(WordTokenizer().tokenize(chunk.text)) <= 10
    assert any(b.start < a.end for a, b in itertools.pairwise(chunks))


async def test_inputs_other_than_documents_and_pdf_pages():
    processor = ChunkProcessor(chunk_size=30, overlap=0)
    [from_str] = await chunks_of(processor, "a plain string")
    again = await chunks_of(processor, "a plain string")
    assert from_str.doc_id.startswith("sha1-") and again[0].id == from_str.id  # stable ids
    chunks = await chunks_of(processor, {"id": "m1", "text": "mapping text", "lang": "en"})
    assert chunks[0].id == "m1:0" and chunks[0].metadata == {"lang": "en"}

    page_text = "page one text here.\n\npage two text here."
    doc = Document("p.pdf", page_text, metadata={"page_starts": [0, 21]})
    chunks = await chunks_of(ChunkProcessor(chunk_size=20, overlap=0), doc)
    assert [c.metadata["page"] for c in chunks] == [1, 2]
    assert all("page_starts" not in c.metadata for c in chunks)


async def test_chunk_processor_in_a_pipeline_isolates_bad_items():
    pipeline = StreamingPipeline("chunks")
    pipeline.set_source(
        IterableSource([Document("a", "one two three"), 42, {"id": "b", "text": "four"}])
    )
    pipeline.add_node(ChunkProcessor(chunk_size=8, overlap=0))
    sink = MemorySink()
    pipeline.set_sink(sink)
    async with pipeline.run() as stream:
        results = [r async for r in stream]
    assert [c.id for c in sink.items] == ["a:0", "a:1", "b:0"]
    [bad] = [r for r in results if not r.success]
    assert bad.node == "chunk" and bad.data == 42 and "expected a str" in str(bad.error)


def test_bad_settings_are_clear():
    with pytest.raises(ConfigError, match="chunk_size must be an int >= 1"):
        ChunkProcessor(chunk_size=0)
    with pytest.raises(
        ConfigError, match=r"overlap must be an int with 0 <= overlap < chunk_size \(100\)"
    ):
        ChunkProcessor(chunk_size=100, overlap=100)
    with pytest.raises(ConfigError, match="unit must be 'chars' or 'tokens'"):
        ChunkProcessor(unit="sentences")
    with pytest.raises(ConfigError, match="tokenizer 'gpt2' is not available offline"):
        ChunkProcessor(unit="tokens", tokenizer="gpt2")
