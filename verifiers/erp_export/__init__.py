"""erp-export: a releasegate verifier. Run it with `python -m verifiers.erp_export`; its check is in check.py."""
