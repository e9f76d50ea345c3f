"""The fleet: ``haive worker`` processes sharing Redis publish their state there, the
console lists them.

:class:`FleetPublisher` is a pipeline monitor: every ``interval`` it writes the worker's
state (host, pid, pipeline, group membership, counters, paused) as JSON to
``<prefix>:<worker id>`` with a time to live of ``ttl``, so a worker that stops or dies
drops out of the list by itself. :class:`FleetView` reads them (``SCAN`` + ``MGET``).
Both use ``haive_plugin_redis.RedisClient`` (install ``haive-plugin-console[fleet]``).
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import orjson
import trio

from haive.dataflow.errors import ConfigError
from haive.dataflow.io.groups import GroupMemberSource, layers
from haive.dataflow.runtime.units import Duration
from haive.dataflow.runtime.validation import NON_EMPTY_STR, duration

DEFAULT_PREFIX = "haive:fleet"
#: When this process started (what a worker publishes as ``started``).
PROCESS_STARTED = time.time()


def _client(url: str) -> Any:
    try:
        from haive_plugin_redis import RedisClient
    except ImportError as exc:  # pragma: no cover - the extra names it
        raise ConfigError(
            "the fleet view needs haive-plugin-redis: pip install 'haive-plugin-console[fleet]'"
        ) from exc
    return RedisClient(url)


def membership_of(pipeline: Any) -> dict[str, Any]:
    """The group membership of ``pipeline``'s source (``{}`` when it joins no group or
    has not joined yet), JSON-friendly."""
    member = next((s for s in layers(pipeline.source) if isinstance(s, GroupMemberSource)), None)
    if member is None:
        return {}
    try:
        membership = dict(member.membership())
    except Exception:  # not joined yet: nothing to tell
        return {}
    loaded: dict[str, Any] = orjson.loads(orjson.dumps(membership, default=str))
    return loaded


def partitions_of(worker: dict[str, Any]) -> list[dict[str, Any]]:
    """The partitions a worker owns, with their lag and pending counts, from its
    membership (a keyed-partition source reports ``owned`` and ``partition_metrics``).

    Example::

        >>> partitions_of({"id": "h:1", "membership": {"stream": "s", "consumer": "w1",
        ...     "owned": [2], "partition_metrics": {"2": {"epoch": 4, "lag": 7, "pending": 1},
        ...                                          "5": {"epoch": None, "lag": 0}}}})
        [{'stream': 's', 'partition': 2, 'owner': 'w1', 'worker': 'h:1', 'lag': 7, 'pending': 1, 'epoch': 4}]
    """
    membership = worker.get("membership") or {}
    owned = membership.get("owned")
    if not isinstance(owned, list):
        return []
    metrics = membership.get("partition_metrics") or {}
    rows = []
    for partition in owned:
        figures = metrics.get(str(partition)) or {}
        rows.append(
            {
                "stream": membership.get("stream"),
                "partition": partition,
                "owner": membership.get("consumer"),
                "worker": worker.get("id"),
                "lag": figures.get("lag"),
                "pending": figures.get("pending"),
                "epoch": figures.get("epoch"),
            }
        )
    return rows


def worker_state(pipeline: Any, run: Any | None) -> dict[str, Any]:
    """What a worker publishes about itself.

    Example::

        >>> from haive.dataflow import StreamingPipeline
        >>> state = worker_state(StreamingPipeline("orders"), None)
        >>> state["pipelines"], state["running"], state["pid"] == os.getpid()
        (['orders'], False, True)
    """
    return {
        "id": f"{socket.gethostname()}:{os.getpid()}",
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "pipelines": [pipeline.name],
        "running": run is not None,
        "paused": pipeline.paused,
        "read": run.read if run is not None else 0,
        "processed": run.processed if run is not None else 0,
        "failed": run.failed if run is not None else 0,
        "membership": membership_of(pipeline),
        "started": PROCESS_STARTED,
        "updated": time.time(),
    }


class FleetPublisher:
    """Publishes this worker's state to Redis every ``interval``, kept for ``ttl``.

    Attach it in the pipeline file that ``haive worker`` runs::

        FleetPublisher("redis://127.0.0.1:6379").watch(pipeline)

    Example::

        >>> FleetPublisher("redis://127.0.0.1:6379", interval="1s", ttl="5s").ttl
        5.0
        >>> FleetPublisher("redis://127.0.0.1:6379", interval="5s", ttl="1s")
        Traceback (most recent call last):
        ...
        haive.dataflow.errors.ConfigError: FleetPublisher(ttl=1.0): ttl must be longer than interval (5.0 s), got 1.0
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        interval: Duration = 2.0,
        ttl: Duration = 10.0,
    ) -> None:
        NON_EMPTY_STR.check("FleetPublisher", "url", url)
        NON_EMPTY_STR.check("FleetPublisher", "prefix", prefix)
        self.url = url
        self.prefix = prefix
        self.interval = duration("FleetPublisher", "interval", interval)
        self.ttl = duration("FleetPublisher", "ttl", ttl)
        if self.ttl <= self.interval:
            raise ConfigError(
                f"FleetPublisher(ttl={self.ttl!r}): ttl must be longer than interval "
                f"({self.interval} s), got {self.ttl!r}"
            )
        self.published = 0

    def watch(self, pipeline: Any) -> None:
        pipeline.add_monitor(self)

    async def monitor(self, run: Any) -> None:
        client = _client(self.url)
        key = f"{self.prefix}:{socket.gethostname()}:{os.getpid()}:{run.pipeline.name}"
        try:
            while True:
                state = worker_state(run.pipeline, run)
                await client.execute("SET", key, orjson.dumps(state), "PX", int(self.ttl * 1000))
                self.published += 1
                await trio.sleep(self.interval)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await client.execute("DEL", key)  # a clean stop leaves the list at once
            client.close()


class FleetView:
    """The workers that published to ``prefix`` on the Redis at ``url``.

    Example::

        >>> import trio
        >>> view = FleetView("redis://127.0.0.1:6379", prefix="haive:fleet:doc-empty")
        >>> trio.run(view.workers)
        []
        >>> view.close()
    """

    def __init__(self, url: str, *, prefix: str = DEFAULT_PREFIX) -> None:
        NON_EMPTY_STR.check("FleetView", "url", url)
        NON_EMPTY_STR.check("FleetView", "prefix", prefix)
        self.prefix = prefix
        self.client = _client(url)

    async def workers(self) -> list[dict[str, Any]]:
        keys: list[bytes] = []
        cursor: Any = 0
        while True:
            cursor, page = await self.client.execute(
                "SCAN", cursor, "MATCH", f"{self.prefix}:*", "COUNT", 500
            )
            keys += page
            if int(cursor) == 0:
                break
        if not keys:
            return []
        values = await self.client.execute("MGET", *sorted(keys))
        out = []
        for value in values:
            if value is None:  # expired between SCAN and MGET
                continue
            state = orjson.loads(value)
            if isinstance(state, dict):
                out.append({**state, "local": False})
        return out

    def close(self) -> None:
        self.client.close()
