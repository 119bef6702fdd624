#!/usr/bin/env python3
"""Check that Gantry's imports follow its layers (docs/ARCHITECTURE.md).

Bottom to top, each layer may import only its own and the ones below:

    base          portal.core     audit trail, roles, tokens, encryption
    cloud         portal.cloud    boto3, Kubernetes, Terraform, masking
    environments  environments    the catalog and the observers of environments
    deployments   deployments     releases, approvals, the engine, the runners
    shell         portal.*        urls, routing, dashboard, pages composing apps

Three rules, read from the code with `ast` (nothing is imported):

1. No import points up a layer (imports under TYPE_CHECKING included: a
   type from above is a dependency on it too).
2. No cycle between modules, within a layer or across.
3. No import of a project module inside a function (the usual way to dodge
   a cycle), except in an AppConfig's ready(), where Django wants signal
   receivers connected.

Run by `make lint`; exits 1 and names every violation.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("portal", "environments", "deployments")
# (layer, module prefix), bottom first; a module belongs to the longest prefix it has.
LAYERS = (
    ("base", "portal.core"),
    ("cloud", "portal.cloud"),
    ("environments", "environments"),
    ("deployments", "deployments"),
    ("shell", "portal"),
)
RANK = {name: rank for rank, (name, _) in enumerate(LAYERS)}


@dataclass
class Import:
    target: str
    line: int
    late: bool  # inside a function
    in_ready: bool  # inside an AppConfig.ready()


@dataclass
class Module:
    name: str
    path: Path
    imports: list[Import] = field(default_factory=list)


def layer_of(module: str) -> str | None:
    best = None
    for name, prefix in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            if best is None or len(prefix) > len(best[1]):
                best = (name, prefix)
    return best[0] if best else None


def find_modules(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, Module]:
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = Module(".".join(parts), path)
    return modules


def _resolve(name: str, modules: dict[str, Module]) -> str | None:
    """The project module `name` refers to (a module, or a name inside one)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _targets(node: ast.Import | ast.ImportFrom, module: Module) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module.name.split(".")
        if module.path.name != "__init__.py":
            package = package[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, base] if base else package)
    # `from a import b` may name module a.b, or a name inside a.
    return [f"{base}.{alias.name}" for alias in node.names]


def read_imports(module: Module, modules: dict[str, Module]) -> None:
    tree = ast.parse(module.path.read_text(), str(module.path))

    def visit(node: ast.AST, late: bool, in_ready: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                for name in _targets(child, module):
                    target = _resolve(name, modules)
                    if target is not None and target != module.name:
                        module.imports.append(Import(target, child.lineno, late, in_ready))
            is_function = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            ready = is_function and child.name == "ready" and module.path.name == "apps.py"
            visit(child, late or is_function, in_ready or ready)

    visit(tree, False, False)


def _cycles(modules: dict[str, Module]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    graph = {
        name: sorted({i.target for i in module.imports if not i.in_ready})
        for name, module in modules.items()
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
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
    return found


def check(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> list[str]:
    """Every violation, as a line naming the file, the import and the rule."""
    modules = find_modules(root, packages)
    for module in modules.values():
        read_imports(module, modules)
    problems = []
    for module in modules.values():
        source_layer = layer_of(module.name)
        where = module.path.relative_to(root)
        for imported in module.imports:
            target_layer = layer_of(imported.target)
            if source_layer and target_layer and RANK[target_layer] > RANK[source_layer]:
                problems.append(
                    f"{where}:{imported.line}: {module.name} ({source_layer}) imports "
                    f"{imported.target} ({target_layer}), a layer above it"
                )
            if imported.late and not imported.in_ready:
                problems.append(
                    f"{where}:{imported.line}: {module.name} imports {imported.target} inside "
                    "a function; import it at the top (a cycle means code in the wrong layer)"
                )
    for component in _cycles(modules):
        problems.append("import cycle: " + " -> ".join([*component, component[0]]))
    return problems


def main() -> int:
    problems = check()
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} import(s) against the layers (scripts/check_layers.py)")
        return 1
    print("imports follow the layers: base <- cloud <- environments <- deployments <- shell")
    return 0


if __name__ == "__main__":
    sys.exit(main())
