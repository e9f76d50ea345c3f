"""SentimentTransform (VADER): signs right on clear cases, and as a pipeline node."""

from __future__ import annotations

import pytest
from haive_contrib_ai.records import Chunk
from haive_contrib_ai.sentiment import Sentiment, SentimentTransform

from haive.dataflow import ConfigError, StreamingPipeline
from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.builtins.sources import IterableSource

POSITIVE = [
    "I absolutely love this product, it works perfectly!",
    "Great service and a very friendly team :)",
    "The update is fantastic, thank you so much.",
    "Best purchase I've made all year.",
]
NEGATIVE = [
    "This is the worst experience I have ever had.",
    "Awful support, the app is broken and I am angry.",
    "I hate waiting two weeks for a broken item.",
    "Terrible quality, I am very disappointed.",
]
NEUTRAL = ["The package is 30 by 20 centimetres.", "The meeting is on Tuesday at 10."]


async def test_signs_are_right_on_clear_cases():
    sentiment = SentimentTransform()
    results = await sentiment.transform_batch(POSITIVE + NEGATIVE + NEUTRAL)
    assert all(isinstance(r, Sentiment) for r in results)
    positive, negative, neutral = results[:4], results[4:8], results[8:]
    assert all(r.label == "positive" and r.compound > 0.3 for r in positive), positive
    assert all(r.label == "negative" and r.compound < -0.3 for r in negative), negative
    assert all(r.label == "neutral" and abs(r.compound) < 0.05 for r in neutral), neutral
    assert positive[0]["label"] == "positive" and positive[0].score == positive[0].compound


async def test_negation_flips_the_sign():
    sentiment = SentimentTransform()
    good, not_good = await sentiment.transform_batch(
        ["The food was good.", "The food was not good."]
    )
    assert good.compound > 0 > not_good.compound


async def test_as_node_attaches_sentiment_to_records():
    pipeline = StreamingPipeline("sentiment")
    pipeline.set_source(
        IterableSource([Chunk("d:0", "d", 0, POSITIVE[0], 0, 10), {"text": NEGATIVE[0]}, "meh"])
    )
    pipeline.add_node(SentimentTransform())
    sink = MemorySink()
    pipeline.set_sink(sink)
    await pipeline.execute()
    chunk, mapping, text = sink.items
    assert chunk.metadata["sentiment"].label == "positive"
    assert mapping["sentiment"].label == "negative"
    assert text == {"text": "meh", "sentiment": text["sentiment"]}


def test_threshold_must_be_sensible():
    with pytest.raises(ConfigError, match=r"threshold must be in \[0, 1\)"):
        SentimentTransform(threshold=2)
