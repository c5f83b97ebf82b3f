"""What every releasegate service shares: settings, logging, telemetry, Kafka wiring, outbox, idempotency."""
