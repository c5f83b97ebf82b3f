"""A topic's retention as the broker has it (DescribeConfigs, as the dr-checker's own principal): what decides
whether events since a backup point will still be there when a restore replays them."""

from __future__ import annotations

import asyncio

from confluent_kafka import KafkaException
from confluent_kafka.admin import ConfigResource, ResourceType

from releasegate_runtime.kafka import admin_client
from releasegate_runtime.settings import ServiceSettings
from services.dr_checker.domain import TopicRetention

TIMEOUT = 10.0


def _describe(settings: ServiceSettings, topic: str) -> TopicRetention:
    resource = ConfigResource(ResourceType.TOPIC, topic)
    try:
        admin = admin_client(
            settings, TIMEOUT
        )  # kept referenced until the answer: a collected client fails its futures
        entries = admin.describe_configs([resource], request_timeout=TIMEOUT)[resource].result(timeout=TIMEOUT + 1)
    except KafkaException as exc:
        error = exc.args[0] if exc.args else exc
        name = getattr(error, "name", lambda: "")()
        hint = (
            f" (the principal {settings.principal} needs the DescribeConfigs ACL on topic {topic})"
            if name in ("TOPIC_AUTHORIZATION_FAILED", "CLUSTER_AUTHORIZATION_FAILED")
            else ""
        )
        return TopicRetention(topic, error=f"{name or 'broker error'}: {getattr(error, 'str', lambda: error)()}{hint}")
    except TimeoutError:
        return TopicRetention(topic, error=f"no answer from the broker within {TIMEOUT:g}s")
    except ValueError as exc:  # no credentials for the principal
        return TopicRetention(topic, error=str(exc)[:300])

    def number(name: str) -> int | None:
        entry = entries.get(name)
        try:
            return int(entry.value) if entry is not None and entry.value is not None else None
        except ValueError:
            return None

    policy = entries.get("cleanup.policy")
    return TopicRetention(
        topic,
        retention_ms=number("retention.ms"),
        retention_bytes=number("retention.bytes"),
        cleanup_policy=None if policy is None else policy.value,
    )


async def topic_retention(settings: ServiceSettings, topic: str) -> TopicRetention:
    """Never raises and never waits longer than about TIMEOUT: a broker that does not answer is an error here."""
    try:
        return await asyncio.wait_for(asyncio.to_thread(_describe, settings, topic), TIMEOUT * 2)
    except TimeoutError:
        return TopicRetention(topic, error=f"no answer from the broker within {TIMEOUT * 2:g}s")
