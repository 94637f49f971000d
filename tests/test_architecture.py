"""The rooms of server/tollbooth/ and what each may import, checked from the source.

The package graph is read with `ast` from every module, imports inside functions included; a
top-level module (config.py, paging.py, app.py...) counts as a package of its own.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "server" / "tollbooth"
ROOT = "tollbooth"
MAX_LINES = 600

# Shared plumbing: imports no domain.
PLUMBING = {
    "rpc",
    "db",
    "auth",
    "paging",
    "errors",
    "config",
    "ids",
    "idempotency",
    "amounts",
    "metadata",
    "gateway",
    "deps",
    # The command line's plumbing: running a click command, and `run`'s process supervisor.
    "commandline",
    "supervisor",
}
# The one module that imports every domain, and the command line, which reaches them through it.
ASSEMBLY = "app"
CLI = "cli"
# Rooms that import plumbing only.
PLUMBING_ONLY = {"sandbox", "webhooks", "notifications"}

# Modules known to pass MAX_LINES, each with the change that removes it.
KNOWN_LONG: set[str] = set()


def modules() -> Iterator[Path]:
    for path in sorted(PACKAGE.rglob("*.py")):
        if "migrations" in path.relative_to(PACKAGE).parts:
            continue
        yield path


def package_of(path: Path) -> str:
    """`catalog` for catalog/service.py, `config` for config.py, "" for __init__.py."""
    parts = path.relative_to(PACKAGE).parts
    if len(parts) == 1:
        return "" if parts[0] == "__init__.py" else parts[0].removesuffix(".py")
    return parts[0]


def module_name(path: Path) -> list[str]:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return [ROOT, *parts]


def imported_modules(path: Path) -> set[str]:
    """Every `tollbooth.*` module or name `path` imports, anywhere in it (dotted)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = module_name(path)
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here if is_package else here[:-1]
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                prefix = ".".join([*base, *([node.module] if node.module else [])])
            else:
                prefix = node.module or ""
            for alias in node.names:
                found.add(f"{prefix}.{alias.name}")
    return {name for name in found if name.split(".")[0] == ROOT}


def imported_packages(path: Path) -> set[str]:
    packages = set()
    for name in imported_modules(path):
        parts = name.split(".")
        if len(parts) > 1:
            packages.add(parts[1])
    packages.discard(package_of(path))
    packages.discard("")
    return packages


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in modules():
        pkg = package_of(path)
        if pkg:
            edges.setdefault(pkg, set()).update(imported_packages(path))
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one package (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def describe(edges: dict[str, set[str]]) -> str:
    return "\n".join(f"  {p} -> {', '.join(sorted(d)) or '-'}" for p, d in sorted(edges.items()))


def domains(edges: dict[str, set[str]]) -> set[str]:
    return set(edges) - PLUMBING - {ASSEMBLY, CLI}


def test_no_two_packages_form_an_import_cycle() -> None:
    edges = graph()
    assert cycles(edges) == [], f"import cycles between packages:\n{describe(edges)}"


def test_plumbing_imports_no_domain() -> None:
    edges = graph()
    wrong = {p: sorted(edges[p] - PLUMBING) for p in PLUMBING & set(edges) if edges[p] - PLUMBING}
    assert wrong == {}, f"plumbing importing domains (or the assembly): {wrong}"


def test_sandbox_webhooks_and_notifications_import_plumbing_only() -> None:
    edges = graph()
    wrong = {
        p: sorted(edges[p] - PLUMBING) for p in PLUMBING_ONLY & set(edges) if edges[p] - PLUMBING
    }
    assert wrong == {}, f"rooms that may import plumbing only import more: {wrong}"


def test_only_the_assembly_imports_the_assembly_and_every_domain() -> None:
    edges = graph()
    importers = sorted(p for p, deps in edges.items() if ASSEMBLY in deps and p != CLI)
    assert importers == [], f"only the command line may import {ASSEMBLY}: {importers}"
    # The command line reaches the domains through the assembly only.
    assert edges.get(CLI, set()) - PLUMBING - {ASSEMBLY} == set(), describe(edges)


def test_only_the_assembly_imports_servicers_of_several_domains() -> None:
    edges = graph()
    rooms = domains(edges)
    wrong = {}
    for path in modules():
        if package_of(path) == ASSEMBLY:
            continue
        servicer_rooms = {
            name.split(".")[1]
            for name in imported_modules(path)
            if len(name.split(".")) > 2 and name.split(".")[2] == "servicer"
        } & rooms
        if len(servicer_rooms) > 1 or (package_of(path) == CLI and servicer_rooms):
            wrong[str(path.relative_to(PACKAGE))] = sorted(servicer_rooms)
    assert wrong == {}, f"modules importing servicers of several domains: {wrong}"


def test_services_of_these_rooms_take_domain_values() -> None:
    """Only servicers and convert modules (and the sidecar, a gRPC client) touch protobuf."""
    rooms = {
        "checkout",
        "subscriptions",
        "provider",
        "webhooks",
        "notifications",
        "catalog",
        "usage",
    }
    allowed = {"servicer.py", "convert.py", "sidecar.py"}
    wrong = []
    for path in modules():
        if package_of(path) in rooms and path.name not in allowed:
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                    if isinstance(node, ast.ImportFrom)
                    else []
                )
                if any(n.startswith("billing.") or n.endswith("_pb2") for n in names):
                    wrong.append(str(path.relative_to(PACKAGE)))
    assert wrong == [], f"domain code importing generated protobuf modules: {sorted(set(wrong))}"


def test_no_module_passes_600_lines() -> None:
    long: dict[str, int] = {}
    for path in modules():
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_LINES:
            long[str(path.relative_to(PACKAGE))] = n
    unexpected = {k: v for k, v in long.items() if k not in KNOWN_LONG}
    assert unexpected == {}, f"modules over {MAX_LINES} lines: {unexpected}"


def test_the_checks_see_the_rooms() -> None:
    """Guard against a check that passes because it read nothing."""
    edges = graph()
    assert {"catalog", "checkout", "subscriptions", "provider", "credit", "webhooks"} <= set(edges)
    assert {"catalog", "checkout", "credit", "usage", "webhooks"} <= edges[ASSEMBLY]
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
