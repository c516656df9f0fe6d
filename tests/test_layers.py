"""The package's layers: no import cycles, and nothing but the entry point imports the CLI."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for f in (SRC / "safeview").rglob("*.py"):
        mod = ".".join(f.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        pkg = mod if f.name == "__init__.py" else mod.rsplit(".", 1)[0]
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1] if node.level else []
                name = ".".join(base + ([node.module] if node.module else [])) if node.level else (node.module or "")
                deps.add(name)
                deps.update(f"{name}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
        graph[mod] = deps
    known = set(graph)

    def resolve(name: str) -> str | None:
        while name and name not in known:
            name = name.rsplit(".", 1)[0] if "." in name else ""
        return name or None

    return {m: {r for d in ds if d.startswith("safeview") and (r := resolve(d)) and r != m} for m, ds in graph.items()}


def test_no_import_cycles():
    graph = _imports()
    state: dict[str, int] = {}
    cycles = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1 and d != "safeview":  # the package root only re-exports
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, cycles


def test_nothing_imports_the_cli():
    users = [m for m, deps in _imports().items() if "safeview.cli" in deps and m != "safeview.__main__"]
    assert users == []
