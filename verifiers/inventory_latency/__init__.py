"""inventory-latency: a releasegate verifier. Run it with `python -m verifiers.inventory_latency`; its check is in check.py."""
