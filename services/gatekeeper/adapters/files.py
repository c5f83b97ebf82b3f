"""The files a gate decision trusts, read anew for every request so an edit applies at once: the trust root,
the release calendar, the identities and the environment manifests; and the artifact store's bundles."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from releasegate_platform.artifacts import ArtifactError, ArtifactStore
from releasegate_platform.identity import Identities, load_identities
from releasegate_platform.supply_chain import TrustRoot
from services.gatekeeper.adapters import bundles
from services.gatekeeper.calendar import Calendar
from services.gatekeeper.domain import BundleUnreadable, environment_controls


class GateFiles:
    def __init__(
        self,
        trust_root: Path,
        calendar: Path,
        identities: Path,
        environments_dir: Path,
        attester_keys: Mapping[str, Path] | None = None,
    ) -> None:
        self._trust_root, self._calendar, self._identities = trust_root, calendar, identities
        self._environments_dir = environments_dir
        self._attester_keys = dict(attester_keys or {})

    def trust_root(self) -> TrustRoot:
        return TrustRoot.load(self._trust_root)

    def calendar(self) -> Calendar:
        return Calendar.load(self._calendar)

    def identities(self) -> Identities:
        return load_identities(self._identities, self._attester_keys)

    def environment_controls(self, environment: str) -> list[str]:
        return environment_controls(self._environments_dir, environment)


class StoreBundles:
    """Bundles from the artifact store, verified against their digest before they are read."""

    def __init__(self, store: ArtifactStore) -> None:
        self._store = store

    def read(self, digest: str) -> dict[str, bytes]:
        try:
            return bundles.read(self._store.verify(digest))
        except (ArtifactError, bundles.BundleError) as exc:
            raise BundleUnreadable(str(exc)) from None
