"""Runs the erp-export verifier until SIGTERM: `python -m verifiers.erp_export` (RG_* settings, as every service)."""

from .check import verifier

verifier.run()
