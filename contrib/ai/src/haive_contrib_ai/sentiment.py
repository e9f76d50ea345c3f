"""SentimentTransform: offline sentiment with VADER (lexicon and rules, no model download)."""

from __future__ import annotations

import threading
from typing import Any, ClassVar

import attrs
import trio

from haive.dataflow.errors import ConfigError
from haive.dataflow.runtime.retry import RetryPolicy

from .transforms import TextTransform


@attrs.frozen(slots=True)
class Sentiment:
    """A sentiment: ``label`` (positive / negative / neutral), VADER's ``compound`` score in
    [-1, 1] and the proportions of positive, negative and neutral text.

    Indexable like a dict (``s["label"]``), as the product description's code reads it.

    Example::

        >>> s = Sentiment("positive", 0.8, 0.6, 0.0, 0.4)
        >>> s["label"], s.score
        ('positive', 0.8)
    """

    label: str
    compound: float
    positive: float
    negative: float
    neutral: float

    @property
    def score(self) -> float:
        """The signed strength: VADER's compound score."""
        return self.compound

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


_analyzer: Any = None
_analyzer_lock = threading.Lock()


def _get_analyzer() -> Any:
    global _analyzer
    with _analyzer_lock:
        if _analyzer is None:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

            _analyzer = SentimentIntensityAnalyzer()
        return _analyzer


class SentimentTransform(TextTransform):
    """Scores sentiment with VADER; ``threshold`` on the compound score sets the label.

    VADER is tuned for short social-media-like English text (it reads emphasis, negation,
    "but", emoticons). Scoring runs in a worker thread per batch. As a node it attaches
    ``sentiment``.

    Example::

        >>> s = trio.run(SentimentTransform().transform, "I love this, it is great!")
        >>> s.label, s.compound > 0.5
        ('positive', True)
    """

    PLUGIN_NAME: ClassVar[str] = "sentiment"
    output_name: ClassVar[str | None] = "sentiment"

    def __init__(
        self,
        *,
        threshold: float = 0.05,
        name: str = "sentiment",
        field: str = "sentiment",
        text_field: str = "text",
        on_error: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(name, field=field, text_field=text_field, on_error=on_error, retry=retry)
        if not isinstance(threshold, int | float) or not 0 <= threshold < 1:
            raise ConfigError(
                f"SentimentTransform {name!r}: threshold must be in [0, 1), got {threshold!r}"
            )
        self.threshold = float(threshold)

    def _score(self, texts: list[str]) -> list[Sentiment]:
        analyzer = _get_analyzer()
        out = []
        for text in texts:
            scores = analyzer.polarity_scores(text)
            compound = float(scores["compound"])
            if compound >= self.threshold:
                label = "positive"
            elif compound <= -self.threshold:
                label = "negative"
            else:
                label = "neutral"
            out.append(Sentiment(label, compound, scores["pos"], scores["neg"], scores["neu"]))
        return out

    async def compute(self, texts: list[str]) -> list[Any]:
        return list(await trio.to_thread.run_sync(self._score, texts))
