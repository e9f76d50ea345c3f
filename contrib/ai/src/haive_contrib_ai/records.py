"""The records AI processors pass along: documents, chunks, and how a text is found in an item.

Processors accept several shapes of item so they fit into any pipeline:

* a plain ``str`` (the text itself);
* a mapping with a ``"text"`` key (``text_field`` picks another key);
* an object with a ``text`` attribute, such as :class:`Document` and :class:`Chunk`.

A processor that computes a value (an embedding, a sentiment...) attaches it with
:func:`annotate`, which never mutates the item: a ``str`` becomes ``{"text": ..., key:
value}``, a mapping is copied with the key added, an attrs record is evolved (into its field
named ``key`` when it has one, otherwise into its ``metadata``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:  # numpy is imported where vectors are made, keeping plugin discovery cheap
    import numpy as np


def _as_dict(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return dict(value or {})


@attrs.frozen(slots=True)
class Document:
    """A whole document: an id, its text, where it came from, and metadata.

    Example::

        >>> doc = Document("notes/a.md", "# Title\\n\\nBody.", metadata={"format": "markdown"})
        >>> doc.id, doc.metadata["format"]
        ('notes/a.md', 'markdown')
    """

    id: str
    text: str
    source: str | None = None
    metadata: Mapping[str, Any] = attrs.field(factory=dict, converter=_as_dict)


@attrs.frozen(slots=True)
class Chunk:
    """A piece of a document: its id, the document's id, its position and (later) its embedding.

    ``text == document.text[start:end]`` always holds, so a chunk can be traced back to the
    exact characters it came from. ``id`` is ``"<doc_id>:<index>"``: the same document chunked
    with the same settings gives the same ids, which makes vector-store upserts idempotent.

    Example::

        >>> chunk = Chunk("d:0", "d", 0, "Hello", 0, 5)
        >>> chunk.with_embedding([1.0, 0.0]).embedding.tolist()
        [1.0, 0.0]
        >>> chunk.to_payload()["doc_id"]
        'd'
    """

    id: str
    doc_id: str
    index: int
    text: str
    start: int
    end: int
    metadata: Mapping[str, Any] = attrs.field(factory=dict, converter=_as_dict)
    embedding: np.ndarray | None = attrs.field(default=None, eq=False, repr=False)

    def with_embedding(self, vector: Any) -> Chunk:
        """This chunk with ``embedding`` set (as a float32 vector)."""
        import numpy as np

        return attrs.evolve(self, embedding=np.asarray(vector, dtype=np.float32))

    def to_payload(self) -> dict[str, Any]:
        """A JSON-friendly dict of everything but the embedding."""
        return {
            "chunk_id": self.id,
            "doc_id": self.doc_id,
            "index": self.index,
            "text": self.text,
            "start": self.start,
            "end": self.end,
            "metadata": dict(self.metadata),
        }


def text_of(item: Any, text_field: str = "text") -> str:
    """The text an AI processor works on, from a str, a mapping or a record.

    Example::

        >>> text_of("hi"), text_of({"text": "a"}), text_of({"body": "b"}, "body")
        ('hi', 'a', 'b')
        >>> text_of({"title": "x"})
        Traceback (most recent call last):
        ...
        TypeError: expected a str, a mapping with a 'text' key or an object with a 'text' attribute; got a dict with keys ['title']
    """
    if isinstance(item, str):
        return item
    if isinstance(item, Mapping):
        if text_field in item:
            value = item[text_field]
        else:
            raise TypeError(
                f"expected a str, a mapping with a {text_field!r} key or an object with a "
                f"{text_field!r} attribute; got a {type(item).__name__} with keys "
                f"{sorted(map(str, item))[:10]}"
            )
    else:
        try:
            value = getattr(item, text_field)
        except AttributeError:
            raise TypeError(
                f"expected a str, a mapping with a {text_field!r} key or an object with a "
                f"{text_field!r} attribute; got {type(item).__name__}: {item!r:.80}"
            ) from None
    if not isinstance(value, str):
        raise TypeError(f"the {text_field!r} of an item must be a str, got {type(value).__name__}")
    return value


def annotate(item: Any, key: str, value: Any) -> Any:
    """``item`` with ``value`` attached under ``key`` (a new object; ``item`` is unchanged).

    Example::

        >>> annotate("hi", "n", 2)
        {'text': 'hi', 'n': 2}
        >>> annotate({"text": "hi", "id": 1}, "n", 2)
        {'text': 'hi', 'id': 1, 'n': 2}
        >>> annotate(Chunk("d:0", "d", 0, "hi", 0, 2), "n", 2).metadata
        {'n': 2}
    """
    if isinstance(item, str):
        return {"text": item, key: value}
    if isinstance(item, Mapping):
        return {**item, key: value}
    if attrs.has(type(item)):
        names = {field.name for field in attrs.fields(type(item))}
        if key in names:
            if key == "embedding" and value is not None:
                import numpy as np

                value = np.asarray(value, dtype=np.float32)
            return attrs.evolve(item, **{key: value})
        if "metadata" in names:
            return attrs.evolve(item, metadata={**item.metadata, key: value})
    raise TypeError(
        f"cannot attach {key!r} to a {type(item).__name__}: items must be str, mappings, or "
        f"attrs records with a {key!r} or 'metadata' field"
    )


def value_of(item: Any, key: str, default: Any = None) -> Any:
    """Read back what :func:`annotate` attached (``default`` when absent).

    Example::

        >>> value_of(annotate("hi", "n", 2), "n"), value_of("hi", "n", 0)
        (2, 0)
    """
    if isinstance(item, Mapping):
        return item.get(key, default)
    if attrs.has(type(item)):
        names = {field.name for field in attrs.fields(type(item))}
        if key in names:
            value = getattr(item, key)
            return default if value is None else value
        if "metadata" in names:
            return item.metadata.get(key, default)
    return getattr(item, key, default) if not isinstance(item, str) else default


def id_of(item: Any, text_field: str = "text") -> str:
    """An item's id: its ``id`` field, else a stable hash of its text.

    Example::

        >>> id_of({"id": 7, "text": "x"}), id_of("x") == id_of("x")
        ('7', True)
    """
    if isinstance(item, Mapping):
        if item.get("id") is not None:
            return str(item["id"])
    elif not isinstance(item, str):
        ident = getattr(item, "id", None)
        if ident is not None:
            return str(ident)
    return "sha1-" + hashlib.sha1(text_of(item, text_field).encode()).hexdigest()[:16]
