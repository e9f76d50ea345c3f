"""A pipeline file for ``haive worker`` tests: copies topic ``$HAIVE_KAFKA_TEST_IN`` to
``$HAIVE_KAFKA_TEST_OUT`` at-least-once and ends once the input is drained.

The group (``haive worker --group``) and consumer name are set by the command.
"""

from __future__ import annotations

import os

from haive_plugin_kafka import KafkaSink, KafkaSource

from haive.dataflow import StreamingPipeline

bootstrap = os.environ.get("HAIVE_KAFKA_TEST_BOOTSTRAP", "127.0.0.1:9092")

pipeline = StreamingPipeline("kafka-worker")
pipeline.set_source(
    KafkaSource(
        os.environ.get("HAIVE_KAFKA_TEST_IN", "in"),
        group="set-by-haive-worker",
        bootstrap_servers=bootstrap,
        batch_size=200,
        session_timeout="2s",
        stop_when_drained=True,
    )
)
pipeline.set_sink(KafkaSink(os.environ.get("HAIVE_KAFKA_TEST_OUT", "out"),
                            bootstrap_servers=bootstrap, key="n"))
