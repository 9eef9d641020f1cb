"""Who may import what, read from the source: the services speak to a transport through
:mod:`exactsum.transport` only (``get(name)`` and the interface in ``base``), never to one of its
packages, so that adding a transport needs no change to them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ["producer_service", "consumer_service"]


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, as written (``from a import b`` gives ``a`` and ``a.b``, for
    ``b`` may be a module); relative imports are left out (none of the services uses them)."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules.add(node.module)
            modules |= {f"{node.module}.{alias.name}" for alias in node.names}
    return modules


def transport_packages() -> list[str]:
    base = ROOT / "exactsum" / "transport"
    return sorted(p.name for p in base.iterdir() if (p / "__init__.py").is_file())


def test_the_reader_sees_imports_of_every_form(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("import a.b\nfrom c import d\nfrom .e import f\n"
                      "def g() -> None:\n    from h.i import j\n")
    assert imported_modules(source) == {"a.b", "c", "c.d", "h.i", "h.i.j"}


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_imports_no_transport_package(service: str) -> None:
    # A transport's package, or the library it wraps (RQ), seen from a service.
    packages = [f"exactsum.transport.{name}" for name in transport_packages()] + ["rq"]
    assert len(packages) > 2
    files = sorted((ROOT / service).rglob("*.py"))
    assert files
    offending = {
        f"{path.relative_to(ROOT)}: {module}"
        for path in files for module in imported_modules(path)
        if any(module == p or module.startswith(p + ".") for p in packages)
    }
    assert not offending, sorted(offending)
