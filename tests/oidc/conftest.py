"""The local OIDC provider (deploy/oidc) as its own process on a free port, with secrets of its own made for this
session: needs node and `deploy/stack.sh install` (its node modules), not the stack."""

from __future__ import annotations

import asyncio

import pytest

from releasegate_platform.oidc import TokenVerifier
from releasegate_runtime.secrets import ensure_oidc
from tests.support.oidc import ProviderProcess, start_provider


@pytest.fixture(scope="session")
async def provider(tmp_path_factory) -> ProviderProcess:
    secrets_dir = tmp_path_factory.mktemp("oidc-secrets")
    await asyncio.to_thread(ensure_oidc, secrets_dir)
    log = tmp_path_factory.mktemp("oidc-log") / "oidc.log"
    try:
        process = await start_provider(secrets_dir, log)
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield process
    await asyncio.to_thread(process.stop)


@pytest.fixture
async def verifier(provider) -> TokenVerifier:
    v = TokenVerifier(provider.issuer, "releasegate")
    yield v
    await v.aclose()
