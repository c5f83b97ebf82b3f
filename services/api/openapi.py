"""The API's OpenAPI document, committed as services/api/openapi.json and kept in step by a test (like the AsyncAPI
document of the events): `python -m services.api.openapi` rewrites it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from services.api import http

DOCUMENT = Path(__file__).resolve().parent / "openapi.json"


def document() -> dict[str, Any]:
    """The document of the app as `build` makes it; the ports are not used to describe it."""
    return http.build(http.Ports.unwired()).openapi()


def render() -> str:
    return json.dumps(document(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    DOCUMENT.write_text(render())
    print(f"wrote {DOCUMENT}")
