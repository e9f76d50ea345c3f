"""Event routing as in the seed: an EventRouter with handlers, and the same router as a
branching node of an EventPipeline (alerts, metrics and everything else take different paths).

Run: ``python examples/production_routing.py``.
"""

from __future__ import annotations

import trio

from haive.dataflow.streaming import (
    AggregateNode,
    EventPipeline,
    EventRouter,
    TransformNode,
)


async def handlers_demo() -> None:
    router = EventRouter(mode="all")
    log: list[str] = []

    @router.route("agent_*")
    async def on_agent(event: dict) -> None:
        log.append(f"agent {event['agent_id']}: {event['content']}")

    @router.route({"confidence": lambda c: c > 0.8}, name="confident")
    def on_confident(event: dict) -> None:
        log.append(f"act on {event['type']} ({event['confidence']:.0%})")

    router.set_default(lambda event: log.append(f"ignored {event['type']}"))

    for event in (
        {
            "type": "agent_response",
            "agent_id": "analyzer-001",
            "content": "uptrend",
            "confidence": 0.9,
        },
        {"type": "analysis_update", "confidence": 0.5},
        {"type": "heartbeat"},
    ):
        await router.route_event(event)
    print("\n".join(log))
    print("routed:", router.stats.routed)


async def branches_demo() -> None:
    router = EventRouter(name="triage")
    router.add_route({"severity": {"high", "critical"}}, target="page_oncall", name="urgent")
    router.add_route("metric", target="rollup")
    router.set_default(target="archive")

    pipeline = EventPipeline("triage-pipeline")
    pipeline.add_node(router.as_node())
    pipeline.add_node(TransformNode(name="page_oncall", transform_fn=lambda e: f"PAGE: {e['msg']}"))
    pipeline.add_node(
        AggregateNode(
            name="rollup",
            window_size=3,
            aggregate_fn=lambda events: f"avg {sum(e['value'] for e in events) / len(events):.1f}",
        )
    )
    pipeline.add_node(TransformNode(name="archive", transform_fn=lambda e: f"archived {e['type']}"))
    pipeline.connect("input", "triage")
    for branch in ("page_oncall", "rollup", "archive"):
        pipeline.connect("triage", branch).connect(branch, "output")

    events = [
        {"type": "log", "severity": "critical", "msg": "disk full"},
        {"type": "metric", "value": 10},
        {"type": "metric", "value": 20},
        {"type": "login"},
        {"type": "metric", "value": 60},
    ]
    async with pipeline.process() as processor:
        for event in events:
            result = await processor.send(event)
            for output in result.outputs:
                print(output)


def main() -> None:
    trio.run(handlers_demo)
    trio.run(branches_demo)


if __name__ == "__main__":
    main()
