"""Deployer: the only service that starts versions. Target `local`: bundles from the content-addressed store
run as processes behind HAProxy."""
