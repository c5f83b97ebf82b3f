"""Runs the inventory-latency verifier until SIGTERM: `python -m verifiers.inventory_latency` (RG_* settings, as every service)."""
from .check import verifier

verifier.run()
