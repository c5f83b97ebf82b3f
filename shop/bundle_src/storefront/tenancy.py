"""The storefront's one tenant rule: a client names its tenant by the host it asks for, `<tenant>.shop.test`
(optionally with `:port`), and by nothing else.

HAProxy applies the same rule (deploy/haproxy/haproxy.cfg: the `txn.tenant` variable) to route tenant-phased
releases and to log each request's tenant, so the tenant a request is routed, logged and served as is always the
same. A header such as `X-Tenant` is never trusted: any client can send one, and HAProxy overwrites it anyway.
Keep this module and the HAProxy rule identical (tests/integration/test_shop_storefront.py checks both)."""

from __future__ import annotations

import re

HOST_SUFFIX = ".shop.test"
# ASCII only, lower-cased before matching; the port, if any, is digits only.
TENANT_HOST = re.compile(r"([a-z0-9][a-z0-9-]{0,31})\.shop\.test(?::[0-9]{1,5})?")


def tenant_from_host(host: str | None) -> str | None:
    """The tenant a Host header value names, or None if it names none (absent, another host, a malformed name).

    Non-ASCII is refused before lower-casing: Python would fold some non-ASCII letters to ASCII ones (the Kelvin
    sign to `k`) where HAProxy, which lower-cases bytes, would not, and both must reach the same answer."""
    if host is None or not host.isascii():
        return None
    match = TENANT_HOST.fullmatch(host.strip(" \t").lower())
    return match.group(1) if match else None
