"""Deployer adapters: bundle launcher for the local target."""
