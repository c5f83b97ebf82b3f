"""Tests of the tax check: its logic on fake data and, marked `integration`, against the local stack."""
