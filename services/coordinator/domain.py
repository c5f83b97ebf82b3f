"""Transition alias of `services.coordinator.saga`, for importers outside the coordinator that have not moved
yet (tests/unit/test_contract_limits.py, tests/faults/test_outages.py); new code imports `saga`."""

from services.coordinator.saga import *  # noqa: F403
from services.coordinator.saga import __all__  # noqa: F401
