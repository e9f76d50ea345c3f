"""What the fleet test's ``haive worker`` processes run: a Redis Streams group member
publishing its state (FleetPublisher). Stream and prefix come from the environment."""

import os

from haive_plugin_console import FleetPublisher
from haive_plugin_redis import RedisStreamSource

from haive.dataflow import StreamingPipeline
from haive.dataflow.builtins.sinks import MemorySink

pipeline = StreamingPipeline("fleet-orders")
pipeline.set_source(
    RedisStreamSource(os.environ.get("FLEET_STREAM", "fleet-orders"), codec="json", block="50ms")
)
pipeline.set_sink(MemorySink())
FleetPublisher(
    "redis://127.0.0.1:6379",
    prefix=os.environ.get("FLEET_PREFIX", "haive:fleet"),
    interval="200ms",
    ttl="1500ms",
).watch(pipeline)
