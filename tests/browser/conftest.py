"""The dashboard tests run the end-to-end release stack (tests/e2e: the six services, the team verifiers, synthetic
shoppers) and the API that serves the dashboard; the OIDC provider is part of the local stack. A person's browser is
chromium driven by Playwright (tests/support/browser.py)."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.conftest import api, canary, catalog_env, services, stable_v1  # noqa: F401  (fixtures)
from tests.support.browser import api_url, browser  # noqa: F401  (fixture)
from tests.support.oidc import issuer


@pytest.fixture(scope="module")
async def dashboard(api):  # noqa: F811  (the fixture imported above)
    """The dashboard's URL, once the API serves it and the OIDC provider people sign in with answers."""
    discovery = f"{issuer()}/.well-known/openid-configuration"
    async with httpx.AsyncClient(timeout=5) as http:
        try:
            (await http.get(discovery)).raise_for_status()
        except httpx.HTTPError as exc:
            pytest.fail(f"the OIDC provider does not answer at {discovery} ({exc}): start the stack", pytrace=False)
    return api_url()
