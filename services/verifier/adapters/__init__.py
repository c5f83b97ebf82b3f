"""Verifier adapters: KPI store in PostgreSQL, HAProxy request-log receiver."""
