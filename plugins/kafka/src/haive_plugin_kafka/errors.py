"""Errors of the Kafka plugin, each naming the broker, topic or setting it is about."""

from __future__ import annotations

from haive.dataflow.errors import ConfigError, HaiveError


class KafkaConnectionError(HaiveError):
    """The brokers could not be reached (or dropped the connection) within the timeout."""


class KafkaAuthenticationError(KafkaConnectionError):
    """The broker refused the client's credentials (SASL) or its TLS handshake."""


class UnknownTopicError(ConfigError):
    """A topic the source or sink needs does not exist on the cluster."""


class KafkaDeliveryError(HaiveError):
    """Records were not confirmed by the broker (acks=all) within the delivery timeout;
    nothing of the batch counts as written."""


class KafkaCommitError(HaiveError):
    """Committing consumer offsets failed for a reason other than a rebalance."""
