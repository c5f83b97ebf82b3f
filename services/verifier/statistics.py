"""The sequential tests the core verifier judges with live in the SDK (`releasegate_sdk.statistics`), so team
verifiers use the same ones; this name stays for the callers that still import it from here."""

from releasegate_sdk.statistics import Decision, TestResult, latency_rank, log_msprt, mann_whitney_auc, proportions

__all__ = ["Decision", "TestResult", "latency_rank", "log_msprt", "mann_whitney_auc", "proportions"]
