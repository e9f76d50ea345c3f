"""SimilarityProcessor: near-duplicate detection by embedding similarity over a window."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np

from haive.dataflow.errors import ConfigError
from haive.dataflow.runtime.nodes import Node, NodeContext, check_error_policy
from haive.dataflow.runtime.retry import RetryPolicy

from .records import annotate, id_of, value_of

Action = Literal["drop", "mark"]


class SimilarityProcessor(Node):
    """Drops (or marks) items whose embedding is within ``threshold`` cosine similarity of
    one of the last ``window`` items kept.

    Items need an embedding (put an :class:`~haive_contrib_ai.embeddings.EmbeddingProcessor`
    first). With ``action="drop"`` (default) near-duplicates are filtered out and counted in
    :attr:`duplicates`; with ``action="mark"`` every item passes and carries ``duplicate_of``
    (the id of the item it repeats, or ``None``) and ``similarity``. Only kept items enter the
    window, so a chain of small edits cannot walk away from the original unnoticed.

    Example::

        >>> import trio
        >>> node = SimilarityProcessor(threshold=0.9)
        >>> items = [
        ...     {"id": "a", "embedding": [1.0, 0.0]},
        ...     {"id": "b", "embedding": [0.99, 0.05]},
        ...     {"id": "c", "embedding": [0.0, 1.0]},
        ... ]
        >>> [i["id"] for i in trio.run(node.process_batch, items, NodeContext("s"))]
        ['a', 'c']
        >>> node.duplicates, node.last_duplicates
        (1, [('b', 'a')])
    """

    PLUGIN_NAME: ClassVar[str] = "similarity"

    def __init__(
        self,
        threshold: float = 0.85,
        *,
        window: int = 1000,
        action: Action = "drop",
        field: str = "embedding",
        name: str = "similarity",
        on_error: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        where = f"SimilarityProcessor {name!r}"
        if not isinstance(threshold, int | float) or not -1.0 <= threshold <= 1.0:
            raise ConfigError(
                f"{where}: threshold must be a cosine similarity in [-1, 1], got {threshold!r}"
            )
        if not isinstance(window, int) or window < 1:
            raise ConfigError(f"{where}: window must be an int >= 1, got {window!r}")
        if action not in ("drop", "mark"):
            raise ConfigError(f"{where}: action must be 'drop' or 'mark', got {action!r}")
        check_error_policy(on_error, where)
        self.name = name
        self.threshold = float(threshold)
        self.window = window
        self.action = action
        self.field = field
        self.on_error = on_error
        self.retry = retry
        self._vectors: np.ndarray | None = None  # ring buffer, unit rows
        self._ids: list[str | None] = [None] * window
        self._filled = 0
        self._next = 0
        self.seen = 0
        self.duplicates = 0
        #: (duplicate id, original id) of the latest duplicates (at most 100).
        self.last_duplicates: list[tuple[str, str]] = []

    def _vector(self, item: Any) -> np.ndarray:
        raw = value_of(item, self.field)
        if raw is None:
            raise ValueError(
                f"item {id_of(item) if not isinstance(item, np.ndarray) else '?'} has no "
                f"{self.field!r}: put an EmbeddingProcessor before the SimilarityProcessor"
            )
        vector = np.asarray(raw, dtype=np.float32).ravel()
        norm = float(np.linalg.norm(vector))
        if not np.isfinite(norm) or norm == 0.0:
            raise ValueError(f"item {id_of(item)} has a zero or non-finite {self.field!r}")
        return vector / norm

    def check(self, item: Any) -> tuple[str | None, float]:
        """``(id of the kept item it repeats or None, best similarity)``; remembers kept items."""
        vector = self._vector(item)
        if self._vectors is None:
            self._vectors = np.zeros((self.window, vector.shape[0]), dtype=np.float32)
        elif self._vectors.shape[1] != vector.shape[0]:
            raise ValueError(
                f"item {id_of(item)} has a {vector.shape[0]}-dimensional embedding; earlier "
                f"items had {self._vectors.shape[1]}"
            )
        self.seen += 1
        best, original = -1.0, None
        if self._filled:
            scores = self._vectors[: self._filled] @ vector
            index = int(np.argmax(scores))
            best = float(scores[index])
            if best >= self.threshold:
                original = self._ids[index]
        if original is None:
            self._vectors[self._next] = vector
            self._ids[self._next] = id_of(item)
            self._next = (self._next + 1) % self.window
            self._filled = min(self._filled + 1, self.window)
        return original, best

    async def process_batch(self, batch: list[Any], ctx: NodeContext) -> list[Any]:
        out: list[Any] = []
        for item in batch:
            try:
                original, best = self.check(item)
            except Exception as exc:
                ok, value = await ctx.recover(self.check, item, exc, is_async=False)
                if not ok:
                    continue
                original, best = value
            if original is not None:
                self.duplicates += 1
                self.last_duplicates.append((id_of(item), original))
                del self.last_duplicates[:-100]
            if self.action == "mark":
                item = annotate(annotate(item, "duplicate_of", original), "similarity", best)
                out.append(item)
            elif original is None:
                out.append(item)
        return out
