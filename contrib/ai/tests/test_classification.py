"""ClassificationTransform: trained scikit-learn models and zero-shot labels, with the real
model, measured on the labeled set in tests/data/intents.jsonl."""

from __future__ import annotations

import joblib
import numpy as np
import pytest
from haive_contrib_ai.classification import (
    Classification,
    ClassificationTransform,
    train_classifier,
)

from haive.dataflow import ConfigError, StreamingPipeline
from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.builtins.sources import IterableSource

LABEL_DESCRIPTIONS = {
    "billing": "payments, charges, invoices, refunds and prices",
    "shipping": "delivery of parcels, packages, couriers and tracking",
    "technical": "software bugs, crashes, errors and devices not working",
    "account": "login, password, profile, user account settings and personal data",
}


def split(intents):
    """Half of each label to train on, the other half held out (the file interleaves labels)."""
    train = [row for i, row in enumerate(intents) if (i // 4) % 2 == 0]
    test = [row for i, row in enumerate(intents) if (i // 4) % 2 == 1]
    return train, test


def texts_labels(rows):
    return [r["text"] for r in rows], [r["label"] for r in rows]


async def test_trained_on_embeddings_beats_tfidf_on_held_out_messages(
    embedder, intents, accuracy_report
):
    train, test = split(intents)
    assert {r["label"] for r in train} == {r["label"] for r in test} == set(LABEL_DESCRIPTIONS)
    model = await train_classifier(*texts_labels(train), embedder=embedder)
    classify = ClassificationTransform(model=model, embedder=embedder, confidence_threshold=0.5)
    report = await classify.evaluate(*texts_labels(test))
    tfidf = await train_classifier(*texts_labels(train), features="tfidf")
    baseline = await ClassificationTransform(model=tfidf).evaluate(*texts_labels(test))
    accuracy_report["trained (logistic regression on MiniLM embeddings)"] = (
        f"accuracy {report.accuracy:.2f} on {report.total} held-out messages, coverage at 0.5: "
        f"{report.coverage:.2f} (accuracy there {report.accepted_accuracy:.2f})"
    )
    accuracy_report["baseline (TF-IDF logistic regression)"] = f"accuracy {baseline.accuracy:.2f}"
    assert report.total == 32
    assert report.accuracy >= 0.85
    assert report.accuracy > baseline.accuracy  # meaning beats word overlap on 16 examples


async def test_zero_shot_by_label_descriptions(embedder, intents, accuracy_report):
    classify = ClassificationTransform(
        labels=LABEL_DESCRIPTIONS, embedder=embedder, confidence_threshold=0.5
    )
    report = await classify.evaluate(*texts_labels(intents))
    accuracy_report["zero-shot (similarity to label descriptions)"] = (
        f"accuracy {report.accuracy:.2f} on {report.total} messages, coverage at 0.5: "
        f"{report.coverage:.2f} (accuracy there {report.accepted_accuracy:.2f})"
    )
    assert report.accuracy >= 0.8
    [result] = await classify.transform_batch(["My parcel was left at the wrong door"])
    assert isinstance(result, Classification)
    assert result.label == "shipping" and result.accepted and result["label"] == "shipping"
    assert abs(sum(result.scores.values()) - 1.0) < 1e-6 and result.confidence == max(
        result.scores.values()
    )


async def test_confidence_threshold_gives_the_unknown_label(embedder):
    classify = ClassificationTransform(
        labels=LABEL_DESCRIPTIONS,
        embedder=embedder,
        confidence_threshold=0.99,
        unknown_label="needs-human",
    )
    result = await classify.transform("hello")
    assert not result.accepted and result.label == "needs-human"
    assert result.candidate in LABEL_DESCRIPTIONS and result.confidence < 0.99


async def test_model_from_a_joblib_file_and_vectors_as_input(embedder, intents, tmp_path):
    train, _ = split(intents)
    model = await train_classifier(*texts_labels(train), embedder=embedder)
    path = tmp_path / "intent-classifier.joblib"
    joblib.dump(model, path)
    classify = ClassificationTransform(model=str(path), embedder=embedder)
    vector = await embedder.transform("I can't sign in to my profile")
    by_vector = await classify.transform(vector)  # an embedding is classified as is
    by_text = await classify.transform("I can't sign in to my profile")
    assert by_vector.candidate == by_text.candidate == "account"
    assert np.isclose(by_vector.confidence, by_text.confidence, atol=1e-4)


async def test_as_pipeline_node(embedder):
    classify = ClassificationTransform(labels=LABEL_DESCRIPTIONS, embedder=embedder)
    pipeline = StreamingPipeline("classify")
    pipeline.set_source(
        IterableSource(
            [{"id": 1, "text": "The app crashes on start"}, {"id": 2, "text": "Refund please"}]
        )
    )
    pipeline.add_node(classify)
    sink = MemorySink()
    pipeline.set_sink(sink)
    await pipeline.execute()
    assert [item["classification"].label for item in sink.items] == ["technical", "billing"]


async def test_bad_configuration_is_clear(tmp_path):
    with pytest.raises(ConfigError, match="give either model="):
        ClassificationTransform()
    with pytest.raises(ConfigError, match="give either model="):
        ClassificationTransform(model=object(), labels={"a": "x", "b": "y"})
    with pytest.raises(
        ConfigError,
        match="'intent-classifier' is neither a fitted scikit-learn classifier nor the path",
    ):
        ClassificationTransform(model="intent-classifier")
    with pytest.raises(ConfigError, match="needs at least two labels"):
        ClassificationTransform(labels={"only": "one"})
    with pytest.raises(ConfigError, match="confidence_threshold must be in"):
        ClassificationTransform(labels=LABEL_DESCRIPTIONS, confidence_threshold=1.5)
    with pytest.raises(ConfigError, match="at least two different labels"):
        await train_classifier(["a", "b"], ["x", "x"], features="tfidf")
