"""The coordinator's adapters."""
