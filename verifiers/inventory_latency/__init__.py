"""inventory-latency: a releasegate verifier. Run it with `python -m verifiers.inventory_latency`; see check.py."""
