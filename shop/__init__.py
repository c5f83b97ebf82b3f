"""The sample retail shop that releasegate releases: bundle sources, builder, payment sandbox, shopper."""
