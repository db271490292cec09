"""The package's module graph: no import cycle (lazy imports inside functions count too: they only
hide a cycle until someone moves the import), and no private name imported from another module."""
import ast
from pathlib import Path

import duch_desktop

PACKAGE = Path(duch_desktop.__file__).parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, list[str]]]:
    """``[(imported module, names taken from it)]`` of every import statement in the module, at any depth."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for a in node.names:  # `from pkg import module` imports the submodule
                sub = f"{base}.{a.name}"
                found.append((sub, []) if sub in modules else (base, [a.name]))
    return [(m, names) for m, names in found if m in modules]


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: {t for t, _ in _imports(m, p, modules) if t != m} for m, p in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_the_package():
    # Package __init__ modules are left out: importing a submodule runs them, but they import
    # nothing of their own package's submodules here, so they cannot close a cycle.
    graph = _graph()
    assert _cycles(graph) == []


def test_no_private_name_imported_from_another_module():
    modules = _modules()
    bad = [f"{m} imports {t}.{n}" for m, p in modules.items() for t, names in _imports(m, p, modules)
           for n in names if n.startswith("_") and not n.startswith("__") and t != m]
    assert bad == []


def test_every_sql_statement_is_in_the_database_class():
    # archive/database.py's Database owns the SQL; the rest of the package calls its methods.
    owner = PACKAGE / "core" / "archive" / "database.py"
    calls = [f"{path.relative_to(PACKAGE)}:{node.lineno}" for path in PACKAGE.rglob("*.py") if path != owner
             for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
             if isinstance(node, ast.Attribute) and node.attr in ("execute", "executemany", "executescript")]
    assert calls == []
