"""JetStreamSink against the real NATS JetStream server (and servers of the tests' own)."""

from __future__ import annotations

import orjson
import pytest
from haive_plugin_nats import (
    JetStreamSink,
    NatsAuthError,
    NatsConnectError,
    UnknownStreamError,
)

from haive.dataflow.errors import ConfigError
from haive.dataflow.io.sinks import RejectedItems

from .conftest import free_port


@pytest.mark.nats
async def test_batches_are_confirmed_and_ordered_per_subject(stream, read):
    subjects = {0: stream.input, 1: stream.output}
    items = [{"n": n, "to": n % 2} for n in range(3_000)]
    async with JetStreamSink(lambda item: subjects[item["to"]], url=stream.url) as sink:
        for start in range(0, len(items), 500):
            await sink.write_batch(items[start : start + 500])
    assert sink.stats.published == 3_000 and sink.stats.retries == 0
    for to, subject in subjects.items():
        stored = [orjson.loads(m.data) for m in await read(stream.url, stream.name, subject)]
        assert stored == [item for item in items if item["to"] == to]


@pytest.mark.nats
async def test_unknown_stream_is_a_clear_error(stream):
    sink = JetStreamSink(f"{stream.name}-nowhere.x", url=stream.url)
    with pytest.raises(UnknownStreamError, match=r"no JetStream stream .* stores subject"):
        await sink.open()
    await sink.aclose()
    # A subject chosen per item is checked when it is published to.
    async with JetStreamSink(lambda item: f"{stream.name}-nowhere.{item}", url=stream.url) as sink:
        with pytest.raises(UnknownStreamError, match=r"nowhere\.1"):
            await sink.write_batch([1])


@pytest.mark.nats
async def test_items_that_do_not_encode_are_rejected_the_rest_written(stream, read):
    async with JetStreamSink(stream.output, url=stream.url) as sink:
        with pytest.raises(RejectedItems) as caught:
            await sink.write_batch([{"n": 1}, {"bad": object()}, {"n": 2}])
    assert list(caught.value.errors) == [1]
    stored = [orjson.loads(m.data) for m in await read(stream.url, stream.name, stream.output)]
    assert stored == [{"n": 1}, {"n": 2}]


@pytest.mark.nats_server
async def test_refused_credentials_are_a_clear_error(nats_server):
    server = nats_server("--user", "app", "--pass", "right")
    url = f"nats://app:wrong@127.0.0.1:{server.port}"
    sink = JetStreamSink("orders", url=url)
    with pytest.raises(NatsAuthError, match=r"refused the credentials .*Authorization") as caught:
        await sink.open()
    await sink.aclose()
    assert "wrong" not in str(caught.value)  # the password is not repeated in the message


async def test_nothing_answering_is_a_clear_error():
    sink = JetStreamSink("orders", url=f"nats://127.0.0.1:{free_port()}")
    with pytest.raises(NatsConnectError, match="no NATS server answered"):
        await sink.open()
    await sink.aclose()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"subject": "orders.*"}, "must not contain wildcards"),
        ({"codec": "nope"}, "nope"),
        ({"retry": 3}, "retry must be a RetryPolicy"),
        ({"headers": "x"}, "headers must be a function"),
    ],
)
def test_bad_settings_fail_at_construction(kwargs, message):
    kwargs = {"subject": "orders.new", **kwargs}
    with pytest.raises(ConfigError, match=message):
        JetStreamSink(**kwargs)
