"""Stopping and starting the local stack's infrastructure under a running release (bench/faults.py: the chaos soak
injects the same faults)."""

from bench.faults import infrastructure_healthy, start_infrastructure, stop_kafka, stop_postgres

__all__ = ["infrastructure_healthy", "start_infrastructure", "stop_kafka", "stop_postgres"]
