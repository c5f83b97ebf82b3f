"""Route secrets (webhook URLs, HMAC keys, SMTP credentials) read from files under the notifier's secrets folder,
at each attempt (a rotated secret is used at once). A reference never leaves the folder."""

from __future__ import annotations

import os
from pathlib import Path

from services.notifier.domain import DeliveryError

MAX_SECRET_BYTES = 4096


class FileSecrets:
    def __init__(self, root: Path) -> None:
        self._root = root.resolve()

    def read(self, ref: str) -> str:
        """The secret's text, stripped. Refused (permanently: a person must fix it) when the file is missing,
        empty, too large, outside the folder or readable by others than its owner."""
        path = (self._root / ref).resolve()
        if not path.is_relative_to(self._root):
            raise DeliveryError(f"secret {ref!r} points outside the secrets folder", retryable=False)
        try:
            with path.open("rb") as f:
                if os.fstat(f.fileno()).st_mode & 0o077:
                    raise DeliveryError(
                        f"secret {ref!r} is readable by others than its owner (chmod 600 it)", retryable=False
                    )
                raw = f.read(MAX_SECRET_BYTES + 1)
        except OSError as exc:
            raise DeliveryError(f"secret {ref!r} cannot be read: {exc.strerror or exc}", retryable=False) from None
        text = raw.decode("utf-8", "replace").strip()
        if not text or len(raw) > MAX_SECRET_BYTES:
            raise DeliveryError(f"secret {ref!r} is empty or larger than {MAX_SECRET_BYTES} bytes", retryable=False)
        return text
