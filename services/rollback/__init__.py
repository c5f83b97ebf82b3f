"""Rollback: executes compensations (traffic back to stable, candidate instances stopped). It never starts a
version: production deploy rights belong to the deployer alone."""
