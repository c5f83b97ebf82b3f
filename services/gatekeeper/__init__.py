"""Gatekeeper: evaluates named promotion checks for a candidate and explains every decision."""
