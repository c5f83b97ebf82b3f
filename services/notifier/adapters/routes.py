"""The catalog's notification routes of a service."""

from __future__ import annotations

from pathlib import Path

from releasegate_platform.catalog import Catalog, CatalogError, NotificationRoute
from releasegate_runtime.kafka import PermanentError


class CatalogRoutes:
    def __init__(self, catalog_dir: Path) -> None:
        self._dir, self._catalog = catalog_dir, Catalog(catalog_dir)

    def of(self, service: str) -> list[NotificationRoute]:
        """A service the catalog does not have has no routes. An entry that is invalid is an error (its event is
        dead-lettered with the reason) rather than silence: someone meant to be told."""
        if not (self._dir / f"{service}.yaml").is_file():
            return []
        try:
            return list(self._catalog.get(service).notifications.routes)
        except CatalogError as exc:
            raise PermanentError(f"no notification routes: {exc}") from None
