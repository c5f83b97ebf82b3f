"""Unit tests of the erp-export verifier's check."""
