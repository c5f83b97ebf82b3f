"""tax: a releasegate verifier. Run it with `python -m verifiers.tax`; its check is in check.py."""
