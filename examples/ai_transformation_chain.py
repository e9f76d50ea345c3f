"""The seed's "Stream Transformation Chains" snippet, on trio, plus intelligent routing.

Each text of a stream goes through tokenization -> embedding -> classification -> enrichment;
every step's output is kept on the result. Classification is zero-shot (similarity to label
descriptions) with a confidence threshold; an IntelligentEventRouter then routes the texts by
similarity to a few examples, with pattern rules as fallback. Everything runs offline.
"""

from __future__ import annotations

import trio

from haive.dataflow.streaming import (
    ClassificationTransform,
    EmbeddingTransform,
    EnrichmentTransform,
    IntelligentEventRouter,
    SentimentTransform,
    TokenizationTransform,
    TransformationChain,
)

# Zero-shot labels: a description and an example each.
INTENTS = {
    "support_request": [
        "a customer asking for help because something does not work",
        "it is broken, please help",
    ],
    "purchase_intent": [
        "someone who wants to buy, upgrade or get a price quote",
        "how much does it cost?",
    ],
    "feedback": [
        "an opinion about the product: praise or a complaint",
        "I love the new version, great work",
    ],
}

TEXTS = [
    "My dashboard stopped loading after the update, can you help?",
    "How much would the enterprise plan cost for 50 seats?",
    "Honestly the new editor is the best thing you've shipped this year!",
    "asdf qwerty",
]


class AITransformationChain:
    """Chain of AI-powered transformations (the seed's class)."""

    def __init__(self, embedder: EmbeddingTransform) -> None:
        self.embedder = embedder
        self.chain = TransformationChain("nlp")

    def build_nlp_chain(self) -> TransformationChain:
        self.chain.add_transformation(
            "tokenization",
            TokenizationTransform(model="all-MiniLM-L6-v2", include_special_tokens=True),
        )
        self.chain.add_transformation("embedding", self.embedder)
        self.chain.add_transformation(
            "classification",
            ClassificationTransform(
                labels=INTENTS, confidence_threshold=0.8, embedder=self.embedder
            ),
            input="embedding",  # classify the vector the embedding step made
        )
        self.chain.add_transformation("sentiment", SentimentTransform())
        self.chain.add_transformation(
            "enrichment", EnrichmentTransform(add_metadata=True, include_confidence=True)
        )
        return self.chain

    async def process_text_stream(self, text_stream):
        nlp_chain = self.build_nlp_chain()
        await nlp_chain.open()
        async for text in text_stream:
            result = await nlp_chain.transform(text)
            yield {
                "original": text,
                "tokens": result.tokens,
                "embedding": result.embedding,
                "classification": result.classification,
                "metadata": result.metadata,
            }


async def text_source():
    for text in TEXTS:
        yield text
        await trio.lowlevel.checkpoint()


async def main() -> None:
    embedder = EmbeddingTransform()  # the packaged all-MiniLM-L6-v2
    await embedder.open()
    transform_chain = AITransformationChain(embedder)
    labels = []
    async for result in transform_chain.process_text_stream(text_source()):
        print(f"{result['original'][:60]!r}")
        print(f"  tokens: {len(result['tokens'])}, embedding: {result['embedding'].shape}")
        print(f"  Classified as: {result['classification']['label']}")
        print(f"  Confidence: {result['classification']['confidence']:.2f}")
        print(
            f"  metadata: words={result['metadata']['words']}, steps={result['metadata']['steps']}"
        )
        labels.append(result["classification"]["label"])
    assert labels == ["support_request", "purchase_intent", "feedback", "unknown"], labels

    # Route the same stream: a learned model (similarity to examples), patterns as fallback.
    routed: dict[str, list[str]] = {}
    router = IntelligentEventRouter(embedder=embedder, threshold=0.5)
    router.add_route(
        "helpdesk",
        lambda text: routed.setdefault("helpdesk", []).append(text),
        examples=["the app is broken, please help", "the page stopped loading", "I get an error"],
    )
    router.add_route(
        "sales",
        lambda text: routed.setdefault("sales", []).append(text),
        examples=["what does the pro plan cost?", "I want to buy more licenses"],
    )
    router.add_route(
        "product",
        lambda text: routed.setdefault("product", []).append(text),
        pattern=r"(?i)editor|feature",
    )
    router.set_default(lambda text: routed.setdefault("triage", []).append(text))
    for decision in await router.route_batch(TEXTS):
        print(
            f"route {decision.route or 'triage'!s:<9} by {decision.method:<7} {decision.event[:50]!r}"
        )
    assert [len(routed.get(k, [])) for k in ("helpdesk", "sales", "product", "triage")] == [
        1,
        1,
        1,
        1,
    ], routed


if __name__ == "__main__":
    trio.run(main)
