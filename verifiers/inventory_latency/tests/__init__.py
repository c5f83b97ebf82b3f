"""Tests of the inventory-latency check: its logic on fake data and, marked `integration`, against the local stack."""
