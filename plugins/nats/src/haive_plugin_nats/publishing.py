"""Publishing a batch to JetStream and waiting for its publish acks (in a bridge's loop)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import nats.errors
import nats.js.errors
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import Header
from nats.js.client import NO_RESPONDERS_STATUS, JetStreamContext


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


#: Publishes sent and not yet acknowledged at most, per publisher (as nats-py's own
#: ``publish_async`` default): a batch larger than this waits for acks as it goes.
MAX_IN_FLIGHT = 4000


class _Round:
    """One batch being published: an outcome per message, set as its publish ack comes."""

    __slots__ = ("all_answered", "outcomes", "room", "waiting")

    def __init__(self, size: int) -> None:
        self.outcomes: list[bool | BaseException | None] = [None] * size
        self.waiting = 0
        self.all_answered = asyncio.Event()
        self.room = asyncio.Event()


class AckedPublisher:
    """Publishes batches to JetStream and collects their publish acks through one reply
    inbox of its own (in the loop of the client's bridge).

    The same work as nats-py's ``JetStreamContext.publish_async`` per message, without
    what that costs per message (a semaphore wait under ``asyncio.wait_for``, a random
    token, a future with its callback): each message is published with the reply subject
    ``<inbox>.<round>.<index>``, and the ack's subject says which message it confirms.
    Acks of an earlier round (that timed out) are ignored. At most :data:`MAX_IN_FLIGHT`
    publishes wait for their ack.

    Example (needs a NATS server with JetStream; the sink's tests run it)::

        >>> import asyncio, nats, uuid
        >>> from haive_plugin_nats.connection import DEFAULT_URL
        >>> async def main():
        ...     client = await nats.connect(DEFAULT_URL)
        ...     js = client.jetstream()
        ...     name = f"DOC-{uuid.uuid4().hex[:8]}"
        ...     await js.add_stream(name=name, subjects=[f"{name}.>"], storage="memory")
        ...     publisher = AckedPublisher(client)
        ...     batch = [(f"{name}.a", b"1", {"Nats-Msg-Id": "x"}),
        ...              (f"{name}.a", b"1", {"Nats-Msg-Id": "x"})]   # the same id twice
        ...     outcomes = await publisher.publish_all(batch, 5.0)
        ...     await js.delete_stream(name)
        ...     await client.close()
        ...     return outcomes                  # confirmed; the second as a duplicate
        >>> asyncio.run(main())
        [False, True]
    """

    def __init__(self, client: Client) -> None:
        self._client = client
        self._prefix = ""
        self._round_number = 0
        self._round: _Round | None = None

    async def publish_all(
        self, messages: list[tuple[str, bytes, dict[str, str]]], ack_within: float
    ) -> list[bool | BaseException]:  # in the bridge's loop
        """Publish every message pipelined, in order, then wait for the publish acks: per
        message, whether JetStream called it a duplicate (confirmed), or the error."""
        client = self._client
        if not self._prefix:
            self._prefix = client.new_inbox()
            await client.subscribe(f"{self._prefix}.*.*", cb=self._on_ack)
        self._round_number += 1
        current = self._round = _Round(len(messages))
        outcomes = current.outcomes
        reply_prefix = f"{self._prefix}.{self._round_number}."
        publish = client.publish
        try:
            try:
                # One deadline for publishing the batch (waiting for room among the
                # publishes in flight), another for the acks after the last one.
                async with asyncio.timeout(ack_within):
                    for index, (subject, payload, headers) in enumerate(messages):
                        if current.waiting >= MAX_IN_FLIGHT:
                            current.room.clear()
                            await current.room.wait()
                        current.waiting += 1
                        try:
                            await publish(
                                subject, payload, reply=f"{reply_prefix}{index}", headers=headers
                            )
                        except nats.errors.Error as error:
                            current.waiting -= 1
                            outcomes[index] = error
            except TimeoutError:
                stalled = TimeoutError(f"no room to publish within {ack_within}s (acks not coming)")
                outcomes[:] = [stalled if outcome is None else outcome for outcome in outcomes]
                # What was published and not acknowledged times out below, as it would.
            if current.waiting > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(ack_within):
                        await current.all_answered.wait()
        finally:
            self._round = None  # acks still coming are dropped
        late = TimeoutError(f"no publish ack within {ack_within}s")
        return [late if outcome is None else outcome for outcome in outcomes]

    async def _on_ack(self, msg: Msg) -> None:  # in the bridge's loop
        current = self._round
        if current is None:
            return
        prefix, _, index_text = msg.subject.rpartition(".")
        if not prefix.endswith(f".{self._round_number}"):
            return  # an ack of an earlier round, which timed out
        index = int(index_text)
        outcomes = current.outcomes
        if outcomes[index] is not None:
            return
        outcome: bool | BaseException
        if msg.headers and msg.headers.get(Header.STATUS) == NO_RESPONDERS_STATUS:
            outcome = nats.js.errors.NoStreamResponseError()
        else:
            try:
                answer = orjson.loads(msg.data)
            except orjson.JSONDecodeError as error:
                outcome = error
            else:
                if "error" in answer:
                    try:
                        nats.js.errors.APIError.from_error(answer["error"])
                    except nats.js.errors.APIError as error:
                        outcome = error
                    else:  # pragma: no cover - from_error always raises
                        outcome = nats.js.errors.APIError()
                else:
                    outcome = bool(answer.get("duplicate"))
        outcomes[index] = outcome
        current.waiting -= 1
        if current.waiting < MAX_IN_FLIGHT:
            current.room.set()
        if current.waiting == 0:
            current.all_answered.set()
