"""ClassificationTransform: a scikit-learn model the user trains, or zero-shot by embedding
similarity to label descriptions, with a confidence threshold."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import attrs
import numpy as np
import trio

from haive.dataflow.errors import ConfigError
from haive.dataflow.runtime.retry import RetryPolicy

from .embeddings import EmbeddingTransform, normalize_rows
from .transforms import TextTransform

Features = Literal["auto", "embedding", "text"]


@attrs.frozen(slots=True)
class Classification:
    """A prediction: ``label`` (or the unknown label when ``confidence`` is below the
    threshold), whether it was ``accepted``, the best ``candidate`` whatever its confidence,
    and every label's ``scores`` (probabilities summing to 1).

    Indexable like a dict (``c["label"]``), as the product description's code reads it.

    Example::

        >>> c = Classification("billing", 0.91, True, "billing", {"billing": 0.91, "other": 0.09})
        >>> c["label"], c["confidence"]
        ('billing', 0.91)
    """

    label: str
    confidence: float
    accepted: bool
    candidate: str
    scores: Mapping[str, float] = attrs.field(factory=dict)

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def to_dict(self) -> dict[str, Any]:
        return {**attrs.asdict(self), "scores": dict(self.scores)}


@attrs.frozen
class EvaluationReport:
    """Accuracy of a classifier on a labeled set.

    ``accuracy`` counts the top candidate whatever its confidence; ``coverage`` is the share
    of predictions over the threshold and ``accepted_accuracy`` the accuracy among those.

    Example::

        >>> EvaluationReport(total=4, correct=3, accepted=2, accepted_correct=2).accuracy
        0.75
    """

    total: int
    correct: int
    accepted: int
    accepted_correct: int
    confusion: Mapping[tuple[str, str], int] = attrs.field(factory=dict)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    @property
    def coverage(self) -> float:
        return self.accepted / self.total if self.total else 0.0

    @property
    def accepted_accuracy(self) -> float:
        return self.accepted_correct / self.accepted if self.accepted else 0.0


def _softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


async def train_classifier(
    texts: Sequence[str],
    labels: Sequence[str],
    *,
    features: Literal["embedding", "tfidf"] = "embedding",
    embedder: EmbeddingTransform | None = None,
    C: float = 4.0,
) -> Any:
    """Fit a scikit-learn logistic regression on sentence embeddings (or TF-IDF n-grams).

    Returns the fitted estimator; give it to ``ClassificationTransform(model=...)`` (or save
    it with ``joblib.dump`` and pass the path). Fitting runs in a worker thread.

    Example::

        >>> texts = ["refund my card", "charged twice", "package lost", "where is my parcel"]
        >>> model = trio.run(lambda: train_classifier(texts, ["billing", "billing", "shipping", "shipping"], features="tfidf"))
        >>> [str(label) for label in model.classes_]
        ['billing', 'shipping']
    """
    if len(texts) != len(labels):
        raise ConfigError(f"train_classifier: {len(texts)} texts but {len(labels)} labels")
    if len(set(labels)) < 2:
        raise ConfigError("train_classifier: need at least two different labels")
    from sklearn.linear_model import LogisticRegression

    if features == "embedding":
        embedder = embedder or EmbeddingTransform()
        matrix = await embedder.embed_texts(list(texts))
        estimator: Any = LogisticRegression(C=C, max_iter=2000)
        await trio.to_thread.run_sync(estimator.fit, matrix, list(labels))
        return estimator
    if features == "tfidf":
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.pipeline import make_pipeline

        estimator = make_pipeline(
            TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
            LogisticRegression(C=C * 2.5, max_iter=2000),
        )
        await trio.to_thread.run_sync(estimator.fit, list(texts), list(labels))
        return estimator
    raise ConfigError(
        f"train_classifier: features must be 'embedding' or 'tfidf', got {features!r}"
    )


class ClassificationTransform(TextTransform):
    """Classifies text with a confidence threshold.

    Two ways to classify:

    * ``model=``: a fitted scikit-learn classifier with ``predict_proba`` (or the path of one
      saved with joblib), such as :func:`train_classifier` returns. ``features="embedding"``
      feeds it sentence embeddings, ``"text"`` the raw texts (for a pipeline that vectorizes
      itself); ``"auto"`` tells them apart by the model's ``n_features_in_``.
    * ``labels=``: zero-shot, ``{label: description or [descriptions/examples]}``; a text
      gets the label whose description embedding is most similar, and the similarities go
      through a softmax with ``temperature`` to give probabilities.

    A prediction under ``confidence_threshold`` gets ``unknown_label`` (its best guess stays
    in ``candidate``). Embedding-based modes use ``embedder`` (default: the packaged model).
    In a :class:`~haive.dataflow.pipelines.chain.TransformationChain` the step may read an earlier
    embedding step (``input="embedding"``): vectors are classified without embedding again.

    Example (TF-IDF model; see the tests for embeddings and zero-shot)::

        >>> texts = ["refund my card", "charged twice", "package lost", "where is my parcel"]
        >>> model = trio.run(lambda: train_classifier(texts, ["billing", "billing", "shipping", "shipping"], features="tfidf"))
        >>> classify = ClassificationTransform(model=model, confidence_threshold=0.5)
        >>> trio.run(classify.transform, "my parcel is lost").candidate
        'shipping'
    """

    PLUGIN_NAME: ClassVar[str] = "classification"
    output_name: ClassVar[str | None] = "classification"

    def __init__(
        self,
        model: Any = None,
        *,
        labels: Mapping[str, str | Sequence[str]] | None = None,
        confidence_threshold: float = 0.5,
        features: Features = "auto",
        embedder: EmbeddingTransform | None = None,
        unknown_label: str = "unknown",
        temperature: float = 0.05,
        name: str = "classification",
        field: str = "classification",
        text_field: str = "text",
        on_error: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(name, field=field, text_field=text_field, on_error=on_error, retry=retry)
        where = f"ClassificationTransform {name!r}"
        if (model is None) == (labels is None):
            raise ConfigError(
                f"{where}: give either model= (a trained classifier) or labels= (zero-shot)"
            )
        if not isinstance(confidence_threshold, int | float) or not 0 <= confidence_threshold <= 1:
            raise ConfigError(
                f"{where}: confidence_threshold must be in [0, 1], got {confidence_threshold!r}"
            )
        if features not in ("auto", "embedding", "text"):
            raise ConfigError(
                f"{where}: features must be 'auto', 'embedding' or 'text', got {features!r}"
            )
        if temperature <= 0:
            raise ConfigError(f"{where}: temperature must be > 0, got {temperature!r}")
        self.descriptions: dict[str, list[str]] = {}
        if labels is not None:
            for label, described in labels.items():
                items = [described] if isinstance(described, str) else list(described)
                if not items or not all(isinstance(d, str) and d for d in items):
                    raise ConfigError(f"{where}: label {label!r} needs a non-empty description")
                self.descriptions[str(label)] = items
            if len(self.descriptions) < 2:
                raise ConfigError(f"{where}: zero-shot classification needs at least two labels")
        if isinstance(model, str | Path):
            self.model_path: Path | None = Path(model)
            if not self.model_path.is_file():
                raise ConfigError(
                    f"{where}: model {str(model)!r} is neither a fitted scikit-learn classifier "
                    "nor the path of one saved with joblib"
                )
            self.model: Any = None
        else:
            self.model_path = None
            if model is not None and not callable(getattr(model, "predict_proba", None)):
                raise ConfigError(
                    f"{where}: model must have predict_proba (a fitted classifier), got {model!r}"
                )
            self.model = model
        self.confidence_threshold = float(confidence_threshold)
        self.features = features
        self.unknown_label = unknown_label
        self.temperature = float(temperature)
        self._embedder = embedder
        self._owns_embedder = embedder is None
        self._label_names: list[str] = []
        self._label_matrix: np.ndarray | None = None
        self._label_owner: list[int] = []
        self._ready = False
        self._ready_lock = trio.Lock()

    @property
    def embedder(self) -> EmbeddingTransform:
        if self._embedder is None:
            self._embedder = EmbeddingTransform()
        return self._embedder

    @property
    def classes(self) -> list[str]:
        """The labels this classifier can give."""
        if self.descriptions:
            return list(self.descriptions)
        return [str(c) for c in getattr(self.model, "classes_", [])]

    def _mode(self) -> str:
        if self.descriptions:
            return "zero-shot"
        if self.features != "auto":
            return self.features
        return "embedding" if hasattr(self.model, "n_features_in_") else "text"

    async def open(self) -> None:
        async with self._ready_lock:
            if self._ready:
                return
            if self.model is None and self.model_path is not None:
                import joblib

                self.model = await trio.to_thread.run_sync(joblib.load, self.model_path)
                if not callable(getattr(self.model, "predict_proba", None)):
                    raise ConfigError(
                        f"{self.model_path} does not hold a classifier with predict_proba"
                    )
            if self._mode() != "text":
                await self.embedder.open()
            if self.descriptions:
                names, owners, texts = [], [], []
                for label, described in self.descriptions.items():
                    names.append(label)
                    for text in described:
                        owners.append(len(names) - 1)
                        texts.append(text)
                self._label_names = names
                self._label_owner = owners
                self._label_matrix = normalize_rows(await self.embedder.embed_texts(texts))
            elif self._mode() == "embedding":
                expected = getattr(self.model, "n_features_in_", None)
                have = self.embedder.provider.dimensions
                if expected is not None and have is not None and expected != have:
                    raise ConfigError(
                        f"ClassificationTransform {self.name!r}: the model expects {expected} "
                        f"features but the embedder produces {have}-dimensional vectors"
                    )
            self._ready = True

    async def aclose(self) -> None:
        if self._owns_embedder and self._embedder is not None:
            await self._embedder.aclose()

    async def _vectors(self, items: Sequence[Any]) -> np.ndarray:
        rows: list[np.ndarray | None] = []
        texts: list[str] = []
        where: list[int] = []
        for index, item in enumerate(items):
            if isinstance(item, np.ndarray | list) and not isinstance(item, str):
                rows.append(np.asarray(item, dtype=np.float32).ravel())
            else:
                rows.append(None)
                texts.append(self.texts([item])[0])
                where.append(index)
        if texts:
            embedded = await self.embedder.embed_texts(texts)
            for index, row in zip(where, embedded, strict=True):
                rows[index] = row
        return normalize_rows(np.vstack([r for r in rows if r is not None]))

    async def _probabilities(self, items: Sequence[Any]) -> tuple[list[str], np.ndarray]:
        await self.open()
        mode = self._mode()
        if mode == "zero-shot":
            assert self._label_matrix is not None
            vectors = await self._vectors(items)
            sims = vectors @ self._label_matrix.T  # (n, descriptions)
            per_label = np.full((len(items), len(self._label_names)), -np.inf, dtype=np.float32)
            for column, owner in enumerate(self._label_owner):
                per_label[:, owner] = np.maximum(per_label[:, owner], sims[:, column])
            return self._label_names, _softmax(per_label / self.temperature)
        if mode == "embedding":
            vectors = await self._vectors(items)
            probs = await trio.to_thread.run_sync(self.model.predict_proba, vectors)
        else:
            probs = await trio.to_thread.run_sync(self.model.predict_proba, self.texts(items))
        return [str(c) for c in self.model.classes_], np.asarray(probs, dtype=np.float64)

    async def transform_batch(self, items: Sequence[Any]) -> list[Any]:
        if not items:
            return []
        names, probs = await self._probabilities(items)
        out = []
        for row in probs:
            best = int(np.argmax(row))
            confidence = float(row[best])
            accepted = confidence >= self.confidence_threshold
            out.append(
                Classification(
                    label=names[best] if accepted else self.unknown_label,
                    confidence=confidence,
                    accepted=accepted,
                    candidate=names[best],
                    scores={name: float(p) for name, p in zip(names, row, strict=True)},
                )
            )
        return out

    async def compute(self, texts: list[str]) -> list[Any]:
        return await self.transform_batch(texts)

    async def evaluate(self, texts: Sequence[str], labels: Sequence[str]) -> EvaluationReport:
        """Accuracy on a labeled set (``texts[i]`` should get ``labels[i]``)."""
        if len(texts) != len(labels):
            raise ConfigError(f"evaluate: {len(texts)} texts but {len(labels)} labels")
        predictions = await self.transform_batch(list(texts))
        correct = accepted = accepted_correct = 0
        confusion: dict[tuple[str, str], int] = {}
        for prediction, truth in zip(predictions, labels, strict=True):
            hit = prediction.candidate == truth
            correct += hit
            if prediction.accepted:
                accepted += 1
                accepted_correct += hit
            key = (truth, prediction.candidate)
            confusion[key] = confusion.get(key, 0) + 1
        return EvaluationReport(len(predictions), correct, accepted, accepted_correct, confusion)
