"""Runs the peak-load verifier until SIGTERM: `python -m verifiers.peak_load` (RG_* settings, as every service)."""

from .check import verifier

verifier.run()
