"""VectorStoreSink: embedded items into Qdrant, batched and idempotent by item id."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import attrs
import numpy as np
import trio

from haive.dataflow.errors import ConfigError, HaiveError, InvalidMessageError
from haive.dataflow.io.sinks import StreamSink

#: Namespace of the point ids derived from item ids (uuid5), so an id maps to one point.
POINT_NAMESPACE = uuid.UUID("6f1d2c52-7a43-5bd4-9a3c-1f6e2b9d4c10")
DISTANCES = ("cosine", "dot", "euclid", "manhattan")
T = TypeVar("T")


class VectorStoreError(HaiveError):
    """The vector store refused an operation or could not be reached."""


@attrs.frozen
class Hit:
    """One search result: the item's ``id``, its ``score`` and its stored ``payload``.

    Example::

        >>> Hit("doc.md:0", 0.93, {"text": "hello"}).payload["text"]
        'hello'
    """

    id: str
    score: float
    payload: Mapping[str, Any] = attrs.field(factory=dict)

    @property
    def text(self) -> str | None:
        value = self.payload.get("text")
        return value if isinstance(value, str) else None


def point_id(item_id: str) -> str:
    """The Qdrant point id (a UUID) for an item id: the same item id, the same point.

    Example::

        >>> point_id("a.md:0") == point_id("a.md:0") != point_id("a.md:1")
        True
    """
    return str(uuid.uuid5(POINT_NAMESPACE, item_id))


def jsonable(value: Any) -> Any:
    """``value`` as JSON-friendly data (numpy values, attrs records, tuples, sets...).

    Example::

        >>> jsonable({"n": np.float32(0.5), "t": (1, 2), "s": {3}})
        {'n': 0.5, 't': [1, 2], 's': [3]}
    """
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if attrs.has(type(value)):
        return {f.name: jsonable(getattr(value, f.name)) for f in attrs.fields(type(value))}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    return str(value)


class VectorStoreSink(StreamSink):
    """Writes embedded items into a Qdrant collection; ``search`` finds the nearest ones.

    ``location`` is where Qdrant lives: ``":memory:"`` (default: embedded, in this process,
    kept while the sink object lives), a folder path (embedded, on disk, reopened by the next
    run) or a server URL (``"http://vector-db:6333"``, with ``api_key=``).

    Items are chunks (anything with ``id`` and ``embedding`` attributes, like
    ``haive_contrib_ai.records.Chunk``) or mappings with ``"id"`` and ``"embedding"``. Each
    becomes a point whose id is derived from the item id (uuid5), so writing the same item
    again replaces it (idempotent upserts); the payload holds the item's other fields (text,
    document id, offsets, metadata) plus ``chunk_id``. Points are upserted ``batch_size`` at a
    time, in a worker thread, and ``write_batch`` returns once Qdrant has applied them. The
    collection is created on first write with the vectors' size and ``distance``.

    An item without a usable embedding is an error naming it, raised after the valid items of
    the batch are written (none of those is lost).

    Example::

        >>> import trio
        >>> sink = VectorStoreSink(collection="demo")
        >>> async def main():
        ...     async with sink:
        ...         await sink.write_batch([
        ...             {"id": "a", "text": "cats", "embedding": [1.0, 0.0]},
        ...             {"id": "b", "text": "tax", "embedding": [0.0, 1.0]},
        ...         ])
        ...     hits = await sink.search([0.9, 0.1], limit=1)
        ...     return [(h.id, h.text) for h in hits], await sink.count()
        >>> trio.run(main)
        ([('a', 'cats')], 2)
    """

    PLUGIN_NAME: ClassVar[str] = "vector_store"

    def __init__(
        self,
        location: str | Path = ":memory:",
        *,
        collection: str = "haive",
        vector_size: int | None = None,
        distance: str = "cosine",
        batch_size: int = 256,
        api_key: str | None = None,
        vector_field: str = "embedding",
        id_field: str = "id",
        payload: Callable[[Any], Mapping[str, Any]] | None = None,
    ) -> None:
        location = str(location)
        if not location:
            raise ConfigError(
                "VectorStoreSink: location must be ':memory:', a folder path or an http(s) URL"
            )
        if not isinstance(collection, str) or not collection:
            raise ConfigError("VectorStoreSink: collection must be a non-empty string")
        if distance.lower() not in DISTANCES:
            raise ConfigError(
                f"VectorStoreSink: distance must be one of {DISTANCES}, got {distance!r}"
            )
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(
                f"VectorStoreSink: batch_size must be an int >= 1, got {batch_size!r}"
            )
        if vector_size is not None and (not isinstance(vector_size, int) or vector_size < 1):
            raise ConfigError(
                f"VectorStoreSink: vector_size must be an int >= 1, got {vector_size!r}"
            )
        self.location = location
        self.kind = (
            "memory"
            if location == ":memory:"
            else ("url" if re.match(r"https?://", location) else "path")
        )
        self.collection = collection
        self.vector_size = vector_size
        self.distance = distance.lower()
        self.batch_size = batch_size
        self.api_key = api_key
        self.vector_field = vector_field
        self.id_field = id_field
        self.payload_fn = payload
        self._client: Any = None
        self._collection_ready = False
        self._limiter = trio.CapacityLimiter(1)
        self.written = 0
        self.upserts = 0

    # -- the client, always used from one worker thread at a time ------------------------
    def _make_client(self) -> Any:
        from qdrant_client import QdrantClient

        if self.kind == "memory":
            return QdrantClient(location=":memory:")
        if self.kind == "url":
            # No version probe at construction: the first real call reports an unreachable server.
            return QdrantClient(url=self.location, api_key=self.api_key, check_compatibility=False)
        Path(self.location).mkdir(parents=True, exist_ok=True)
        return QdrantClient(path=self.location)

    async def _call(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)
        except (ConfigError, VectorStoreError):
            raise
        except Exception as exc:
            raise VectorStoreError(
                f"qdrant at {self.location} ({self.collection!r}): {what} failed: {exc!r}"
            ) from exc

    async def open(self) -> None:
        if self._client is None:
            self._client = await self._call("connecting", self._make_client)
            self._collection_ready = False
        if not self._collection_ready:
            await self._call("checking the collection", self._ensure_collection, self.vector_size)

    async def aclose(self) -> None:
        # An in-memory store lives as long as this sink: closing it would lose the data.
        if self.kind == "memory" or self._client is None:
            return
        client, self._client = self._client, None
        with trio.CancelScope(shield=True):
            await self._call("closing", client.close)

    def _ensure_collection(self, size: int | None) -> None:
        from qdrant_client import models

        client = self._client
        if client.collection_exists(self.collection):
            params = client.get_collection(self.collection).config.params.vectors
            existing = getattr(params, "size", None)
            if size is not None and existing is not None and existing != size:
                raise ConfigError(
                    f"VectorStoreSink: collection {self.collection!r} at {self.location} holds "
                    f"{existing}-dimensional vectors, these items have {size}"
                )
            self.vector_size = existing or size
            self._collection_ready = True
            return
        if size is None:
            return  # created on first write, when the vectors' size is known
        distance = {
            "cosine": models.Distance.COSINE,
            "dot": models.Distance.DOT,
            "euclid": models.Distance.EUCLID,
            "manhattan": models.Distance.MANHATTAN,
        }[self.distance]
        client.create_collection(
            self.collection, vectors_config=models.VectorParams(size=size, distance=distance)
        )
        self.vector_size = size
        self._collection_ready = True

    # -- writing ---------------------------------------------------------------------------
    def _field(self, item: Any, name: str) -> Any:
        if isinstance(item, Mapping):
            return item.get(name)
        return getattr(item, name, None)

    def _payload(self, item: Any, item_id: str) -> dict[str, Any]:
        if self.payload_fn is not None:
            payload = dict(self.payload_fn(item))
        elif callable(getattr(item, "to_payload", None)):
            payload = dict(item.to_payload())
        elif isinstance(item, Mapping):
            payload = {k: v for k, v in item.items() if k != self.vector_field}
        elif attrs.has(type(item)):
            payload = {
                f.name: getattr(item, f.name)
                for f in attrs.fields(type(item))
                if f.name != self.vector_field
            }
        else:
            payload = {}
        payload.setdefault("chunk_id", item_id)
        result: dict[str, Any] = jsonable(payload)
        return result

    def _point(self, item: Any) -> Any:
        from qdrant_client import models

        raw_id = self._field(item, self.id_field)
        if raw_id is None or raw_id == "":
            raise ValueError(f"an item has no {self.id_field!r}: {item!r:.80}")
        item_id = str(raw_id)
        raw_vector = self._field(item, self.vector_field)
        if raw_vector is None:
            raise ValueError(f"item {item_id!r} has no {self.vector_field!r} (embed it first)")
        vector = np.asarray(raw_vector, dtype=np.float32).ravel()
        if vector.size == 0 or not np.all(np.isfinite(vector)):
            raise ValueError(f"item {item_id!r} has an empty or non-finite {self.vector_field!r}")
        if self.vector_size is not None and vector.size != self.vector_size:
            raise ValueError(
                f"item {item_id!r} has a {vector.size}-dimensional {self.vector_field!r}; the "
                f"collection {self.collection!r} holds {self.vector_size}-dimensional vectors"
            )
        return models.PointStruct(
            id=point_id(item_id), vector=vector.tolist(), payload=self._payload(item, item_id)
        )

    def _upsert(self, points: list[Any]) -> None:
        self._client.upsert(self.collection, points=points, wait=True)

    async def write_batch(self, items: list[Any]) -> None:
        if self._client is None:
            await self.open()
        if not self._collection_ready:
            first = next(
                (
                    self._field(i, self.vector_field)
                    for i in items
                    if self._field(i, self.vector_field) is not None
                ),
                None,
            )
            if first is not None:
                size = int(np.asarray(first).size)
                await self._call("creating the collection", self._ensure_collection, size)
        points: list[Any] = []
        problems: list[str] = []
        for item in items:
            try:
                points.append(self._point(item))
            except (TypeError, ValueError) as exc:
                problems.append(str(exc))
        for start in range(0, len(points), self.batch_size):
            await self._call("upsert", self._upsert, points[start : start + self.batch_size])
            self.upserts += 1
            self.written += len(points[start : start + self.batch_size])
        if problems:
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            raise InvalidMessageError(
                f"VectorStoreSink: {len(problems)} of {len(items)} item(s) not written: "
                f"{'; '.join(problems[:3])}{more}"
            )

    # -- reading ---------------------------------------------------------------------------
    async def search(
        self,
        query: Sequence[float] | np.ndarray | str,
        limit: int = 5,
        *,
        embedder: Any = None,
        score_threshold: float | None = None,
    ) -> list[Hit]:
        """The ``limit`` items nearest to ``query`` (a vector, or a text with ``embedder``:
        any object with ``async transform(text) -> vector``, such as ``EmbeddingTransform``)."""
        if isinstance(query, str):
            if embedder is None:
                raise ConfigError(
                    "VectorStoreSink.search: a text query needs embedder= to embed it"
                )
            query = await embedder.transform(query)
        vector = np.asarray(query, dtype=np.float32).ravel().tolist()
        await self.open()
        if not self._collection_ready:
            return []

        def run() -> Any:
            return self._client.query_points(
                self.collection,
                query=vector,
                limit=limit,
                with_payload=True,
                score_threshold=score_threshold,
            ).points

        points = await self._call("search", run)
        return [
            Hit(str((p.payload or {}).get("chunk_id", p.id)), float(p.score), dict(p.payload or {}))
            for p in points
        ]

    async def count(self) -> int:
        """How many points the collection holds (0 before the first write)."""
        await self.open()
        if not self._collection_ready:
            return 0
        result = await self._call("count", lambda: self._client.count(self.collection, exact=True))
        return int(result.count)
