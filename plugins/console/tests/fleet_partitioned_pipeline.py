"""What the partition test's ``haive worker`` processes run: a keyed-partition group
member publishing its state (owned partitions, lag) with a FleetPublisher."""

import os

from haive_plugin_console import FleetPublisher
from haive_plugin_redis import PartitionedStreamSource

from haive.dataflow import StreamingPipeline
from haive.dataflow.builtins.sinks import MemorySink

pipeline = StreamingPipeline("fleet-partitioned")
pipeline.set_source(
    PartitionedStreamSource(
        os.environ.get("FLEET_STREAM", "fleet-partitioned"),
        4,
        codec="json",
        block="50ms",
        lease_ttl="1s",
    )
)
pipeline.set_sink(MemorySink())
FleetPublisher(
    "redis://127.0.0.1:6379",
    prefix=os.environ.get("FLEET_PREFIX", "haive:fleet"),
    interval="200ms",
    ttl="1500ms",
).watch(pipeline)
