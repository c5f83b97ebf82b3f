"""The import rules of the layout (README, "Architecture"), read from the source with `ast`: no stack, no imports
of the code under test. Every `import` counts, at module level or inside a function, under TYPE_CHECKING or not.

- no service imports another service (`services.X` never imports `services.Y`);
- the SDK imports only the runtime and the contracts; the runtime only the contracts; the platform only the runtime
  and the contracts; the contracts no first-party package; the CLI no service;
- team verifiers import only the SDK, the runtime and the contracts (their tests may also use the sample shop and
  the shared test helpers);
- no test module imports another test module: tests import only conftest files and `tests/support/`.
"""

from __future__ import annotations

import ast
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIRST_PARTY = (
    "contracts",
    "releasegate_runtime",
    "releasegate_platform",
    "releasegate_sdk",
    "releasegate_cli",
    "services",
    "shop",
    "verifiers",
    "bench",
    "tests",
)
SKIP_DIRS = {"__pycache__", ".run", ".cache", "bundle_src"}  # shop bundles are standalone programs, not packages


@dataclass(frozen=True)
class Import:
    source: str  # the importing module, dotted
    path: Path
    line: int
    target: str  # the imported module, dotted and absolute

    def __str__(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}: {self.source} imports {self.target}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_module(dotted: str) -> bool:
    base = REPO.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def python_files(package: str) -> Iterator[Path]:
    root = REPO / package
    for path in sorted(root.rglob("*.py")):
        if not SKIP_DIRS.intersection(path.relative_to(REPO).parts):
            yield path


def imports_of(path: Path) -> Iterator[Import]:
    source = module_name(path)
    package = source if path.name == "__init__.py" else source.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(source, path, node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                # `from pkg import mod` imports the module pkg.mod when there is one, else a name of pkg
                submodule = f"{base}.{alias.name}"
                yield Import(source, path, node.lineno, submodule if is_module(submodule) else base)


def first_party(target: str) -> str | None:
    top = target.split(".")[0]
    return top if top in FIRST_PARTY else None


def within(target: str, package: str) -> bool:
    return target == package or target.startswith(package + ".")


def violations(packages: list[str], allowed: Callable[[Import], bool]) -> list[str]:
    found = {
        str(i)
        for package in packages
        for path in python_files(package)
        for i in imports_of(path)
        if first_party(i.target) and not allowed(i)
    }
    return sorted(found)


def only(*packages: str) -> Callable[[Import], bool]:
    """First-party imports limited to `packages` and the importing package itself."""

    def allowed(i: Import) -> bool:
        own = i.source.split(".")[0]
        return any(within(i.target, p) for p in (own, *packages))

    return allowed


def service_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "services" and len(parts) > 1 else None


def is_test_code(i: Import) -> bool:
    return i.source.split(".")[0] == "tests" or ".tests." in f".{i.source}." or i.path.name == "conftest.py"


def may_be_imported_by_tests(target: str) -> bool:
    """What tests may import from tests/: a conftest module or a module of tests/support/."""
    return within(target, "tests.support") or target.split(".")[-1] == "conftest"


def assert_none(found: list[str], rule: str) -> None:
    assert not found, f"{rule}; {len(found)} import(s) break it:\n  " + "\n  ".join(found)


def test_the_reader_finds_imports_of_every_form(tmp_path: Path) -> None:
    """The checks below can only fail if the reader sees imports: absolute, from-imports of modules and of names,
    relative ones, and imports inside functions."""
    imports = {i.target for i in imports_of(REPO / "tests" / "test_architecture.py")}
    assert {"ast", "pytest", "collections.abc", "dataclasses", "pathlib"} <= imports
    relative = [i.target for i in imports_of(REPO / "verifiers" / "erp_export" / "tests" / "test_check.py")]
    assert any(within(t, "verifiers.erp_export") for t in relative), relative
    assert is_module("releasegate_runtime.settings") and not is_module("releasegate_runtime.no_such_module")
    assert first_party("services.coordinator.app") == "services" and first_party("asyncpg") is None


def test_no_service_imports_another_service() -> None:
    def allowed(i: Import) -> bool:
        return service_of(i.target) in (None, service_of(i.source))

    assert_none(violations(["services"], allowed), "no service imports another service")


def test_the_sdk_imports_only_the_runtime_and_the_contracts() -> None:
    found = violations(["releasegate_sdk"], only("releasegate_runtime", "contracts"))
    assert_none(found, "releasegate_sdk imports only releasegate_runtime and contracts")


def test_the_runtime_imports_only_the_contracts() -> None:
    assert_none(violations(["releasegate_runtime"], only("contracts")), "releasegate_runtime imports only contracts")


def test_the_platform_imports_only_the_runtime_and_the_contracts() -> None:
    found = violations(["releasegate_platform"], only("releasegate_runtime", "contracts"))
    assert_none(found, "releasegate_platform imports only releasegate_runtime and contracts")


def test_the_contracts_import_no_first_party_package() -> None:
    assert_none(violations(["contracts"], only()), "contracts imports no other first-party package")


def test_the_cli_imports_no_service() -> None:
    found = violations(["releasegate_cli"], lambda i: not within(i.target, "services"))
    assert_none(found, "releasegate_cli imports no service")


def test_team_verifiers_import_only_the_sdk_the_runtime_and_the_contracts() -> None:
    public = only("releasegate_sdk", "releasegate_runtime", "contracts")

    def allowed(i: Import) -> bool:
        if public(i):
            return True
        # a verifier's tests may run the sample shop and use the shared test helpers and fixtures
        return is_test_code(i) and (within(i.target, "shop") or may_be_imported_by_tests(i.target))

    assert_none(
        violations(["verifiers"], allowed),
        "team verifiers import only releasegate_sdk, releasegate_runtime and contracts (their tests also shop and "
        "tests/support)",
    )


def test_no_test_module_imports_another_test_module() -> None:
    def allowed(i: Import) -> bool:
        return not is_test_code(i) or not within(i.target, "tests") or may_be_imported_by_tests(i.target)

    assert_none(
        violations(["tests", "verifiers"], allowed),
        "tests import from tests/ only conftest files and tests/support/ (shared fixtures in conftest, helpers in "
        "tests/support)",
    )


@pytest.mark.parametrize("package", ["releasegate_runtime", "releasegate_platform", "releasegate_sdk", "contracts"])
def test_a_library_package_imports_no_test_code(package: str) -> None:
    found = violations([package], lambda i: not within(i.target, "tests"))
    assert_none(found, f"{package} imports nothing from tests/")


COMPONENTS = REPO / "deploy" / "components"


@pytest.mark.parametrize(
    "component", sorted(p.stem for p in COMPONENTS.glob("*.sh") if p.stem != "common"), ids=lambda c: c
)
def test_each_stack_component_defines_its_lifecycle(component: str) -> None:
    """deploy/stack.sh dispatches to <component>_{packages,install,up,down,status}: each component file defines
    all five once sourced (after common.sh)."""
    script = f'source "{COMPONENTS}/common.sh"; source "{COMPONENTS}/{component}.sh"; declare -F'
    shell = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30, cwd=REPO)
    assert shell.returncode == 0, shell.stderr
    defined = {line.split()[-1] for line in shell.stdout.splitlines()}
    missing = {f"{component}_{step}" for step in ("packages", "install", "up", "down", "status")} - defined
    assert not missing, f"deploy/components/{component}.sh does not define {sorted(missing)}"


def test_the_stack_script_dispatches_to_every_component() -> None:
    text = (REPO / "deploy" / "stack.sh").read_text()
    listed = set(text.split("COMPONENTS=(", 1)[1].split(")", 1)[0].split()) | {"python"}
    files = {p.stem for p in COMPONENTS.glob("*.sh")} - {"common"}
    assert listed == files, f"deploy/stack.sh lists {sorted(listed)}, deploy/components/ has {sorted(files)}"
