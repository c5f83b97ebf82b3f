"""Import boundaries, read from the source (AST): the SDK stands on the runtime and the contracts only; a team's
verifier only on the SDK, the runtime and the contracts; the CLI, the gatekeeper and the core verifier import no
other service; the gatekeeper's model imports none of its adapters."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIRST_PARTY = {
    "bench",
    "contracts",
    "deploy",
    "releasegate_cli",
    "releasegate_platform",
    "releasegate_runtime",
    "releasegate_sdk",
    "services",
    "shop",
    "tests",
    "verifiers",
}


def imports(path: Path) -> set[str]:
    """Absolute module names a file imports (relative imports stay inside its package and are left out)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from a import b` may import a module a.b or a name of a: recorded as a.b, which either satisfies
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def first_party(path: Path) -> set[str]:
    return {m for m in imports(path) if m.split(".")[0] in FIRST_PARTY}


def sources(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def outside(modules: set[str], allowed: tuple[str, ...]) -> set[str]:
    return {m for m in modules if not any(m == a or m.startswith(a + ".") for a in allowed)}


@pytest.mark.parametrize("path", sources("releasegate_sdk"), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_sdk_imports_only_the_runtime_and_the_contracts(path):
    assert outside(first_party(path), ("releasegate_sdk", "releasegate_runtime", "contracts")) == set()


def _is_test(path: Path) -> bool:
    return "tests" in path.relative_to(ROOT).parts or path.name == "conftest.py"


@pytest.mark.parametrize("path", sources("verifiers"), ids=lambda p: str(p.relative_to(ROOT)))
def test_a_team_verifier_uses_the_sdk_not_the_platforms_services(path):
    # a verifier may use its team's own reference data (the shop team's tax table); its tests may also use the
    # shop's test helpers to run a real shop
    allowed = ("releasegate_sdk", "releasegate_runtime", "contracts", "verifiers", "shop.tax_reference")
    if _is_test(path):
        allowed += ("shop", "tests.support")
    assert outside(first_party(path), allowed) == set()


@pytest.mark.parametrize(
    ("folder", "own"),
    [
        ("releasegate_cli", None),
        ("services/gatekeeper", "services.gatekeeper"),
        ("services/verifier", "services.verifier"),
    ],
)
def test_the_cli_and_these_services_import_no_other_service(folder, own):
    for path in sources(folder):
        services = {m for m in first_party(path) if m.split(".")[0] == "services" and m != "services"}
        assert outside(services, (own,) if own else ()) == set(), path.relative_to(ROOT)


def test_the_gatekeepers_model_imports_none_of_its_adapters_or_handlers():
    gatekeeper = {m for m in first_party(ROOT / "services/gatekeeper/domain.py") if m.startswith("services.")}
    assert gatekeeper == set()
    assert any(m.startswith("services.gatekeeper.domain.") for m in first_party(ROOT / "services/gatekeeper/policy.py"))


def test_the_checker_sees_what_it_checks(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import services.verifier.domain\nfrom contracts import topics\nfrom . import sibling\n")
    assert first_party(sample) == {"services.verifier.domain", "contracts.topics"}
    assert outside(first_party(sample), ("releasegate_sdk", "contracts")) == {"services.verifier.domain"}
