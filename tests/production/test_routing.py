"""EventRouter: patterns, first-match and fan-out, defaults, graph branches, extension."""

from __future__ import annotations

import re
from typing import Any

import pytest
import trio

from haive.dataflow import (
    ConfigError,
    Event,
    EventPipeline,
    GraphError,
    StreamingPipeline,
    TransformNode,
)
from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.builtins.sources import IterableSource
from haive.dataflow.pipelines.routing import EventRouter, Pattern, Route, RouterNode, RoutingError


def test_patterns_match_types_fields_and_predicates() -> None:
    event = Event(
        type="agent_response", data={"agent_id": "a-1", "confidence": 0.9, "meta": {"lang": "fr"}}
    )
    assert Pattern(type="agent_*").matches(event)
    assert not Pattern(type="analysis_*").matches(event)
    assert Pattern(fields={"agent_id": "a-1", "meta.lang": "fr"}).matches(event)
    assert Pattern(fields={"confidence": lambda c: c > 0.8}).matches(event)
    assert Pattern(fields={"agent_id": re.compile(r"^a-\d$")}).matches(event)
    assert Pattern(fields={"agent_id": {"a-1", "a-2"}, "confidence": float}).matches(event)
    assert not Pattern(fields={"missing.path": None}).matches(event)
    assert Pattern(where=lambda e: e.key is None).matches(event)
    assert Pattern(type="agent_response", fields={"confidence": 0.1}).matches(event) is False
    with pytest.raises(ConfigError, match=r"Pattern\.type must be a string"):
        Pattern(type=3)  # type: ignore[arg-type]


async def test_first_match_all_matches_and_default() -> None:
    calls: list[tuple[str, Any]] = []
    for mode, expected in (("first", ["urgent"]), ("all", ["urgent", "alerts"])):
        router = EventRouter(mode=mode)  # type: ignore[arg-type]
        router.add_route(
            {"severity": "critical"}, lambda e: calls.append(("urgent", e)), name="urgent"
        )
        router.add_route("alert", lambda e: calls.append(("alerts", e)), name="alerts")
        assert await router.route_event({"type": "alert", "severity": "critical"}) == expected
        assert await router.route_event({"type": "tick"}) == []
        assert router.stats.unrouted == 1
        router.set_default(lambda e: calls.append(("default", e)))
        assert await router.route_event({"type": "tick"}) == ["default"]
        assert router.stats.routed["default"] == 1 and router.stats.events == 3


async def test_async_handlers_and_seed_style_routing() -> None:
    received: list[str] = []

    async def handle(event: dict) -> None:
        await trio.lowlevel.checkpoint()
        received.append(event["content"])

    router = EventRouter()
    router.add_route("agent_response", handle)
    assert router.matches_pattern({"type": "agent_response"}, "agent_*")
    await router.route_event({"type": "agent_response", "content": "hello"})
    assert received == ["hello"]


async def test_failing_handlers_and_predicates_name_the_route() -> None:
    router = EventRouter()
    router.add_route(lambda e: e["x"] > 1, print, name="big")
    with pytest.raises(RoutingError, match="route 'big' failed: KeyError"):
        await router.route_event({"y": 1})

    def boom(event: Any) -> None:
        raise ValueError("handler broke")

    router = EventRouter()
    router.add_route("t", boom)
    with pytest.raises(RoutingError, match="route 't' failed: ValueError: handler broke"):
        await router.route_event({"type": "t"})


def test_building_errors_are_clear() -> None:
    router = EventRouter()
    with pytest.raises(ConfigError, match="needs a handler or a target"):
        router.add_route("x")
    router.add_route("x", print)
    with pytest.raises(ConfigError, match="duplicate route name 'x'"):
        router.add_route("x", print)
    with pytest.raises(ConfigError, match="mode must be one of"):
        EventRouter(mode="some")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="no route 'y'; routes: x"):
        router.get_route("y")
    with pytest.raises(ConfigError, match="a route pattern must be"):
        router.add_route(42, print)  # type: ignore[arg-type]


def _branching_pipeline(router: EventRouter) -> EventPipeline:
    pipeline = EventPipeline("branches")
    pipeline.add_node(router.as_node("route"))
    pipeline.add_node(TransformNode(name="alerts", transform_fn=lambda e: ("alert", e["id"])))
    pipeline.add_node(TransformNode(name="metrics", transform_fn=lambda e: ("metric", e["id"])))
    pipeline.add_node(TransformNode(name="other", transform_fn=lambda e: ("other", e["id"])))
    pipeline.connect("input", "route")
    for branch in ("alerts", "metrics", "other"):
        pipeline.connect("route", branch).connect(branch, "output")
    return pipeline


async def test_router_node_sends_events_down_the_chosen_branches() -> None:
    router = EventRouter(mode="all")
    router.add_route("alert", target="alerts")
    router.add_route({"value": lambda v: v is not None}, target="metrics", name="has_value")
    router.set_default(target="other")
    pipeline = _branching_pipeline(router)
    async with pipeline.process() as handle:
        both = await handle.send({"type": "alert", "id": 1, "value": 3})
        one = await handle.send({"type": "alert", "id": 2})
        neither = await handle.send({"type": "log", "id": 3})
    assert sorted(both.outputs) == [("alert", 1), ("metric", 1)]
    assert one.outputs == [("alert", 2)]
    assert neither.outputs == [("other", 3)]
    assert router.stats.routed == {"alerts": 2, "has_value": 1, "default": 1}


async def test_router_node_stream_mode_keeps_per_branch_order() -> None:
    router = EventRouter()
    router.add_route({"id": lambda i: i % 2 == 0}, target="alerts", name="even")
    router.add_route({"id": lambda i: i % 3 == 0}, target="metrics", name="threes")
    router.set_default(target="other")
    pipeline = _branching_pipeline(router)
    outputs: list[tuple[str, int]] = []
    async with pipeline.process() as handle:
        async with trio.open_nursery() as nursery:

            async def collect() -> None:
                async for out in handle.results():
                    outputs.append(out)

            nursery.start_soon(collect)
            await handle.feed_batch([{"id": i} for i in range(30)])
            handle.close_input()
    by_branch: dict[str, list[int]] = {}
    for branch, i in outputs:
        by_branch.setdefault(branch, []).append(i)
    assert by_branch["alert"] == list(range(0, 30, 2))
    assert by_branch["metric"] == [i for i in range(30) if i % 2 and i % 3 == 0]
    assert len(outputs) == 30


def test_wiring_is_checked_when_the_graph_is_validated() -> None:
    router = EventRouter()
    router.add_route("alert", target="alerts")
    router.add_route("metric", target="metricz")
    router.set_default(target="other")
    pipeline = _branching_pipeline(router)
    with pytest.raises(GraphError, match=r"routes to 'metricz', which is not connected"):
        pipeline.validate()

    router = EventRouter()
    router.add_route("alert", target="alerts")
    router.set_default(target="other")
    with pytest.raises(GraphError, match="connected to 'metrics' but no route targets it"):
        _branching_pipeline(router).validate()


async def test_predicate_errors_follow_the_error_policy() -> None:
    router = EventRouter(name="r")
    router.add_route({"n": lambda n: 10 / n > 1}, target="output", name="small")
    router.set_default(target="output")
    pipeline = StreamingPipeline("p")
    pipeline.set_source(IterableSource([{"n": 1}, {"n": 0}, {"n": 20}]))
    pipeline.add_node(RouterNode("r", router))
    sink = MemorySink()
    pipeline.set_sink(sink)
    async with pipeline.run() as stream:
        results = [r async for r in stream]
    assert sink.items == [{"n": 1}, {"n": 20}]
    [failed] = [r for r in results if not r.success]
    assert failed.node == "r" and "route 'small' failed: ZeroDivisionError" in str(failed.error)


async def test_a_predicting_router_builds_on_decide() -> None:
    class KeywordRouter(EventRouter):
        """Stands in for a model: predicts a route name, falls back to patterns."""

        async def decide(self, event: Any) -> list[Route]:
            if "refund" in event.get("text", ""):
                return [self.get_route("billing")]
            return await super().decide(event)

    router = KeywordRouter()
    router.add_route({"priority": "high"}, target="alerts", name="urgent")
    router.add_route(lambda e: False, target="metrics", name="billing")
    router.set_default(target="other")
    pipeline = _branching_pipeline(router)
    async with pipeline.process() as handle:
        predicted = await handle.send({"id": 1, "text": "I want a refund"})
        matched = await handle.send({"id": 2, "priority": "high"})
        fallback = await handle.send({"id": 3})
    assert (predicted.outputs, matched.outputs, fallback.outputs) == (
        [("metric", 1)],
        [("alert", 2)],
        [("other", 3)],
    )
