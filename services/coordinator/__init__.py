"""Saga coordinator: drives each release through its steps and compensates completed ones on failure."""
