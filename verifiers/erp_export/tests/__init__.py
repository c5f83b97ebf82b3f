"""Tests of the erp-export check: its logic on fake data and, marked `integration`, against the local stack."""
