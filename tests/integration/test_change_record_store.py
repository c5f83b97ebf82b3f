"""The change-record store on the real control database, as the API's role rg_api: a release that ended is recorded
from its read models, once; rg_api may add records and read them, never change or remove one, and not even the
schema owner can rewrite one."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from releasegate_platform import change_record
from releasegate_runtime import db
from releasegate_runtime.keys import keygen, load_public_key, load_signer
from services.api.record_store import PgRecordStore
from services.api.records import Records

pytestmark = pytest.mark.integration


@pytest.fixture
async def api_pool(settings):
    pool = await db.create_pool(settings.for_principal("api").database_url, max_size=2)
    yield pool
    await pool.close()


@pytest.fixture
async def ended(pool) -> str:
    """A promoted release of a service of this test's own: its saga, a timeline and the production gate's decision."""
    service = f"it-rec-{uuid.uuid4().hex[:8]}"
    rid = f"{service}-v2-{uuid.uuid4().hex[:8]}"
    candidate = {
        "service": service,
        "version": "v2",
        "author": "dev",
        "changes": "<b>new banner</b>",
        "artifact": {"digest": "sha256:" + "a" * 64},
        "source": {"repository": "github.com/example/shop", "ref": "refs/heads/main", "commit": "c" * 40},
    }
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO sagas (release_id, service, version, digest, state, body) VALUES ($1, $2, 'v2', $3,"
            " 'promoted', $4)",
            rid,
            service,
            "sha256:" + "a" * 64,
            {"candidate": candidate, "plan": [], "compensations": []},
        )
        await conn.execute(
            "INSERT INTO audit_log (release_id, actor, state, step, reason, evidence) VALUES"
            " ($1, 'coordinator', 'promoted', NULL, 'release promoted', '{}')",
            rid,
        )
        await conn.execute(
            "INSERT INTO gate_decisions (request_id, release_id, step_id, environment, decision, risk, policy_version,"
            " input_digest, input, rules, warnings, refused) VALUES ($1, $2, 'gate-production', 'production', 'pass',"
            " 'low', 'p-1', $3, $4, $5, '[]', '[]')",
            uuid.uuid4().hex,
            rid,
            "sha256:" + "b" * 64,
            {
                "attestation": {"present": True, "signature_verified": True, "problems": []},
                "change": {"paths": ["content/banner.html"], "domains": ["content"], "baseline_version": "v1"},
                "approvals": [],
                "trust": {"trust_root": "sha256:" + "d" * 64},
            },
            [{"name": "provenance", "passed": True, "reason": "signed", "evidence": {}}],
        )
    return rid


async def test_an_ended_release_is_recorded_once_and_rg_api_cannot_change_its_record(api_pool, pool, ended, tmp_path):
    private, public = keygen(tmp_path, "records")
    store = PgRecordStore(api_pool)
    records = Records(store, load_signer(private))
    assert ended in await store.unrecorded(50)

    assert await records.write(ended) is True
    assert await records.write(ended) is False  # its end seen again: nothing new is written
    assert ended not in await store.unrecorded(50)
    envelope = await store.envelope(ended)
    record = change_record.open_envelope(envelope, load_public_key(public))
    assert record["release"]["outcome"] == "promoted" and record["incident"]["present"] is False
    assert record["release_notes"]["changed_paths"] == ["content/banner.html"]
    assert record["provenance"]["verified"] is True and record["gates"][0]["policy_version"] == "p-1"
    service = record["release"]["service"]
    assert [r["release_id"] for r in await store.listing(service, 10)] == [ended]

    async with api_pool.acquire() as conn:
        for statement in ("UPDATE change_records SET outcome = 'rolled_back'", "DELETE FROM change_records"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(f"{statement} WHERE release_id = $1", ended)
    async with pool.acquire() as conn:  # the schema owner: the trigger refuses it too
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await conn.execute("UPDATE change_records SET outcome = 'rolled_back' WHERE release_id = $1", ended)
    assert await store.envelope(ended) == envelope
