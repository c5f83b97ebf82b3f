"""Unit tests of the inventory-latency verifier's check."""
