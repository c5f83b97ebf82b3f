"""Runs the inventory-latency verifier until SIGTERM: `python -m verifiers.inventory_latency` (RG_* settings)."""

from .check import verifier

verifier.run()
