"""EncryptedSerializer and Keyring: round trips, rotation, tampering, errors, registry, Redis."""

from __future__ import annotations

import base64
import importlib.util
import uuid

import pytest
from haive_plugin_crypto import (
    ENV_VAR,
    DecryptionError,
    EncryptedSerializer,
    Keyring,
    NotEncryptedError,
    UnknownKeyError,
)

from haive.dataflow import ConfigError, JsonSerializer, get_registry
from haive.dataflow.errors import SerializationError

SECRET = {"patient": "Ada Lovelace", "diagnosis": "confidential", "blob": b"\x00\x01"}


def test_round_trip_hides_the_plaintext() -> None:
    s = EncryptedSerializer(keyring=Keyring.generate())
    first, second = s.dumps(SECRET), s.dumps(SECRET)
    assert s.loads(first) == SECRET
    assert first != second  # fresh nonce per message
    for fragment in (b"Ada", b"Lovelace", b"confidential", b"patient"):
        assert fragment not in first
    json_inner = EncryptedSerializer(inner=JsonSerializer(), keyring=s.keyring)
    assert json_inner.loads(json_inner.dumps({"a": [1, 2]})) == {"a": [1, 2]}


def test_rotation_keeps_old_messages_readable_until_retired() -> None:
    ring = Keyring.generate("k1")
    s = EncryptedSerializer(keyring=ring)
    old = s.dumps({"n": 1})
    assert ring.rotate() == "k2"
    new = s.dumps({"n": 2})
    assert (s.key_id_of(old), s.key_id_of(new)) == ("k1", "k2")
    assert s.loads(old) == {"n": 1} and s.loads(new) == {"n": 2}
    migrated = s.reencrypt(old)
    assert s.key_id_of(migrated) == "k2"
    ring.retire("k1")
    with pytest.raises(
        UnknownKeyError, match=r"key id 'k1', which is not in the keyring \(keys: k2\)"
    ):
        s.loads(old)
    assert s.loads(migrated) == {"n": 1}
    with pytest.raises(ConfigError, match="primary key"):
        ring.retire("k2")


def test_any_modification_is_detected() -> None:
    s = EncryptedSerializer(keyring=Keyring.generate("k1"))
    token = s.dumps(SECRET)
    header = 5 + len("k1")
    for position in (3, header, header + 12, len(token) - 1, len(token) // 2 + 8):
        tampered = bytearray(token)
        tampered[position] ^= 0x01
        with pytest.raises(DecryptionError):
            s.loads(bytes(tampered))
    with pytest.raises(DecryptionError, match="truncated"):
        s.loads(token[: header + 20])
    with pytest.raises(DecryptionError, match="authentication failed"):
        s.loads(token[:-1])


def test_a_changed_key_id_or_stream_binding_fails() -> None:
    ring = Keyring({"k1": bytes(32), "k9": bytes(32)}, primary="k1")
    s = EncryptedSerializer(keyring=ring, associated_data="orders")
    token = s.dumps({"x": 1})
    # Same key bytes under another id: the authenticated header still catches the swap.
    swapped = token.replace(b"k1", b"k9", 1)
    with pytest.raises(DecryptionError, match=r"authentication failed .* key id 'k9'"):
        s.loads(swapped)
    elsewhere = EncryptedSerializer(keyring=ring, associated_data="refunds")
    with pytest.raises(DecryptionError, match="other associated data"):
        elsewhere.loads(token)
    wrong_key = EncryptedSerializer(keyring=Keyring({"k1": b"\x01" * 32}))
    with pytest.raises(DecryptionError, match="authentication failed"):
        wrong_key.loads(token)


def test_plaintext_and_garbage_are_refused_clearly() -> None:
    s = EncryptedSerializer(keyring=Keyring.generate())
    with pytest.raises(NotEncryptedError, match="not an encrypted haive message"):
        s.loads(JsonSerializer().dumps({"a": 1}))
    with pytest.raises(NotEncryptedError, match="expected bytes"):
        s.loads("text")
    assert issubclass(DecryptionError, SerializationError)
    limited = EncryptedSerializer(keyring=s.keyring, max_size=64)
    with pytest.raises(SerializationError, match="exceeds the limit of 64 bytes"):
        limited.loads(s.dumps("x" * 200))


def test_keyring_parsing_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(ConfigError, match=f"set {ENV_VAR}="):
        EncryptedSerializer()
    key = base64.b64encode(bytes(range(32))).decode()
    monkeypatch.setenv(ENV_VAR, f"new:{key},old:{key}")
    s = get_registry().serializer("encrypted")()
    assert isinstance(s, EncryptedSerializer)
    assert s.keyring.primary == "new" and s.keyring.key_ids == ["new", "old"]
    with pytest.raises(ConfigError, match="not valid base64"):
        Keyring.from_spec("k1:***")
    with pytest.raises(ConfigError, match=r"must be 16, 24 or 32 bytes .* got 5"):
        Keyring.from_spec("k1:" + base64.b64encode(b"short").decode())
    with pytest.raises(ConfigError, match="already in the keyring"):
        Keyring.from_spec(f"k1:{key},k1:{key}")
    with pytest.raises(ConfigError, match="key id must be"):
        Keyring({"bad id!": bytes(32)})


def test_exported_from_streaming() -> None:
    from haive.dataflow.streaming import EncryptedSerializer as Exported

    assert Exported is EncryptedSerializer


@pytest.mark.redis
def test_a_redis_stream_sees_only_ciphertext(require) -> None:
    require(importlib.util.find_spec("redis") is not None, "needs redis-py (pip install redis)")
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379)  # the redis marker checked it answers
    stream = f"haive-test-crypto:{uuid.uuid4().hex}"
    s = EncryptedSerializer(keyring=Keyring.generate(), associated_data=stream)
    try:
        for n in range(3):
            client.xadd(stream, {"payload": s.dumps({**SECRET, "n": n})})
        entries = client.xrange(stream)
        raw = b"".join(fields[b"payload"] for _, fields in entries)
        assert b"Lovelace" not in raw and b"confidential" not in raw
        assert [s.loads(fields[b"payload"])["n"] for _, fields in entries] == [0, 1, 2]
    finally:
        client.delete(stream)
        client.close()
