"""The console API against a real server (Hypercorn on trio) with httpx."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from haive_plugin_console import Console, ConsoleServerError, serving

from haive.dataflow import ConfigError


async def test_lists_topology_and_node_figures(serve: Any, until: Any) -> None:
    async with (
        serve() as (address, _pipeline, _flaky, _sink),
        httpx.AsyncClient(base_url=address.url) as client,
    ):
        assert (await client.get("api/pipelines")).json()[0]["name"] == "orders"
        workers = (await client.get("api/workers")).json()
        assert workers[0]["pipelines"] == ["orders"] and workers[0]["local"] is True
        topo = (await client.get("api/pipelines/orders/topology")).json()
        assert [n["name"] for n in topo["nodes"]] == [
            "source:Ticker",
            "parse",
            "enrich",
            "sink:MemorySink",
        ]
        assert [e["buffer"] for e in topo["edges"]] == ["parse.in", "enrich.in", "output"]
        assert {b["name"] for b in topo["buffers"]} >= {"parse.in", "enrich.in", "output"}

        async def flowing() -> dict | None:
            figures = (await client.get("api/pipelines/orders/metrics")).json()
            nodes = {n["name"]: n for n in figures["nodes"]}
            ok = nodes["parse"]["rate_out"] > 0 and nodes["enrich"]["errors"] > 0
            return figures if ok and figures["latency_ms"] else None

        figures = await until(flowing)
        nodes = {n["name"]: n for n in figures["nodes"]}
        assert nodes["enrich"]["state"] in {"errors", "ok"}  # errors in the last sample or not
        assert nodes["enrich"]["latency_ms"]["p99"] >= nodes["enrich"]["latency_ms"]["p50"] >= 0
        assert 0.0 <= nodes["parse"]["fill"] <= 1.0
        assert set(figures["latency_ms"]) >= {"p50", "p95", "p99"}
        history = (await client.get("api/pipelines/orders/nodes/parse/history")).json()
        assert history and history[-1]["rate_in"] >= 0
        assert (await client.get("api/pipelines/orders/nodes/nope/history")).status_code == 404
        assert (await client.get("api/pipelines/nope/metrics")).status_code == 404
        doc = (await client.get("openapi.json")).json()
        assert "/api/pipelines/{pipeline}/dead-letters/replay" in doc["paths"]


async def test_dead_letters_filter_and_replay_then_succeed(
    caplog: pytest.LogCaptureFixture, serve: Any, until: Any
) -> None:
    caplog.set_level(logging.INFO, logger="haive.console")
    async with (
        serve() as (address, _pipeline, flaky, sink),
        httpx.AsyncClient(base_url=address.url) as client,
    ):
        base = "api/pipelines/orders/dead-letters"

        async def some_letters() -> list | None:
            letters = (await client.get(base, params={"node": "enrich"})).json()
            return letters if len(letters) >= 3 else None

        letters = await until(some_letters)
        first = letters[0]
        assert first["node"] == "enrich" and first["error_type"] == "ValueError"
        assert first["reason"] == f"cannot enrich {first['payload']}"
        assert (await client.get(f"{base}/{first['id']}")).json() == first
        assert (await client.get(base, params={"node": "parse"})).json() == []
        assert (await client.get(base, params={"error": "CANNOT"})).json()[:3] == letters[:3]
        assert (await client.get(base, params={"limit": 2})).json() == letters[:2]
        assert (await client.get(base, params={"limit": 0})).status_code == 400
        assert (await client.get(base, params={"offset": "x"})).status_code == 400
        assert (await client.get(f"{base}/999999")).status_code == 404

        flaky.failing = False  # the downstream is fixed: a replay now succeeds
        chosen = [d["id"] for d in letters[:3]]
        reply = await client.post(f"{base}/replay", json={"ids": [*chosen, "424242"]})
        assert reply.status_code == 200
        assert reply.json() == {"pipeline": "orders", "replayed": chosen, "missing": ["424242"]}
        payloads = [d["payload"] * 10 for d in letters[:3]]
        await until(lambda: all(p in sink.items for p in payloads))
        remaining = {d["id"] for d in (await client.get(base, params={"limit": 1000})).json()}
        assert not remaining & set(chosen)
        bad = await client.post(f"{base}/replay", content=b"{not json")
        assert bad.status_code == 400
        assert (await client.post(f"{base}/replay", json={"ids": [1]})).status_code == 400
    actions = [r for r in caplog.records if getattr(r, "action", None) == "replay"]
    assert actions and actions[0].replayed == chosen and actions[0].outcome == "ok"  # type: ignore[attr-defined]


async def test_pause_and_resume_stop_and_restart_reading(serve: Any, until: Any) -> None:
    async with (
        serve() as (address, pipeline, _flaky, _sink),
        httpx.AsyncClient(base_url=address.url) as client,
    ):
        await until(lambda: pipeline.current_run is not None and pipeline.current_run.read > 0)
        paused = (await client.post("api/pipelines/orders/pause")).json()
        assert paused["paused"] is True and pipeline.paused
        run = pipeline.current_run
        assert run is not None
        read_at_pause = run.read
        await trio_sleep(0.5)
        assert run.read == read_at_pause  # the source's next batch is held
        resumed = (await client.post("api/pipelines/orders/resume")).json()
        assert resumed["paused"] is False
        await until(lambda: run.read > read_at_pause)


async def test_alerts_list_and_acknowledge(serve: Any, until: Any) -> None:
    async with (
        serve() as (address, _pipeline, _flaky, _sink),
        httpx.AsyncClient(base_url=address.url) as client,
    ):
        # 1 in 7 items fails: far above the error_spike rule's threshold.
        async def spike() -> dict | None:
            alerts = (await client.get("api/alerts")).json()
            return next((a for a in alerts if a["rule"] == "error_spike"), None)

        alert = await until(spike)
        assert alert["pipeline"] == "orders" and alert["acknowledged"] is False
        ack = await client.post("api/pipelines/orders/alerts/error_spike/acknowledge")
        assert ack.json() == {"pipeline": "orders", "rule": "error_spike", "acknowledged": True}
        alert = await spike()
        assert alert is not None and alert["acknowledged"] is True
        missing = await client.post("api/pipelines/orders/alerts/nope/acknowledge")
        assert missing.status_code == 404


async def test_token_required_beyond_loopback_and_compared(serve: Any, until: Any) -> None:
    async with serve(host="0.0.0.0") as (address, _p, _f, _s):
        assert address.token and address.page_url.endswith(f"#token={address.token}")
        url = address.url.replace("0.0.0.0", "127.0.0.1")
        async with httpx.AsyncClient(base_url=url) as client:
            assert (await client.get("api/pipelines")).status_code == 401
            wrong = {"Authorization": "Bearer " + "x" * len(address.token)}
            assert (await client.get("api/pipelines", headers=wrong)).status_code == 401
            good = {"Authorization": f"Bearer {address.token}"}
            assert (await client.get("api/pipelines", headers=good)).status_code == 200
            page = await client.get("")
            assert page.status_code == 200 and "haive console" in page.text
    async with (
        serve(token="s3cret") as (address, _p, _f, _s),
        httpx.AsyncClient(base_url=address.url) as client,
    ):
        assert (await client.get("api/alerts")).status_code == 401
        ok = await client.get("api/alerts", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200


async def test_replay_into_a_stopped_pipeline_is_refused() -> None:
    console = Console()
    from haive.dataflow import StreamingPipeline
    from haive.dataflow.builtins.sources import IterableSource

    pipeline = StreamingPipeline("done")
    pipeline.set_source(IterableSource([0, 1]))
    pipeline.add_processor(lambda x: 1 // x)
    console.watch(pipeline)
    await pipeline.execute()
    async with serving(console) as address, httpx.AsyncClient(base_url=address.url) as client:
        letters = (await client.get("api/pipelines/done/dead-letters")).json()
        assert [d["payload"] for d in letters] == [0]
        reply = await client.post("api/pipelines/done/dead-letters/replay", json={"ids": ["0"]})
        assert reply.status_code == 409 and "not running" in reply.json()["error"]
        assert len((await client.get("api/pipelines/done/dead-letters")).json()) == 1


async def test_bad_settings_and_busy_port_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="interval must be"):
        Console(interval=0)
    with pytest.raises(ConfigError, match="dead_letter_capacity must be"):
        Console(dead_letter_capacity=0)
    with pytest.raises(ConfigError, match="port must be"):
        async with serving(Console(), port=70000):
            pass
    async with serving(Console()) as address:
        port = int(address.url.rsplit(":", 1)[1].strip("/"))
        with pytest.raises(ConsoleServerError, match="cannot listen"):
            async with serving(Console(), port=port):
                pass


async def trio_sleep(seconds: float) -> None:
    import trio

    await trio.sleep(seconds)


async def test_a_slow_node_shows_backpressure(until: Any) -> None:
    import trio

    from haive.dataflow import StreamConfig, StreamingPipeline, TransformNode

    from .conftest import Ticker  # type: ignore[import-not-found]

    async def slow(x: int) -> int:
        await trio.sleep(0.01)
        return x

    stop = trio.Event()
    pipeline = StreamingPipeline("slow", config=StreamConfig(buffer_size=32, chunk_size=8))
    pipeline.set_source(Ticker(stop, batch=8, every=0.001))
    pipeline.add_processor(TransformNode(name="slow", transform_fn=slow))
    console = Console(interval=0.1)
    console.watch(pipeline)
    async with trio.open_nursery() as nursery, serving(console) as address:
        nursery.start_soon(pipeline.execute)
        async with httpx.AsyncClient(base_url=address.url) as client:

            async def pressed() -> dict | None:
                figures = (await client.get("api/pipelines/slow/metrics")).json()
                node = next(n for n in figures["nodes"] if n["name"] == "slow")
                return node if node["state"] == "backpressure" else None

            node = await until(pressed)
            assert node["backpressure"] is True and node["buffer"]["capacity"] == 32
            assert node["fill"] >= 0.8 or node["buffer"]["blocked_count"] > 0
        stop.set()
