"""Which distribution provides which well-known capability or public name.

Used only to turn "not installed" into "pip install <this>": the registry itself is always
built from what plugins really register.
"""

from __future__ import annotations

import os
from importlib import metadata

#: (kind, name) -> distribution that provides it.
CAPABILITIES: dict[tuple[str, str], str] = {
    ("transport", "websocket"): "haive-plugin-websocket",
    ("source", "websocket"): "haive-plugin-websocket",
    ("sink", "websocket_room"): "haive-plugin-websocket",
    ("state_backend", "redis"): "haive-plugin-redis",
    ("state_backend", "redis+cluster"): "haive-plugin-redis",
    ("source", "redis_stream"): "haive-plugin-redis",
    ("sink", "redis_stream"): "haive-plugin-redis",
    ("cli_command", "worker"): "haive-plugin-redis",
    ("cli_command", "replay"): "haive-plugin-redis",
    ("source", "redis_stream_range"): "haive-plugin-redis",
    ("alert_notifier", "webhook"): "haive-plugin-observability",
    ("alert_notifier", "log"): "haive-plugin-observability",
    ("alert_notifier", "sink"): "haive-plugin-observability",
    ("alert_rule", "high_latency"): "haive-plugin-observability",
    ("alert_rule", "error_spike"): "haive-plugin-observability",
    ("alert_rule", "queue_saturation"): "haive-plugin-observability",
    ("alert_rule", "dropping_items"): "haive-plugin-observability",
    ("cli_command", "top"): "haive-plugin-observability",
    ("processor", "chunk"): "haive-contrib-ai",
    ("processor", "embedding"): "haive-contrib-ai",
    ("processor", "sentiment"): "haive-contrib-ai",
    ("processor", "classification"): "haive-contrib-ai",
    ("processor", "similarity"): "haive-contrib-ai",
    ("source", "documents"): "haive-contrib-ai",
    ("sink", "vector_store"): "haive-contrib-qdrant",
    ("serializer", "encrypted"): "haive-plugin-crypto",
    ("processor", "tokenization"): "haive-contrib-ai",
    ("processor", "enrichment"): "haive-contrib-ai",
    ("processor", "event_router"): "haive-contrib-ai",
    ("embedding_provider", "sentence-transformers"): "haive-contrib-ai",
    ("embedding_provider", "openai"): "haive-contrib-ai",
    ("embedding_provider", "hashing"): "haive-contrib-ai",
}

#: Public name of ``haive.dataflow.streaming`` -> distribution that provides it.
EXPORTS: dict[str, str] = {
    "WebSocketManager": "haive-plugin-websocket",
    "StreamingClient": "haive-plugin-websocket",
    "ConnectionConfig": "haive-plugin-websocket",
    "MessageHandler": "haive-plugin-websocket",
    "MultiRoomWebSocket": "haive-plugin-websocket",
    "RedisStateBackend": "haive-plugin-redis",
    "RedisStreamSource": "haive-plugin-redis",
    "RedisStreamSink": "haive-plugin-redis",
    "StreamEntry": "haive-plugin-redis",
    "StreamRangeSource": "haive-plugin-redis",
    "FailoverClient": "haive-plugin-redis",
    "Retention": "haive-plugin-redis",
    "RetainedStreamSink": "haive-plugin-redis",
    "Erasure": "haive-plugin-redis",
    "StreamAnalytics": "haive-plugin-observability",
    "MetricsCollector": "haive-plugin-observability",
    "StreamMetrics": "haive-plugin-observability",
    "ThroughputMetric": "haive-plugin-observability",
    "LatencyMetric": "haive-plugin-observability",
    "ErrorRateMetric": "haive-plugin-observability",
    "BackpressureMetric": "haive-plugin-observability",
    "AlertManager": "haive-plugin-observability",
    "Alert": "haive-plugin-observability",
    "Dashboard": "haive-plugin-observability",
    "LineChart": "haive-plugin-observability",
    "Histogram": "haive-plugin-observability",
    "ChunkProcessor": "haive-contrib-ai",
    "EmbeddingProcessor": "haive-contrib-ai",
    "EmbeddingTransform": "haive-contrib-ai",
    "SimilarityProcessor": "haive-contrib-ai",
    "SentimentTransform": "haive-contrib-ai",
    "ClassificationTransform": "haive-contrib-ai",
    "TokenizationTransform": "haive-contrib-ai",
    "EnrichmentTransform": "haive-contrib-ai",
    "DocumentDataSource": "haive-contrib-ai",
    "IntelligentEventRouter": "haive-contrib-ai",
    "Document": "haive-contrib-ai",
    "Chunk": "haive-contrib-ai",
    "EmbeddingProvider": "haive-contrib-ai",
    "VectorStoreSink": "haive-contrib-qdrant",
    "EncryptedSerializer": "haive-plugin-crypto",
    "Keyring": "haive-plugin-crypto",
}


def provider_of(kind: str, name: str) -> str | None:
    """The distribution known to provide ``name`` of ``kind``, if any."""
    return CAPABILITIES.get((kind, name))


def install_hint(package: str) -> str:
    """How to get ``package``'s plugin working: install it, or un-block it if it is disabled.

    Example::

        >>> install_hint("haive-plugin-kafka")
        'haive-plugin-kafka is not installed: pip install haive-plugin-kafka'
    """
    try:
        metadata.distribution(package)
    except metadata.PackageNotFoundError:
        return f"{package} is not installed: pip install {package}"
    disabled = os.environ.get("HAIVE_DISABLE_PLUGINS", "").strip()
    if disabled:
        return f"{package} is installed but not loaded: HAIVE_DISABLE_PLUGINS={disabled} blocks it"
    return f"{package} is installed but did not register it; see `haive plugins`"
