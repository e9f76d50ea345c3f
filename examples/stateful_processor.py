"""The seed's "Stateful Stream Processing" snippet (StatefulAIProcessor), on trio.

Sessions (30 min timeout), a 5-minute window of recent data and the decisions all live in
one ``StateStore``: a SQLite file here, so it runs without a server and survives restarts
(set ``HAIVE_STATE_URL=redis://127.0.0.1:6379`` to use Redis when haive-plugin-redis is
installed). The second part does the same per-user work the framework way: a
``StatefulProcessor`` node and a windowed aggregate in a checkpointed ``StreamingPipeline``.
"""

from __future__ import annotations

import os
import random
import statistics
import tempfile
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import attrs
import trio

from haive.dataflow.state import Mean
from haive.dataflow.streaming import (
    IterableSource,
    MemorySink,
    SessionState,
    StatefulProcessor,
    StateStore,
    StreamingPipeline,
    TumblingWindow,
    WindowedAggregateNode,
    WindowState,
)

QUICK = bool(os.environ.get("HAIVE_EXAMPLE_QUICK"))
EVENTS = 200 if QUICK else 5000


@attrs.frozen
class UserEvent:
    user_id: str
    data: dict[str, Any]


def analyze_patterns(window_data: list[dict[str, Any]]) -> dict[str, Any]:
    """Stand-in for a model: the trend of recent values."""
    values = [d["value"] for d in window_data]
    half = len(values) // 2 or 1
    trend = statistics.fmean(values[half:] or values) - statistics.fmean(values[:half])
    return {"samples": len(values), "mean": statistics.fmean(values), "trend": trend}


def get_personalization(session: Any) -> dict[str, Any]:
    return {"engaged": session.event_count >= 5, "events": session.event_count}


class StatefulAIProcessor:
    """AI processor with state management."""

    def __init__(self, state_url: str) -> None:
        self.state_store = StateStore(state_url, namespace="ai")
        self.window_state = WindowState(window_size="5m", store=self.state_store)
        self.session_state = SessionState(timeout="30m", store=self.state_store)

    async def process_with_state(
        self, event_stream: AsyncIterator[UserEvent]
    ) -> AsyncIterator[Any]:
        """Process events with state tracking."""
        async for event in event_stream:
            # Get user session
            session = await self.session_state.get_or_create(event.user_id)

            # Update session state
            session.event_count += 1
            session.last_activity = datetime.now()

            # Window aggregation
            window_data = await self.window_state.add_to_window(event.data)

            # Process with context
            result = await self.process_event_with_context(
                event=event, session=session, window_data=window_data
            )

            # Update state
            await self.session_state.save(session)
            yield result

    async def process_event_with_context(
        self, event: UserEvent, session: Any, window_data: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """Process event with full context."""
        patterns = analyze_patterns(window_data)
        personalization = get_personalization(session)
        return await self.ai_decide(event=event, patterns=patterns, personalization=personalization)

    async def ai_decide(
        self, event: UserEvent, patterns: dict[str, Any], personalization: dict[str, Any]
    ) -> dict[str, Any]:
        await trio.lowlevel.checkpoint()  # a model call would be awaited here
        if patterns["trend"] > 5 and personalization["engaged"]:
            action = "recommend"
        elif event.data["value"] > 90:
            action = "alert"
        else:
            action = "observe"
        return {"user": event.user_id, "action": action, "events": personalization["events"]}


async def event_source(n: int) -> AsyncIterator[UserEvent]:
    rnd = random.Random(7)
    for i in range(n):
        yield UserEvent(f"user-{rnd.randrange(5)}", {"value": rnd.randrange(100) + i % 20})
        await trio.lowlevel.checkpoint()


class EngagementCounter(StatefulProcessor):
    """The framework's way: state per user, read and written in one round trip per batch."""

    def initial_state(self, key: str) -> int:
        return 0

    def process(self, item: dict[str, Any], state: Any) -> dict[str, Any]:
        state.value += 1
        return {**item, "seen": state.value}


async def main() -> None:
    workdir = tempfile.mkdtemp(prefix="haive-stateful-")
    state_url = os.environ.get("HAIVE_STATE_URL", os.path.join(workdir, "state.db"))

    processor = StatefulAIProcessor(state_url)
    actions: dict[str, int] = {}
    async with processor.state_store:
        async for decision in processor.process_with_state(event_source(EVENTS)):
            actions[decision["action"]] = actions.get(decision["action"], 0) + 1
        sessions = await processor.session_state.active()
    print(f"decisions: {actions}")
    print(f"sessions: {sorted((s.session_id, s.event_count) for s in sessions)}")
    assert sum(actions.values()) == EVENTS
    assert sum(s.event_count for s in sessions) == EVENTS

    # The same per-user counting as pipeline nodes, checkpointed into the same SQLite file.
    rnd = random.Random(3)
    events = [
        {"user": f"user-{rnd.randrange(5)}", "ts": i * 0.5, "value": rnd.randrange(100)}
        for i in range(EVENTS)
    ]
    store = StateStore(os.path.join(workdir, "pipeline.db"), namespace="pipeline")
    pipeline = StreamingPipeline("engagement")
    pipeline.set_source(IterableSource(events))
    pipeline.add_processor(EngagementCounter("engagement", store=store, key="user"))
    pipeline.add_processor(
        WindowedAggregateNode(
            name="per_minute",
            window=TumblingWindow("1m"),
            key="user",
            timestamp="ts",
            aggregate=Mean("value"),
        )
    )
    sink = MemorySink()
    pipeline.set_sink(sink)
    checkpointer = pipeline.enable_checkpointing(store, every=50)
    report = await pipeline.execute()
    async with store:
        counts = dict(await store.scan("engagement:"))
    print(
        f"pipeline: {report.read} events -> {len(sink.items)} per-minute windows, "
        f"{checkpointer.stats.taken} checkpoints, per-user counts {counts}"
    )
    assert sum(counts.values()) == EVENTS
    assert sum(r.count for r in sink.items) == EVENTS


if __name__ == "__main__":
    trio.run(main)
