"""Helpers shared by test modules (plain code, no fixtures): the only part of tests/ besides conftest files that
tests may import (tests/test_architecture.py checks it)."""
