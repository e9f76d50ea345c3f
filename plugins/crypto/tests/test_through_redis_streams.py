"""Encrypted payloads through the Redis Streams sink and source (haive-plugin-redis), end to end
on the real server: Redis holds only ciphertext, the pipeline sees plaintext."""

from __future__ import annotations

import importlib.util
import uuid

import pytest
from haive_plugin_crypto import EncryptedSerializer, Keyring

from haive.dataflow import MessagePackSerializer
from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline

pytestmark = pytest.mark.redis

SECRETS = [{"patient": f"Ada Lovelace {n}", "diagnosis": "confidential", "n": n} for n in range(20)]


@pytest.fixture
def streams(require):
    require(
        importlib.util.find_spec("haive_plugin_redis") is not None,
        "needs haive-plugin-redis (pip install -e plugins/redis)",
    )
    import redis

    tag = f"haive-test-crypto-{uuid.uuid4().hex[:12]}"
    client = redis.Redis(host="127.0.0.1", port=6379)
    yield client, f"{{{tag}}}:in", f"{{{tag}}}:out"
    keys = list(client.scan_iter(match=f"{{{tag}}}*"))
    if keys:
        client.delete(*keys)
    client.close()


async def test_the_pipeline_reads_plaintext_redis_holds_ciphertext(streams) -> None:
    from haive_plugin_redis import RedisStreamSink, RedisStreamSource

    r, src, out = streams
    ring = Keyring.generate("2026-01")

    def codec(stream: str) -> EncryptedSerializer:
        # Bound to its stream: an entry copied to another stream does not decrypt.
        return EncryptedSerializer(
            inner=MessagePackSerializer(), keyring=ring, associated_data=stream
        )

    await RedisStreamSink(src, codec=codec(src)).write_batch(SECRETS)
    source = RedisStreamSource(src, group="g", codec=codec(src), stop_when_drained=True)
    pipeline = StreamingPipeline("encrypted")
    pipeline.set_source(source)
    pipeline.add_processor(lambda item: {**item, "seen": True})
    pipeline.set_sink(source.sink(out, codec=codec(out)))
    report = await pipeline.execute()
    assert report.processed == 20 and report.failed == 0

    for stream in (src, out):
        raw = b"".join(value for _, fields in r.xrange(stream) for value in fields.values())
        assert b"Lovelace" not in raw and b"confidential" not in raw
    decrypted = [codec(out).loads(fields[b"data"]) for _, fields in r.xrange(out)]
    assert decrypted == [{**item, "seen": True} for item in SECRETS]
    source.client.close()


async def test_a_source_without_the_key_dead_letters_every_entry(streams) -> None:
    from haive_plugin_redis import RedisStreamSink, RedisStreamSource

    r, src, _ = streams
    writer = EncryptedSerializer(keyring=Keyring.generate("k-writer"), associated_data=src)
    await RedisStreamSink(src, codec=writer).write_batch(SECRETS[:3])
    reader = EncryptedSerializer(keyring=Keyring.generate("k-reader"), associated_data=src)
    source = RedisStreamSource(src, group="g", codec=reader, stop_when_drained=True)
    pipeline = StreamingPipeline("wrong-key")
    pipeline.set_source(source)
    report = await pipeline.execute()
    assert report.processed == 0
    dead = r.xrange(source.dead_letter)
    assert len(dead) == 3
    assert all(b"k-writer" in fields[b"reason"] for _, fields in dead)  # names the missing key
    source.client.close()
