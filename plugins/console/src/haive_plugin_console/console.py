"""The console's model: the pipelines it watches and the actions it takes on them.

Every action is logged on the ``haive.console`` logger as one structured record (its
``extra`` fields: ``action``, ``pipeline``, ``client``, ``outcome`` and the action's own).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterable
from typing import Any

import attrs
import trio
from haive_plugin_observability.alerts import AlertManager
from haive_plugin_observability.analytics import StreamAnalytics
from haive_plugin_observability.collector import MetricsCollector

from haive.dataflow.errors import ConfigError
from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline
from haive.dataflow.runtime.units import Duration
from haive.dataflow.runtime.validation import duration

from .broker_dead_letters import RedisDeadLetters, is_redis_stream_source
from .dead_letters import DeadLetterStore, LocalDeadLetters
from .figures import NodeTracker
from .fleet import PROCESS_STARTED, FleetView, membership_of, partitions_of

log = logging.getLogger("haive.console")

DEFAULT_RULES = ("high_latency", "error_spike", "queue_saturation", "dropping_items")


class NotFound(LookupError):
    """A pipeline, node, alert or dead letter the console does not know."""


class Conflict(RuntimeError):
    """An action that cannot be taken in the pipeline's present state."""


def log_action(action: str, *, client: str, outcome: str, **fields: Any) -> None:
    """One structured record per action (``key=value`` message, same fields in ``extra``)."""
    details = " ".join(f"{k}={v!r}" for k, v in fields.items())
    log.info(
        "console action=%s outcome=%s client=%s %s",
        action,
        outcome,
        client,
        details,
        extra={"action": action, "outcome": outcome, "client": client, **fields},
    )


@attrs.define
class WatchedPipeline:
    """A pipeline the console shows: its analytics, node charts and dead letters."""

    pipeline: StreamingPipeline
    analytics: StreamAnalytics
    nodes: NodeTracker
    dead_letters: LocalDeadLetters | RedisDeadLetters
    acknowledged: dict[str, float] = attrs.field(factory=dict)

    @property
    def name(self) -> str:
        return self.pipeline.name

    @property
    def run(self) -> Any:
        return self.pipeline.current_run


class Console:
    """What ``haive console`` serves: pipelines, their figures, alerts and dead letters, and
    the actions pause, resume, replay and acknowledge.

    :meth:`watch` attaches the console to a pipeline before it runs (a monitor, and a
    failure observer that keeps the last ``dead_letter_capacity`` dead letters; where the
    failures go, the dead-letter sink or the source's ``reject``, does not change).

    Example::

        >>> import trio
        >>> from haive.dataflow import StreamingPipeline
        >>> from haive.dataflow.builtins.sources import IterableSource
        >>> console = Console()
        >>> pipeline = StreamingPipeline("orders")
        >>> pipeline.set_source(IterableSource([1, 0, 2]))
        >>> pipeline.add_processor(lambda x: 10 // x)
        >>> console.watch(pipeline)
        >>> report = trio.run(pipeline.execute)
        >>> [p["name"] for p in trio.run(console.pipelines)]
        ['orders']
        >>> [d["payload"] for d in trio.run(console.dead_letters, "orders")]
        [0]
    """

    def __init__(
        self,
        *,
        interval: Duration = 1.0,
        dead_letter_capacity: int = 1000,
        history: int = 300,
        alert_notifiers: tuple[str, ...] = ("log",),
        fleet: FleetView | None = None,
    ) -> None:
        self.interval = duration("Console", "interval", interval)
        if not isinstance(dead_letter_capacity, int) or dead_letter_capacity < 1:
            raise ConfigError(
                f"Console(dead_letter_capacity={dead_letter_capacity!r}): dead_letter_capacity "
                f"must be a positive integer, got {dead_letter_capacity!r}"
            )
        self.dead_letter_capacity = dead_letter_capacity
        self.alert_notifiers = tuple(alert_notifiers)
        if fleet is not None and not isinstance(fleet, FleetView):
            raise ConfigError(f"Console(fleet={fleet!r}): fleet must be a FleetView or None")
        #: Workers that publish their state to Redis (``FleetPublisher``), listed too.
        self.fleet = fleet
        self.history = history
        self._watched: dict[str, WatchedPipeline] = {}

    # -- watching ------------------------------------------------------------------------
    def watch(self, pipeline: StreamingPipeline) -> None:
        """Show ``pipeline`` (call before it runs)."""
        if not isinstance(pipeline, StreamingPipeline):
            raise ConfigError(f"Console.watch expects a StreamingPipeline, got {pipeline!r}")
        if pipeline.name in self._watched:
            raise ConfigError(
                f"Console.watch: a pipeline named {pipeline.name!r} is already watched"
            )
        source = pipeline.source
        letters: LocalDeadLetters | RedisDeadLetters
        if pipeline.dead_letter is None and is_redis_stream_source(source):
            # Its failures go to <stream>:dead, shared by every worker: shown from there.
            letters = RedisDeadLetters(source)
        else:
            store = DeadLetterStore(self.dead_letter_capacity)
            pipeline.observe_failures(store.observe)
            letters = LocalDeadLetters(store)
        analytics = StreamAnalytics(
            MetricsCollector(interval=min(self.interval, 0.25)),
            AlertManager(notifiers=list(self.alert_notifiers), rules=DEFAULT_RULES),
            interval=self.interval,
        )
        watched = WatchedPipeline(
            pipeline, analytics, NodeTracker(pipeline, history=self.history), letters
        )
        self._watched[pipeline.name] = watched
        analytics.watch(pipeline)
        pipeline.add_monitor(_NodeSampler(watched, self.interval))

    def get(self, name: str) -> WatchedPipeline:
        try:
            return self._watched[name]
        except KeyError:
            raise NotFound(f"no pipeline named {name!r}") from None

    # -- reading -------------------------------------------------------------------------
    async def pipelines(self) -> list[dict[str, Any]]:
        return [await self._summary(w) for w in self._watched.values()]

    async def _summary(self, watched: WatchedPipeline) -> dict[str, Any]:
        run = watched.run
        return {
            "name": watched.name,
            "running": run is not None,
            "paused": watched.pipeline.paused,
            "read": run.read if run is not None else 0,
            "processed": run.processed if run is not None else 0,
            "failed": run.failed if run is not None else 0,
            "dead_letters": await watched.dead_letters.count(),
            "dead_letters_in": (
                f"redis:{watched.dead_letters.dead_stream}"
                if isinstance(watched.dead_letters, RedisDeadLetters)
                else "memory"
            ),
            "source": type(watched.pipeline.source).__name__ if watched.pipeline.source else None,
        }

    async def workers(self) -> list[dict[str, Any]]:
        """This process, then the fleet's workers (``fleet``) other than this one."""
        local = {
            "id": f"{socket.gethostname()}:{os.getpid()}",
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "pipelines": list(self._watched),
            "started": PROCESS_STARTED,
            "local": True,
            "memberships": {n: membership_of(w.pipeline) for n, w in self._watched.items()},
        }
        others = await self.fleet.workers() if self.fleet is not None else []
        return [local, *(w for w in others if w.get("id") != local["id"])]

    async def partitions(self) -> list[dict[str, Any]]:
        """Every owned partition of keyed-partition sources, with owner, lag and pending:
        this process's pipelines and the fleet's workers."""
        rows: list[dict[str, Any]] = []
        for worker in await self.workers():
            if worker.get("local"):
                for membership in worker["memberships"].values():
                    rows += partitions_of({"id": worker["id"], "membership": membership})
            else:
                rows += partitions_of(worker)
        return sorted(rows, key=lambda r: (str(r["stream"]), r["partition"]))

    async def pipeline(self, name: str) -> dict[str, Any]:
        watched = self.get(name)
        return {**await self._summary(watched), "topology": self.metrics(name)}

    def topology(self, name: str) -> dict[str, Any]:
        from .figures import topology

        watched = self.get(name)
        return topology(watched.pipeline, watched.run)

    def metrics(self, name: str) -> dict[str, Any]:
        """Topology with per-node figures, plus the pipeline's throughput and latency."""
        watched = self.get(name)
        snapshot = watched.analytics.last
        latency: dict[str, Any] = {}
        overall: dict[str, Any] = {}
        throughput: dict[str, Any] = {}
        if snapshot is not None:
            lat = snapshot.values.get("latency")
            if lat is not None:
                # The metric keys node estimates "<pipeline>/<node>".
                prefix = f"{name}/"
                latency = {
                    key[len(prefix) :]: attrs.asdict(value)
                    for key, value in lat.nodes.items()
                    if key.startswith(prefix)
                }
                overall = {k: float(v) for k, v in lat.percentiles.items()}
                overall["mean"] = float(lat.mean)
            tp = snapshot.values.get("throughput")
            if tp is not None:
                throughput = {"per_second": float(tp.current), "total": int(tp.total)}
        figures = watched.nodes.figures(watched.run, latency)
        figures["latency_ms"] = overall
        figures["throughput"] = throughput
        return figures

    def node_history(self, name: str, node: str) -> list[dict[str, float]]:
        watched = self.get(name)
        known = {n["name"] for n in self.topology(name)["nodes"]}
        if node not in known:
            raise NotFound(f"pipeline {name!r} has no node {node!r}")
        return [p.to_dict() for p in watched.nodes.history.get(node, ())]

    def alerts(self) -> list[dict[str, Any]]:
        out = []
        for watched in self._watched.values():
            for alert in watched.analytics.alerts.active_list():
                since = alert.get("since")
                acked = watched.acknowledged.get(alert["rule"])
                out.append(
                    {
                        **alert,
                        "pipeline": watched.name,
                        "acknowledged": acked is not None and acked == since,
                    }
                )
        return out

    async def dead_letters(
        self,
        name: str,
        *,
        node: str | None = None,
        error: str | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        letters = self.get(name).dead_letters
        found = await letters.find(node=node, error=error, offset=offset, limit=limit)
        return [d.to_dict() for d in found]

    async def dead_letter(self, name: str, letter_id: str) -> dict[str, Any]:
        letter = await self.get(name).dead_letters.get(letter_id)
        if letter is None:
            raise NotFound(f"pipeline {name!r} has no dead letter {letter_id!r}")
        return letter.to_dict()

    # -- actions -------------------------------------------------------------------------
    async def pause(self, name: str, *, client: str) -> dict[str, Any]:
        watched = self.get(name)
        watched.pipeline.pause()
        log_action("pause", client=client, outcome="ok", pipeline=name)
        return await self._summary(watched)

    async def resume(self, name: str, *, client: str) -> dict[str, Any]:
        watched = self.get(name)
        watched.pipeline.resume()
        log_action("resume", client=client, outcome="ok", pipeline=name)
        return await self._summary(watched)

    def acknowledge(self, name: str, rule: str, *, client: str) -> dict[str, Any]:
        watched = self.get(name)
        active = watched.analytics.alerts.active.get(rule)
        if active is None:
            log_action("acknowledge", client=client, outcome="not found", pipeline=name, rule=rule)
            raise NotFound(f"pipeline {name!r} has no active alert {rule!r}")
        watched.acknowledged[rule] = active.since
        log_action("acknowledge", client=client, outcome="ok", pipeline=name, rule=rule)
        return {"pipeline": name, "rule": rule, "acknowledged": True}

    async def replay(self, name: str, ids: Iterable[str], *, client: str) -> dict[str, Any]:
        """Replay the chosen dead letters; they leave the dead letters.

        Kept in memory: their payloads are fed into the running pipeline's input (refused
        with :class:`Conflict` when it is not running or its input is closed; they stay).
        In a Redis dead-letter stream: their entries go back to the input stream, for the
        group's workers to read again.
        """
        watched = self.get(name)
        wanted = list(dict.fromkeys(ids))
        letters = watched.dead_letters
        if isinstance(letters, RedisDeadLetters):
            replayed, missing = await letters.replay(wanted)
        else:
            run = watched.run
            if run is None:
                log_action(
                    "replay", client=client, outcome="not running", pipeline=name, ids=wanted
                )
                raise Conflict(f"pipeline {name!r} is not running: nothing to replay into")
            try:
                replayed, missing = await letters.replay(wanted, run)
            except (ConfigError, trio.ClosedResourceError, trio.BrokenResourceError) as exc:
                log_action(
                    "replay", client=client, outcome=f"refused: {exc}", pipeline=name, ids=wanted
                )
                raise Conflict(str(exc)) from exc
        log_action(
            "replay", client=client, outcome="ok", pipeline=name, replayed=replayed, missing=missing
        )
        return {"pipeline": name, "replayed": replayed, "missing": missing}


class _NodeSampler:
    """Pipeline monitor: samples the node counters every ``interval`` for the charts."""

    def __init__(self, watched: WatchedPipeline, interval: float) -> None:
        self.watched = watched
        self.interval = interval

    async def monitor(self, run: Any) -> None:
        while True:
            self.watched.nodes.sample(run, trio.current_time())
            await trio.sleep(self.interval)
