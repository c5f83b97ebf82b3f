"""Unit tests of the tax verifier's check."""
