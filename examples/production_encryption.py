"""End-to-end payload encryption: a pipeline writes encrypted records to a relay (here a
file), a second pipeline reads them back and decrypts; the relay only ever holds ciphertext.
Keys rotate mid-way: old records stay readable while their key is in the keyring.

Needs haive-plugin-crypto. Run: ``python examples/production_encryption.py``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import trio

from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.builtins.sources import IterableSource
from haive.dataflow.streaming import (
    EncryptedSerializer,
    Keyring,
    MessagePackSerializer,
    StreamingPipeline,
    StreamSink,
)


class FileRelay(StreamSink):
    """Appends length-prefixed encoded records to a file (a stand-in for a broker)."""

    def __init__(self, path: Path, serializer: EncryptedSerializer) -> None:
        self.path = path
        self.serializer = serializer

    async def write_batch(self, items: list[Any]) -> None:
        with self.path.open("ab") as f:
            for item in items:
                record = self.serializer.dumps(item)
                f.write(len(record).to_bytes(4, "big") + record)


def read_records(path: Path) -> list[bytes]:
    data, records, pos = path.read_bytes(), [], 0
    while pos < len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        records.append(data[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return records


async def main(path: Path) -> None:
    keyring = Keyring.generate("2026-q1")  # in production: Keyring.from_env()
    serializer = EncryptedSerializer(
        inner=MessagePackSerializer(), keyring=keyring, associated_data="patients"
    )
    patients = [{"id": i, "name": f"patient-{i}", "diagnosis": "confidential"} for i in range(6)]

    for half, key_id in ((patients[:3], None), (patients[3:], "2026-q2")):
        if key_id:
            keyring.rotate(key_id)
        producer = StreamingPipeline("encrypt")
        producer.set_source(IterableSource(half))
        producer.set_sink(FileRelay(path, serializer))
        await producer.execute()

    records = read_records(path)
    assert not any(b"confidential" in r or b"patient-" in r for r in records)
    print(
        "relay holds",
        len(records),
        "records under keys",
        [serializer.key_id_of(r) for r in records],
    )

    consumer = StreamingPipeline("decrypt")
    consumer.set_source(IterableSource(records))
    consumer.add_node(serializer.loads)
    sink = MemorySink()
    consumer.set_sink(sink)
    await consumer.execute()
    assert sink.items == patients
    print("decrypted:", [p["name"] for p in sink.items])


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        trio.run(main, Path(tmp) / "relay.bin")
