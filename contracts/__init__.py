"""Versioned release events exchanged by releasegate services (pydantic v2, CloudEvents 1.0 on Kafka)."""

from contracts import topics
from contracts.cloudevents import ContractError, Envelope, decode, encode
from contracts.events import *  # noqa: F403 - the public event models
from contracts.events import EVENT_TYPES

__all__ = ["ContractError", "Envelope", "decode", "encode", "EVENT_TYPES", "topics"]
