"""Publishing a batch to JetStream and waiting for its publish acks (in a bridge's loop)."""

from __future__ import annotations

import asyncio
from typing import Any

import nats.errors
from nats.js.client import JetStreamContext


async def publish_all(
    js: JetStreamContext, messages: list[tuple[str, bytes, dict[str, str]]], ack_within: float
) -> list[bool | BaseException]:  # in the bridge's loop
    """Publish every message pipelined, then wait for the publish acks: per message, whether
    JetStream called it a duplicate (confirmed), or the error."""
    outcomes: list[bool | BaseException] = []
    futures: list[asyncio.Future[Any] | None] = []
    # One deadline for the whole batch (nats-py's per-call wait_stall would start a task and
    # a timer per message): it bounds waiting for room among nats-py's pending publishes.
    try:
        async with asyncio.timeout(ack_within):
            for subject, payload, headers in messages:
                try:
                    futures.append(await js.publish_async(subject, payload, headers=headers))
                except nats.errors.Error as error:
                    futures.append(None)
                    outcomes.append(error)
    except TimeoutError:
        stalled = TimeoutError(f"no room to publish within {ack_within}s (acks not coming)")
        while len(futures) < len(messages):
            futures.append(None)
            outcomes.append(stalled)
    pending_futures = [future for future in futures if future is not None]
    if pending_futures:
        await asyncio.wait(pending_futures, timeout=ack_within)
    outcomes.reverse()  # the publish errors, in order, popped below
    result: list[bool | BaseException] = []
    for future in futures:
        if future is None:
            result.append(outcomes.pop())
        elif not future.done():
            future.cancel()
            result.append(TimeoutError(f"no publish ack within {ack_within}s"))
        elif (failure := future.exception()) is not None:
            result.append(failure)
        else:
            result.append(bool(future.result().duplicate))
    return result
