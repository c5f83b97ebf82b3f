"""The attacks run against the live stack: every service as its own OS process, with authentication and ACLs on,
and a release in flight to attack (fixtures of the end-to-end harness)."""

from tests.e2e.conftest import catalog_env, services  # noqa: F401 (fixtures)
