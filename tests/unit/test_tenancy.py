"""The storefront's tenant rule (shop/bundle_src/storefront/tenancy.py): a tenant is named by the Host
`<tenant>.shop.test[:port]` and by nothing else; HAProxy applies the same rule (checked through a real HAProxy
in tests/integration/test_shop_storefront.py)."""

import importlib.util
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location(
    "shop_tenancy", Path(__file__).resolve().parents[2] / "shop/bundle_src/storefront/tenancy.py"
)
tenancy = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(tenancy)


@pytest.mark.parametrize(
    ("host", "tenant"),
    [
        ("acme.shop.test", "acme"),
        ("acme.shop.test:18080", "acme"),
        ("ACME.Shop.Test", "acme"),
        ("t-0123456789.shop.test", "t-0123456789"),
        ("0.shop.test:1", "0"),
        ("a" * 32 + ".shop.test", "a" * 32),
    ],
)
def test_a_tenant_host_names_its_tenant(host, tenant):
    assert tenancy.tenant_from_host(host) == tenant


@pytest.mark.parametrize(
    "host",
    [
        None,
        "",
        "127.0.0.1:18080",
        "localhost",
        "shop.test",
        ".shop.test",
        "a" * 33 + ".shop.test",  # longer than 32: refused, never truncated
        "-acme.shop.test",  # must start with a letter or digit
        "ac_me.shop.test",
        "ac me.shop.test",
        "acme;x.shop.test",
        "a.b.shop.test",  # one label only
        "acme.shop.test.",  # a trailing dot is another name for HAProxy's rule too
        "acme.shop.local",
        "acme.shop.test.evil.example",
        "acme.shop.testing",
        "acme.shop.test:",
        "acme.shop.test:abc",
        "acme.shop.test:123456",
        "acme.shop.test:80:80",
        "acme.shop.test, globex.shop.test",  # a folded duplicate Host
        "\u212acme.shop.test",  # Kelvin sign: Python lower-cases it to "k", HAProxy would not
        "acme.shop.test\n",
        "acme\x00.shop.test",
    ],
)
def test_any_other_host_names_no_tenant(host):
    assert tenancy.tenant_from_host(host) is None


def test_surrounding_blanks_of_a_header_value_do_not_matter():
    assert tenancy.tenant_from_host(" acme.shop.test\t") == "acme"
