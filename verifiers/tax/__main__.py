"""Runs the tax verifier until SIGTERM: `python -m verifiers.tax` (RG_* settings, as every service)."""

from .check import verifier

verifier.run()
