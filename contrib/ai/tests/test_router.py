"""IntelligentEventRouter: routes by embedding similarity to examples or by a classifier,
with pattern rules as fallback, using the real model."""

from __future__ import annotations

import re

import pytest
import trio
from haive_contrib_ai.classification import train_classifier
from haive_contrib_ai.router import IntelligentEventRouter, RouteDecision

from haive.dataflow import ConfigError, Event, StreamingPipeline
from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.builtins.sources import IterableSource

EXAMPLES = {
    "billing": ["I was charged twice", "please refund my payment", "my invoice is wrong"],
    "outage": ["the service is down", "the website does not load", "servers are returning errors"],
}


def build_router(embedder, handled):
    router = IntelligentEventRouter(embedder=embedder, threshold=0.45)

    async def on_billing(event):
        await trio.lowlevel.checkpoint()
        handled.append(("billing", event))
        return "ticket-1"

    router.add_route("billing", on_billing, examples=EXAMPLES["billing"])
    router.add_route("outage", lambda e: handled.append(("outage", e)), examples=EXAMPLES["outage"])
    router.add_route("audit", lambda e: handled.append(("audit", e)), pattern={"type": "audit.*"})
    router.add_route(
        "security",
        lambda e: handled.append(("security", e)),
        pattern=re.compile(r"(?i)password|2fa"),
    )
    router.set_default(lambda e: handled.append(("default", e)))
    return router


async def test_model_routes_paraphrases_of_the_examples(embedder):
    handled = []
    router = build_router(embedder, handled)
    decision = await router.route_event({"text": "Why did you bill my card two times?"})
    assert isinstance(decision, RouteDecision)
    assert (decision.route, decision.method, decision.handled, decision.result) == (
        "billing",
        "model",
        True,
        "ticket-1",
    )
    assert decision.confidence >= 0.45
    decision = await router.route_event("Your site is completely unreachable right now")
    assert (decision.route, decision.method) == ("outage", "model")
    assert [name for name, _ in handled] == ["billing", "outage"]


async def test_pattern_rules_then_default_when_the_model_is_unsure(embedder):
    handled = []
    router = build_router(embedder, handled)
    audit = await router.route_event({"type": "audit.login", "user": "ann"})
    assert (audit.route, audit.method) == ("audit", "pattern")
    assert audit.candidate is not None and audit.confidence < 0.45  # the model's guess, unused
    security = await router.route_event("How often should I rotate my password?")
    assert (security.route, security.method) == ("security", "pattern")
    other = await router.route_event("The weather in Lisbon is sunny")
    assert (other.route, other.method, other.handled) == (None, "default", True)
    assert [name for name, _ in handled] == ["audit", "security", "default"]


async def test_router_with_a_trained_classifier(embedder, intents):
    texts = [r["text"] for r in intents]
    labels = [r["label"] for r in intents]
    model = await train_classifier(texts, labels, embedder=embedder)
    routed = []
    router = IntelligentEventRouter(embedder=embedder, classifier=model, threshold=0.4)
    for label in ("billing", "shipping", "technical", "account"):
        router.add_route(label, lambda e, label=label: routed.append(label))
    decisions = await router.route_batch(
        ["My parcel is lost", "The app keeps freezing", "Change my e-mail address"]
    )
    assert [d.route for d in decisions] == ["shipping", "technical", "account"]
    assert routed == ["shipping", "technical", "account"]


async def test_router_as_a_pipeline_node_with_events(embedder):
    handled = []
    router = build_router(embedder, handled)
    events = [
        Event(type="ticket", data={"text": "refund my last payment please"}),
        Event(type="audit.export", data={"rows": 10}),
    ]
    pipeline = StreamingPipeline("route")
    pipeline.set_source(IterableSource(events))
    pipeline.add_node(router)
    sink = MemorySink()
    pipeline.set_sink(sink)
    await pipeline.execute()
    assert [(d.route, d.method) for d in sink.items] == [("billing", "model"), ("audit", "pattern")]
    assert sink.items[0].event is events[0]


async def test_patterns_alone_need_no_model():
    router = IntelligentEventRouter()
    router.add_route("big", pattern={"data.amount": lambda v: v > 100})
    router.add_route("eur", pattern={"currency": "EUR"})
    assert (await router.route_event({"data": {"amount": 500}})).route == "big"
    assert (await router.route_event({"currency": "EUR", "data": {"amount": 5}})).route == "eur"
    none = await router.route_event({"currency": "USD"})
    assert (none.route, none.method, none.handled, none.confidence) == (None, "none", False, None)


def test_bad_routes_are_clear():
    router = IntelligentEventRouter()
    router.add_route("a", pattern="x")
    with pytest.raises(ConfigError, match="route 'a' already exists"):
        router.add_route("a")
    with pytest.raises(ConfigError, match="invalid pattern"):
        router.add_route("b", pattern="(")
    with pytest.raises(ConfigError, match="unknown route 'c'"):
        router.learn("c", ["example"])
    with pytest.raises(ConfigError, match="handler must be callable"):
        router.add_route("d", handler=3)
