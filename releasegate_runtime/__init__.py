"""The process runtime every releasegate service and the verifier SDK share: settings, structured logging with
redaction, OpenTelemetry propagation, Kafka wiring (authenticated producers, bounded dead letters), the
transactional outbox, idempotent handling, the runner and its supervisor. It imports only `contracts`."""
