"""A worker process for the fault tests: copies topic IN to topic OUT at-least-once.

``python copy_worker.py BOOTSTRAP IN OUT GROUP``. Prints ``written N`` (the total) after each
batch the sink confirmed, so the test knows it is mid-stream when it kills it (kill -9).
"""

from __future__ import annotations

import sys
from typing import Any

import trio
from haive_plugin_kafka import KafkaSink, KafkaSource

from haive.dataflow import StreamingPipeline


class ReportingSink(KafkaSink):
    async def write_batch(self, items: list[Any]) -> None:
        await super().write_batch(items)
        print(f"written {self.written}", flush=True)


async def main(bootstrap: str, source_topic: str, out: str, group: str) -> None:
    source = KafkaSource(
        source_topic,
        group=group,
        bootstrap_servers=bootstrap,
        batch_size=100,
        ack_every=300,
        session_timeout="2s",
    )
    pipeline = StreamingPipeline("copy-worker")
    pipeline.set_source(source)

    async def slow(item: dict[str, int]) -> dict[str, int]:
        await trio.sleep(0.0005)  # so that it is killed with work in flight
        return item

    pipeline.add_processor(slow)
    pipeline.set_sink(ReportingSink(out, bootstrap_servers=bootstrap, key="n"))
    await pipeline.execute()


if __name__ == "__main__":
    trio.run(main, *sys.argv[1:5])
