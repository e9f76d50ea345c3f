"""The HTTP sink against a real receiver (Hypercorn + Starlette on 127.0.0.1) that fails on
demand: batching, retries with backoff, Retry-After, dead letters, 4xx not retried."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import trio
from haive_plugin_http import HttpDeliveryError, HttpSink, HttpStatusError

from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.builtins.sources import IterableSource
from haive.dataflow.errors import ConfigError
from haive.dataflow.io.sinks import RejectedItems
from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline
from haive.dataflow.runtime.retry import RetryPolicy

from .receiver import Receiver

NO_JITTER = RetryPolicy(attempts=4, backoff=0.5, multiplier=2.0, jitter=0.0)


async def test_batches_are_json_arrays_in_order(receiver: Receiver) -> None:
    items = [{"n": n} for n in range(1_200)]
    async with HttpSink(receiver.url, batch_size=500, headers={"X-Tenant": "t1"},
                        bearer_token="tok") as sink:
        await sink.write_batch(items)
    assert receiver.items == items
    assert receiver.requests == 3 and [len(b) > 0 for b in receiver.bodies] == [True] * 3
    assert receiver.headers[0]["x-tenant"] == "t1"
    assert receiver.headers[0]["authorization"] == "Bearer tok"
    assert receiver.headers[0]["content-type"] == "application/json"
    assert len(set(receiver.keys)) == 3  # one idempotency key per request
    assert (sink.stats.requests, sink.stats.items, sink.stats.retries) == (3, 1_200, 0)


async def test_one_request_per_item_concurrently(receiver: Receiver) -> None:
    async with HttpSink(receiver.url, per_item=True, concurrency=4) as sink:
        await sink.write_batch([{"n": n} for n in range(20)])
    assert sorted(item["n"] for item in receiver.items) == list(range(20))
    assert receiver.requests == 20


async def test_5xx_and_408_are_retried_with_exponential_backoff(
    receiver: Receiver, autojump_clock: trio.testing.MockClock
) -> None:
    receiver.plan.extend([(500, {}), (502, {}), (408, {})])
    async with HttpSink(receiver.url, retry=NO_JITTER) as sink:
        started = trio.current_time()
        await sink.write_batch([{"n": 1}])
        elapsed = trio.current_time() - started
    assert receiver.items == [{"n": 1}] and receiver.requests == 4
    assert elapsed == pytest.approx(0.5 + 1.0 + 2.0)  # backoff 0.5 doubling, no jitter
    assert sink.stats.retries == 3
    assert len(set(receiver_keys(receiver))) == 1  # the same idempotency key on every retry


async def test_a_read_timeout_is_retried(receiver: Receiver,
                                        autojump_clock: trio.testing.MockClock) -> None:
    receiver.stalls.append(60.0)  # answers long after the sink's 2 s timeout
    async with HttpSink(receiver.url, timeout="2s", retry=NO_JITTER) as sink:
        started = trio.current_time()
        await sink.write_batch([{"n": 1}])
        elapsed = trio.current_time() - started
    assert receiver.items == [{"n": 1}] and receiver.requests == 2
    assert elapsed == pytest.approx(2 + 0.5, abs=0.1)  # the timeout, then the first backoff
    assert sink.stats.retries == 1


def receiver_keys(receiver: Receiver) -> list[str]:
    return [headers.get("idempotency-key", "") for headers in receiver.headers]


async def test_jitter_spreads_the_pauses(receiver: Receiver,
                                         autojump_clock: trio.testing.MockClock) -> None:
    receiver.plan.extend([(503, {})] * 3)
    policy = RetryPolicy(attempts=4, backoff=1.0, multiplier=2.0, jitter=0.5)
    async with HttpSink(receiver.url, retry=policy) as sink:
        started = trio.current_time()
        await sink.write_batch([{"n": 1}])
        elapsed = trio.current_time() - started
    assert 0.5 * (1 + 2 + 4) <= elapsed <= 1 + 2 + 4


async def test_retry_after_is_honoured_and_capped(receiver: Receiver,
                                                  autojump_clock: trio.testing.MockClock) -> None:
    receiver.plan.extend([(429, {"Retry-After": "7"}), (503, {"Retry-After": "600"})])
    async with HttpSink(receiver.url, retry=NO_JITTER, max_retry_after="30s") as sink:
        started = trio.current_time()
        await sink.write_batch([{"n": 1}])
        elapsed = trio.current_time() - started
    # 7 s as asked (more than the 0.5 s backoff), then 600 s capped at max_retry_after.
    assert elapsed == pytest.approx(7 + 30)
    assert sink.stats.waited_retry_after == pytest.approx(37)
    assert receiver.items == [{"n": 1}]


async def test_client_errors_are_not_retried_and_name_the_status(receiver: Receiver) -> None:
    receiver.plan.append((400, {}))
    async with HttpSink(receiver.url, retry=NO_JITTER, batch_size=2) as sink:
        with pytest.raises(RejectedItems) as info:
            await sink.write_batch([{"n": 1}, {"n": 2}, {"n": 3}])
    assert receiver.requests == 2  # the first batch refused once, the second written
    assert receiver.items == [{"n": 3}]
    assert set(info.value.errors) == {0, 1}
    error = info.value.errors[0]
    assert isinstance(error, HttpStatusError) and error.status == 400
    assert "answered 400 Bad Request: 'planned failure 400'" in str(error)


async def test_given_up_items_go_to_the_dead_letter_sink_with_the_reason(
    receiver: Receiver, autojump_clock: trio.testing.MockClock
) -> None:
    from haive.dataflow.runtime.config import StreamConfig

    receiver.plan.extend([(500, {})] * 3)  # the first batch fails every attempt
    sink = HttpSink(receiver.url, batch_size=2, retry=RetryPolicy(attempts=3, backoff=0.1))
    dead = MemorySink()
    pipeline = StreamingPipeline("to-http", config=StreamConfig(chunk_size=4))
    pipeline.set_source(IterableSource([{"n": n} for n in range(4)]))
    pipeline.set_sink(sink)
    pipeline.set_dead_letter_sink(dead)
    report = await pipeline.execute()
    assert report.processed == 2 and report.failed == 2
    assert receiver.items == [{"n": 2}, {"n": 3}]
    assert [letter["data"] for letter in dead.items] == [{"n": 0}, {"n": 1}]
    assert "answered 500 Internal Server Error after 3 attempts" in str(dead.items[0]["error"])
    assert sink.stats.rejected == 2 and sink.stats.retries == 2


async def test_connection_refused_is_retried_then_given_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.socket.socket() as probe:  # a port where nothing listens
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with HttpSink(f"http://127.0.0.1:{port}/x",
                        retry=RetryPolicy(attempts=3, backoff=1.0, jitter=0.0)) as sink:
        with pytest.raises(RejectedItems) as info:
            await sink.write_batch([{"n": 1}])
    error = info.value.errors[0]
    assert isinstance(error, HttpDeliveryError)
    assert "failed after 3 attempt(s): ConnectError" in str(error)
    assert sink.stats.retries == 2


async def test_items_that_do_not_encode_are_rejected_alone(receiver: Receiver) -> None:
    @attrs.frozen
    class Point:
        x: int

    async with HttpSink(receiver.url) as sink:
        with pytest.raises(RejectedItems) as info:
            await sink.write_batch([{"n": 1}, object(), Point(3)])
    assert list(info.value.errors) == [1]
    assert receiver.items == [{"n": 1}, {"x": 3}]


async def test_encode_and_basic_auth(receiver: Receiver) -> None:
    async with HttpSink(receiver.url, encode=lambda item: {"wrapped": item},
                        auth=("user", "pw"), method="PUT") as sink:
        await sink.write_batch([1])
    assert receiver.items == [{"wrapped": 1}]
    assert receiver.headers[0]["authorization"].startswith("Basic ")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"url": "example.org/x"}, "url must be an http:// or https:// URL"),
        ({"method": "GET"}, "method must be one of 'POST', 'PUT', 'PATCH'"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"timeout": "soon"}, "timeout must be a duration"),
        ({"retry": 3}, "retry must be a RetryPolicy"),
        ({"concurrency": 20, "max_connections": 10}, "concurrency must be at most"),
        ({"headers": {"X": 1}}, "headers must map str to str"),
        ({"auth": "user:pw"}, "auth must be an httpx.Auth"),
    ],
)
def test_bad_settings_are_refused_at_construction(kwargs: dict[str, Any], message: str) -> None:
    url = kwargs.pop("url", "http://127.0.0.1:1/x")
    with pytest.raises(ConfigError, match=message):
        HttpSink(url, **kwargs)


async def test_http2_over_tls(nursery: trio.Nursery, tmp_path: Any) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile, cafile = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    ca.cert_pem.write_to_path(str(cafile))
    secure = Receiver(certfile=str(certfile), keyfile=str(keyfile))
    await nursery.start(secure.run)
    async with HttpSink(secure.url, http2=True, verify=str(cafile)) as sink:
        await sink.write_batch([{"n": 1}])
    async with HttpSink(secure.url, verify=str(cafile)) as sink:
        await sink.write_batch([{"n": 2}])
    assert secure.items == [{"n": 1}, {"n": 2}]
    assert secure.http_versions == ["2", "1.1"]
