"""A Redis Streams pipeline: the console shows its dead-letter stream (``<stream>:dead``)
and replays entries back onto the input stream, where the group reads them again."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
import trio
from haive_plugin_console import Console, serving
from haive_plugin_redis import RedisClient, RedisStreamSource

from haive.dataflow import StreamingPipeline, TransformNode
from haive.dataflow.builtins.sinks import MemorySink

pytestmark = pytest.mark.redis


async def test_dead_letter_stream_listed_filtered_and_replayed(until: Any) -> None:
    stream = f"console-{uuid.uuid4().hex}"
    client = RedisClient()
    failing = {"on": True}

    def check(item: dict[str, Any]) -> dict[str, Any]:
        if failing["on"] and item["n"] % 4 == 0:
            raise ValueError(f"bad n {item['n']}")
        return item

    try:
        for n in range(20):
            await client.execute("XADD", stream, "*", "data", f'{{"n": {n}}}')
        source = RedisStreamSource(stream, group="g", consumer="c", codec="json", block="20ms")
        pipeline = StreamingPipeline("redis-orders")
        pipeline.set_source(source)
        pipeline.add_processor(TransformNode(name="check", transform_fn=check))
        sink = MemorySink()
        pipeline.set_sink(sink)
        console = Console(interval=0.2)
        console.watch(pipeline)
        async with trio.open_nursery() as nursery, serving(console) as address:
            nursery.start_soon(pipeline.execute)
            async with httpx.AsyncClient(base_url=address.url) as api:
                base = "api/pipelines/redis-orders/dead-letters"

                async def five() -> list[dict[str, Any]] | None:
                    letters = (await api.get(base)).json()
                    return letters if len(letters) == 5 else None

                letters = await until(five)
                assert [d["payload"] for d in letters] == [{"n": n} for n in (0, 4, 8, 12, 16)]
                assert {d["node"] for d in letters} == {"check"}
                assert {d["error_type"] for d in letters} == {"ValueError"}
                assert letters[1]["reason"].endswith("ValueError: bad n 4")
                summary = (await api.get("api/pipelines")).json()[0]
                assert summary["dead_letters_in"] == f"redis:{source.dead_letter}"
                assert summary["dead_letters"] == 5
                assert (await api.get(base, params={"error": "bad n 8"})).json() == [letters[2]]
                assert (await api.get(base, params={"node": "other"})).json() == []
                assert (await api.get(f"{base}/{letters[0]['id']}")).json() == letters[0]
                assert (await api.get(f"{base}/1-0")).status_code == 404
                assert (await api.get(f"{base}/nonsense")).status_code == 404

                failing["on"] = False
                chosen = [d["id"] for d in letters[:3]]
                reply = (await api.post(f"{base}/replay", json={"ids": [*chosen, "1-0"]})).json()
                assert reply["replayed"] == chosen and reply["missing"] == ["1-0"]
                await until(lambda: sum(1 for item in sink.items if item["n"] in (0, 4, 8)) == 3)
                left = (await api.get(base)).json()
                assert [d["payload"]["n"] for d in left] == [12, 16]
            nursery.cancel_scope.cancel()
        # Exact counts: 15 passed first time, 3 replayed and written once each.
        assert sorted(item["n"] for item in sink.items) == sorted(
            [n for n in range(20) if n % 4] + [0, 4, 8]
        )
        assert int(await client.execute("XLEN", source.dead_letter)) == 2
    finally:
        await client.execute("DEL", stream, f"{{{stream}}}:dead", f"{stream}:dead")
        client.close()
