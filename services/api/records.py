"""Writes the change record of every ended release, once. The API already follows release.status; a terminal state
wakes the writer, which then records every ended release that has no record yet, so a release that ended while the
API was down (or whose status it missed) gets its record at the next sweep. The release id is the record's key: a
redelivered or re-read end finds the record there and writes nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog
from securesystemslib.signer import CryptoSigner, SSlibKey

from contracts.events import TERMINAL_STATES
from releasegate_platform import change_record
from services.api.live import StatusHub
from services.api.record_store import StoredRecord

log = structlog.get_logger()
_TERMINAL = {s.value for s in TERMINAL_STATES}
SWEEP_BATCH = 20


class RecordStore(Protocol):
    async def evidence(self, release_id: str) -> tuple[dict[str, Any], dict[str, Any]] | None: ...
    async def unrecorded(self, limit: int) -> list[str]: ...
    async def insert(self, record: StoredRecord) -> bool: ...
    async def envelope(self, release_id: str) -> dict[str, Any] | None: ...
    async def listing(self, service: str, limit: int) -> list[dict[str, Any]]: ...


class Records:
    """Reading, writing and verifying change records with the records key."""

    def __init__(
        self, store: RecordStore, signer: CryptoSigner, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.store, self._signer, self._clock = store, signer, clock
        self._failed: set[str] = set()  # releases whose record could not be built: logged once, not retried per sweep

    @property
    def public_key(self) -> SSlibKey:
        key = self._signer.public_key
        assert isinstance(key, SSlibKey)
        return key

    async def write(self, release_id: str) -> bool:
        """Record the release if it has ended; whether a record was stored now (False: not ended, or recorded)."""
        found = await self.store.evidence(release_id)
        if found is None or not found[0]["release"].get("terminal"):
            return False
        detail, extras = found
        record = change_record.build(detail, extras, self._clock())
        envelope = change_record.seal(record, self._signer)
        release = record["release"]
        stored = await self.store.insert(
            StoredRecord(
                release_id=release["release_id"],
                service=release["service"],
                version=release["version"],
                outcome=release["outcome"],
                keyid=self.public_key.keyid,
                payload_sha256=change_record.payload_digest(envelope),
                envelope=envelope,
            )
        )
        if stored:
            log.info("change record written", release_id=release_id, outcome=release["outcome"])
        return stored

    async def sweep(self, limit: int = SWEEP_BATCH) -> int:
        """Record ended releases that have no record yet; how many were recorded."""
        written = 0
        for release_id in await self.store.unrecorded(limit + len(self._failed)):
            if release_id in self._failed:
                continue
            try:
                written += await self.write(release_id)
            except (KeyError, TypeError, ValueError) as exc:
                # evidence of a shape the builder does not know: one release's record must not stop the others'
                self._failed.add(release_id)
                log.error("change record not built", release_id=release_id, error=repr(exc))
        return written

    async def opened(self, release_id: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The stored envelope and the record it verifies to; RecordError if the stored record does not verify."""
        envelope = await self.store.envelope(release_id)
        if envelope is None:
            return None
        return envelope, change_record.open_envelope(envelope, self.public_key)

    async def run(self, hub: StatusHub, interval: float) -> None:
        """Sweep now, then whenever a release ends (as release.status tells), and every `interval` s regardless."""
        async with hub.subscribe(None) as feed:
            while True:
                # one batch per wake-up, newest first: a just-ended release is recorded at once, and a backlog (releases
                # that ended before this API ran) is worked off a batch per interval, never in one burst of CPU
                await self.sweep()
                try:
                    event = await asyncio.wait_for(feed.queue.get(), interval)
                    while event.get("state") not in _TERMINAL:
                        event = await asyncio.wait_for(feed.queue.get(), interval)
                except TimeoutError:
                    continue
