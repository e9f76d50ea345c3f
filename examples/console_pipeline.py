"""The operations console over a running pipeline: find its dead letters, fix the cause,
replay them, and see them succeed; all through the console's REST API.

Run it: ``python examples/console_pipeline.py`` (``haive console job.py`` serves the same
console, with its page, for a pipeline file). ``HAIVE_EXAMPLE_QUICK=1`` is ignored: it is
quick anyway.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import trio
from haive_plugin_console import Console, serving

from haive.dataflow import StreamingPipeline, TransformNode
from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.io.sources import DataSource


class Orders(DataSource):
    """Order amounts, a batch every 20 ms, until ``stop`` is set."""

    def __init__(self, stop: trio.Event) -> None:
        self.stop = stop

    async def batches(self, chunk_size: int) -> AsyncIterator[list[Any]]:
        n = 0
        while not self.stop.is_set():
            yield [{"order": i, "amount": i % 5} for i in range(n, n + 10)]
            n += 10
            await trio.sleep(0.02)


rates = {"EUR": 1.0}  # USD is missing: orders in USD fail until it is added


def convert(order: dict[str, Any]) -> dict[str, Any]:
    currency = "USD" if order["order"] % 9 == 0 else "EUR"
    if currency not in rates:
        raise KeyError(f"no exchange rate for {currency}")
    return {**order, "eur": order["amount"] * rates[currency]}


async def main() -> None:
    stop = trio.Event()
    pipeline = StreamingPipeline("orders")
    pipeline.set_source(Orders(stop))
    pipeline.add_processor(TransformNode(name="convert", transform_fn=convert))
    sink = MemorySink()
    pipeline.set_sink(sink)
    console = Console(interval=0.2)
    console.watch(pipeline)

    async with trio.open_nursery() as nursery, serving(console) as address:
        nursery.start_soon(pipeline.execute)
        print(f"console at {address.url}")
        async with httpx.AsyncClient(base_url=address.url) as api:
            letters: list[dict[str, Any]] = []
            while len(letters) < 5:
                await trio.sleep(0.1)
                letters = (
                    await api.get("api/pipelines/orders/dead-letters", params={"error": "USD"})
                ).json()
            print(f"{len(letters)} dead letters, e.g. {letters[0]['reason']}: {letters[0]['payload']}")
            figures = (await api.get("api/pipelines/orders/metrics")).json()
            while not figures["nodes"][1]["rate_out"]:  # rates need two samples
                await trio.sleep(0.1)
                figures = (await api.get("api/pipelines/orders/metrics")).json()
            for node in figures["nodes"]:
                print(f"  {node['name']:18} {node['rate_out']:8.0f} ev/s  state {node['state']}")

            rates["USD"] = 0.9  # the cause, fixed
            ids = [letter["id"] for letter in letters]
            reply = (
                await api.post("api/pipelines/orders/dead-letters/replay", json={"ids": ids})
            ).json()
            wanted = {letter["payload"]["order"] for letter in letters}
            with trio.fail_after(10):
                while True:  # the sink is in this process: watch it fill
                    if wanted <= {item["order"] for item in sink.items}:
                        break
                    await trio.sleep(0.05)
            print(f"replayed {len(reply['replayed'])}: all written")
        stop.set()


if __name__ == "__main__":
    trio.run(main)
