"""Splitting documents into overlapping chunks that never cut a word where avoidable."""

from __future__ import annotations

import bisect
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

from haive.dataflow.errors import ConfigError
from haive.dataflow.runtime.nodes import Node, NodeContext, check_error_policy
from haive.dataflow.runtime.retry import RetryPolicy

from .records import Chunk, Document, id_of, text_of
from .tokenization import Tokenizer, get_tokenizer

Unit = Literal["chars", "tokens"]
_SENTENCE_END = re.compile(r"[.!?\u2026][\"'\u201d\u2019)\]]*(?=\s)")


def _is_space(text: str, index: int) -> bool:
    return index >= len(text) or text[index].isspace()


def _skip_space(text: str, index: int) -> int:
    n = len(text)
    while index < n and text[index].isspace():
        index += 1
    return index


def _trim_end(text: str, start: int, end: int) -> int:
    while end > start and text[end - 1].isspace():
        end -= 1
    return end


def _word_end_after(text: str, index: int) -> int:
    """The end of the word starting at (or after the spaces at) ``index``."""
    n = len(text)
    index = _skip_space(text, index)
    while index < n and not text[index].isspace():
        index += 1
    return index


def _break_before(text: str, start: int, limit: int, floor: int) -> int:
    """Where a chunk starting at ``start`` should end: at most ``limit`` (exclusive), and with
    its last word ending after ``floor`` (the previous chunk's end), so every chunk adds text.

    Prefers, in the second half of the window, a paragraph break, then a sentence end;
    otherwise the last word end; a hard cut only when one word is longer than the chunk.
    """
    soft_from = max(start + (limit - start) // 2, floor)

    def ok(end: int) -> bool:
        return _trim_end(text, start, end) > floor

    paragraph = text.rfind("\n\n", soft_from, limit + 1)
    if paragraph > start and ok(paragraph):
        return paragraph
    last_sentence = -1
    for match in _SENTENCE_END.finditer(text, soft_from, limit + 1):
        if match.end() <= limit:
            last_sentence = match.end()
    if last_sentence > start and ok(last_sentence):
        return last_sentence
    for index in range(limit, max(start, floor), -1):
        if _is_space(text, index) and not text[index - 1].isspace():
            return index
    return limit  # a single word longer than a chunk: unavoidable cut


def chunk_spans_chars(text: str, chunk_size: int, overlap: int) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of the chunks of ``text``.

    Consecutive chunks share at most ``overlap`` characters, and only whole words; each chunk
    reaches further than the one before.

    Example::

        >>> text = "one two three four five six"
        >>> [text[s:e] for s, e in chunk_spans_chars(text, 10, 5)]
        ['one two', 'two three', 'three four', 'four five', 'five six']
    """
    spans: list[tuple[int, int]] = []
    n = len(text)
    start = _skip_space(text, 0)
    floor = start
    while start < n:
        limit = start + chunk_size
        end = n if limit >= n else _break_before(text, start, limit, floor)
        spans.append((start, _trim_end(text, start, end)))
        following = _skip_space(text, end)
        if following >= n:
            break
        if overlap:
            candidate = max(end - overlap, start + 1)
            # Start the overlap at a word start: move forward out of a word we landed in.
            while candidate < end and not (
                _is_space(text, candidate - 1) and not _is_space(text, candidate)
            ):
                candidate += 1
            # Overlap only when the next word still fits after it (no cut caused by overlap).
            if start < candidate < end and _word_end_after(text, end) <= candidate + chunk_size:
                following = candidate
        floor = end
        start = following
    return spans


def chunk_spans_tokens(
    text: str, offsets: Sequence[tuple[int, int]], chunk_size: int, overlap: int
) -> list[tuple[int, int, int, int]]:
    """Chunks of at most ``chunk_size`` tokens: ``(char_start, char_end, tok_start, tok_end)``.

    A chunk ends only between tokens separated by whitespace (so a word split into several
    sub-word tokens stays whole) unless one word has more tokens than a chunk. Consecutive
    chunks share at most ``overlap`` tokens, starting at a word start.

    Example::

        >>> from haive_contrib_ai.tokenization import WordTokenizer
        >>> text = "alpha beta, gamma delta"
        >>> spans = chunk_spans_tokens(text, WordTokenizer().tokenize(text).offsets, 3, 2)
        >>> [text[a:b] for a, b, _, _ in spans]
        ['alpha beta,', 'beta, gamma', 'gamma delta']
    """
    offsets = [o for o in offsets if o[1] > o[0]]  # drop special tokens
    n = len(offsets)

    def word_start(i: int) -> bool:
        return i == 0 or i >= n or offsets[i][0] > offsets[i - 1][1]

    def next_word_start(i: int) -> int:
        i += 1
        while i < n and not word_start(i):
            i += 1
        return i

    spans: list[tuple[int, int, int, int]] = []
    i = 0
    floor = 0  # the previous chunk's end: each chunk must reach past it
    while i < n:
        j = min(i + chunk_size, n)
        if j < n and not word_start(j):
            k = j - 1
            while k > max(i, floor) and not word_start(k):
                k -= 1
            if k > max(i, floor):
                j = k
        spans.append((offsets[i][0], offsets[j - 1][1], i, j))
        if j >= n:
            break
        nxt = j
        if overlap:
            candidate = max(j - overlap, i + 1)
            while candidate < j and not word_start(candidate):
                candidate += 1
            # Overlap only when the word after this chunk still fits behind it.
            if i < candidate < j and next_word_start(j) <= candidate + chunk_size:
                nxt = candidate
        floor = j
        i = nxt
    return spans


def as_document(item: Any, text_field: str = "text") -> Document:
    """A :class:`Document` from a Document, a str, a mapping or a record with text.

    Example::

        >>> as_document({"id": "a", "text": "hi", "lang": "en"}).metadata
        {'lang': 'en'}
    """
    if isinstance(item, Document):
        return item
    text = text_of(item, text_field)
    if isinstance(item, Mapping):
        metadata = {k: v for k, v in item.items() if k not in ("id", text_field, "metadata")}
        metadata.update(item.get("metadata") or {})
        source = item.get("source")
        return Document(id_of(item, text_field), text, str(source) if source else None, metadata)
    metadata = dict(getattr(item, "metadata", None) or {})
    return Document(id_of(item, text_field), text, getattr(item, "source", None), metadata)


class ChunkProcessor(Node):
    """Splits each document into chunks of ``chunk_size`` characters or tokens, overlapping by
    ``overlap``, and emits :class:`~haive_contrib_ai.records.Chunk` records.

    Chunks end at a paragraph or sentence end when one falls in the second half of the window,
    otherwise at a space: a word is cut only when it alone is longer than a chunk. Every chunk
    carries its document id, index, and character offsets (``text == doc.text[start:end]``),
    plus the document's metadata (and its page for PDFs). ``unit="tokens"`` counts tokens of
    ``tokenizer`` (``"words"`` or the packaged model's WordPiece, whose 256-token input limit
    chunks can then respect).

    Inputs may be :class:`Document` records, strings (id: a hash of the text) or mappings
    with ``text`` (and ``id``).

    Example::

        >>> import trio
        >>> chunker = ChunkProcessor(chunk_size=12, overlap=0)
        >>> chunks = trio.run(chunker.process_batch, [Document("d", "Hello there. General Kenobi.")], NodeContext("c"))
        >>> [(c.id, c.text, c.start, c.end) for c in chunks]
        [('d:0', 'Hello there.', 0, 12), ('d:1', 'General', 13, 20), ('d:2', 'Kenobi.', 21, 28)]
    """

    PLUGIN_NAME: ClassVar[str] = "chunk"

    def __init__(
        self,
        chunk_size: int = 1000,
        overlap: int = 200,
        *,
        unit: Unit = "chars",
        tokenizer: str | Tokenizer = "words",
        text_field: str = "text",
        name: str = "chunk",
        on_error: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        where = f"ChunkProcessor {name!r}"
        if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
            raise ConfigError(f"{where}: chunk_size must be an int >= 1, got {chunk_size!r}")
        if (
            not isinstance(overlap, int)
            or isinstance(overlap, bool)
            or not 0 <= overlap < chunk_size
        ):
            raise ConfigError(
                f"{where}: overlap must be an int with 0 <= overlap < chunk_size ({chunk_size}), "
                f"got {overlap!r}"
            )
        if unit not in ("chars", "tokens"):
            raise ConfigError(f"{where}: unit must be 'chars' or 'tokens', got {unit!r}")
        check_error_policy(on_error, where)
        self.name = name
        self.chunk_size = chunk_size
        self.overlap = overlap
        self.unit = unit
        self.text_field = text_field
        self.tokenizer = get_tokenizer(tokenizer) if unit == "tokens" else None
        self.on_error = on_error
        self.retry = retry

    def chunk(self, item: Any) -> list[Chunk]:
        """The chunks of one document (or str / mapping with text)."""
        doc = as_document(item, self.text_field)
        text = doc.text
        base = dict(doc.metadata)
        if doc.source is not None:
            base.setdefault("source", doc.source)
        page_starts = base.pop("page_starts", None)
        pieces: list[tuple[int, int, dict[str, Any]]] = []
        if self.tokenizer is None:
            for start, end in chunk_spans_chars(text, self.chunk_size, self.overlap):
                pieces.append((start, end, {}))
        else:
            offsets = self.tokenizer.tokenize(text).offsets
            for start, end, t0, t1 in chunk_spans_tokens(
                text, offsets, self.chunk_size, self.overlap
            ):
                pieces.append((start, end, {"token_start": t0, "token_end": t1}))
        chunks = []
        for index, (start, end, extra) in enumerate(pieces):
            metadata = {**base, **extra}
            if page_starts:
                metadata["page"] = bisect.bisect_right(page_starts, start)
            chunks.append(
                Chunk(f"{doc.id}:{index}", doc.id, index, text[start:end], start, end, metadata)
            )
        return chunks

    async def process_batch(self, batch: list[Any], ctx: NodeContext) -> list[Any]:
        out: list[Any] = []
        for item in batch:
            try:
                out.extend(self.chunk(item))
            except Exception as exc:
                ok, value = await ctx.recover(self.chunk, item, exc, is_async=False)
                if ok:
                    out.extend(value)
        return out
